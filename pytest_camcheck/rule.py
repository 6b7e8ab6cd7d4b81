"""The decision rule of the attention checks, as pure functions of a map's region metrics.

:class:`Rule` holds the thresholds; :meth:`Rule.attends`, :meth:`Rule.not_attends` and :meth:`Rule.attends_more`
take :class:`~pytest_camcheck.metrics.RegionMetrics` (measured with the rule's pointing tolerance) and return a
:class:`Verdict`: whether the check holds and which criterion failed. The assertions
(:mod:`pytest_camcheck.assertions`), the calibration script (``benchmarks/calibrate_rule.py``) and the tests all
decide through these functions; how a failure is explained is the assertions' business.

The default rule of :func:`~pytest_camcheck.assert_attends_to` (see README, "Decision rule", for the data behind
it): the map is not empty, its peak lies in the region or within ``tolerance`` px of it (pointing game), and the
region holds at least ``min_lift`` times its fair share of the map's mass (energy / area share). A region
covering a share ``c`` of the image can reach a lift of at most ``1 / c``, so for large regions the lift
required is capped at halfway between chance and perfect, ``(1 + 1 / c) / 2``. Both criteria are about where
the map's mass and peak are, not about one model's score scale.

Example:
    >>> from pytest_camcheck.metrics import RegionMetrics
    >>> on_box = RegionMetrics(energy=0.6, chance=0.1, lift=6.0, hit=True, peak=(5, 5), peak_distance=0.0,
    ...                        rank_accuracy=0.7, empty=False)
    >>> DEFAULT_RULE.attends(on_box).passed, DEFAULT_RULE.not_attends(on_box).failed
    (True, ('peak outside', 'lift'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._values import check_threshold

if TYPE_CHECKING:
    from .metrics import RegionMetrics

__all__ = ["DEFAULT_RULE", "Rule", "Verdict", "required_lift"]


def required_lift(min_lift: float, chance: float) -> float:
    """The lift a region of area share ``chance`` must reach: ``min_lift``, capped at halfway between chance
    (1) and perfect (``1 / chance``) so that large regions are not asked for the impossible.

    Example:
        >>> required_lift(1.5, 0.05), required_lift(1.5, 0.6)
        (1.5, 1.3333333333333335)
    """
    return min(min_lift, (1.0 + 1.0 / chance) / 2.0) if chance > 0 else min_lift


@dataclass(frozen=True)
class Verdict:
    """What the rule decided: ``passed``, and each criterion (in the order the explanation lists them) with
    whether it holds. ``required_lift`` (attends) is the lift asked of this region after the cap;
    ``ratio`` (attends_more) the density ratio of the region over the other region.

    Example:
        >>> Verdict(False, {"map not empty": True, "lift": False}).failed
        ('lift',)
    """

    passed: bool
    criteria: dict[str, bool] = field(default_factory=dict)
    required_lift: float | None = None
    ratio: float | None = None

    @property
    def failed(self) -> tuple[str, ...]:
        """The criteria that do not hold."""
        return tuple(name for name, ok in self.criteria.items() if not ok)


def _verdict(criteria: dict[str, bool], **extra: float) -> Verdict:
    return Verdict(all(criteria.values()), criteria, **extra)


@dataclass(frozen=True)
class Rule:
    """Thresholds of the attention checks, and the decisions made with them.

    ``min_lift``: region's share of the map's mass / region's share of the image, for ``assert_attends_to``
    (capped for large regions, see :func:`required_lift`).
    ``tolerance``: pointing-game distance in px. ``max_lift``: most a region may hold for
    ``assert_not_attends_to``. ``min_ratio``: how many times denser the map must be on the region than on the
    other region for ``assert_attends_more_to``. Every threshold is a finite number >= 0 (any real type).

    Example:
        >>> Rule(min_lift=2.0).min_lift
        2.0
    """

    min_lift: float = 1.5
    tolerance: float = 15.0
    max_lift: float = 1.0
    min_ratio: float = 1.5

    def __post_init__(self) -> None:
        for name in ("min_lift", "tolerance", "max_lift", "min_ratio"):
            object.__setattr__(self, name, check_threshold(name, getattr(self, name), low=0.0))

    def attends(self, m: RegionMetrics, *, pointing: bool = True, min_energy: float | None = None) -> Verdict:
        """The map attends to the region: not empty, peak within ``tolerance`` (unless ``pointing=False``), lift
        at least :func:`required_lift` of ``min_lift``, and energy at least ``min_energy`` when given.

        Example:
            >>> from pytest_camcheck.metrics import RegionMetrics
            >>> large = RegionMetrics(0.5, 0.6, 0.83, True, (1, 1), 0.0, 0.5, False)
            >>> Rule().attends(large).required_lift, Rule().attends(large).failed
            (1.3333333333333335, ('lift',))
        """
        need = required_lift(self.min_lift, m.chance)
        criteria = {"map not empty": not m.empty, "pointing": m.hit or not pointing, "lift": m.lift >= need}
        if min_energy is not None:
            criteria["energy"] = m.energy >= min_energy
        return _verdict(criteria, required_lift=need)

    def not_attends(self, m: RegionMetrics) -> Verdict:
        """The map stays off the region: not empty (an empty map proves nothing), peak outside it (farther than
        the tolerance it was measured with) and lift at most ``max_lift``."""
        return _verdict({"map not empty": not m.empty, "peak outside": not m.hit, "lift": m.lift <= self.max_lift})

    def attends_more(self, m: RegionMetrics, other: RegionMetrics) -> Verdict:
        """The map prefers the region to the other region: not empty, peak nearer the region, and lift on the
        region at least ``min_ratio`` times that on the other region."""
        ratio = m.lift / other.lift if other.lift > 0 else math.inf
        return _verdict({"map not empty": not m.empty, "peak nearer": m.peak_distance < other.peak_distance,
                         "ratio": ratio >= self.min_ratio}, ratio=ratio)


DEFAULT_RULE = Rule()
