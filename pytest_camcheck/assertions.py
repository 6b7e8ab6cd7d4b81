"""Attention assertions: compute the map, measure it against a region, decide, and explain a failure.

The default rule of :func:`assert_attends_to` (see README, "Decision rule", for the data behind it):
the map is not empty, its peak lies in the region or within ``tolerance`` px of it (pointing game), and the
region holds at least ``min_lift`` times its fair share of the map's mass (energy / area share). A region
covering a share ``c`` of the image can reach a lift of at most ``1 / c``, so for large regions the lift
required is capped at halfway between chance and perfect, ``(1 + 1 / c) / 2``. Both criteria are about where
the map's mass and peak are, not about one model's score scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import context
from .engine import CamResult, compute_cam
from .errors import CamCheckError
from .metrics import RegionMetrics, measure
from .regions import Region, describe, to_mask
from .render import overlay, save_png

__all__ = ["DEFAULT_RULE", "CamCheck", "Rule", "required_lift", "assert_attends_more_to", "assert_attends_to", "assert_not_attends_to"]


@dataclass(frozen=True)
class Rule:
    """Thresholds of the attention checks.

    ``min_lift``: region's share of the map's mass / region's share of the image, for ``assert_attends_to``
    (capped for large regions, see :func:`required_lift`).
    ``tolerance``: pointing-game distance in px. ``max_lift``: most a region may hold for
    ``assert_not_attends_to``. ``min_ratio``: how many times denser the map must be on the region than on the
    other region for ``assert_attends_more_to``.

    Example:
        >>> Rule(min_lift=2.0).min_lift
        2.0
    """

    min_lift: float = 1.5
    tolerance: float = 15.0
    max_lift: float = 1.0
    min_ratio: float = 1.5


DEFAULT_RULE = Rule()


def required_lift(min_lift: float, chance: float) -> float:
    """The lift a region of area share ``chance`` must reach: ``min_lift``, capped at halfway between chance
    (1) and perfect (``1 / chance``) so that large regions are not asked for the impossible.

    Example:
        >>> required_lift(1.5, 0.05), required_lift(1.5, 0.6)
        (1.5, 1.3333333333333335)
    """
    return min(min_lift, (1.0 + 1.0 / chance) / 2.0) if chance > 0 else min_lift


def _check_threshold(name: str, value: float, low: float = 0.0) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < low:
        raise CamCheckError(f"{name}={value!r} is not a valid threshold; pass a finite number >= {low}")
    return float(value)


def _single(result: CamResult | list[CamResult]) -> CamResult:
    if isinstance(result, list):
        raise CamCheckError(
            "attention assertions check one image and one target at a time; call them once per image/target "
            "(compute_cam accepts batches when you only need the maps)"
        )
    return result


def _picture(result: CamResult, image: Any) -> Image.Image:
    if result.image is not None:
        return result.image
    t = image.detach().float().cpu()
    t = t[:3] if t.shape[0] >= 3 else t[:1].expand(3, -1, -1)
    t = (t - t.min()) / (t.max() - t.min() + 1e-12)
    return Image.fromarray((t.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def _target_text(r: CamResult) -> str:
    label = f" {r.label!r}" if r.label else ""
    prob = f", p={r.probability:.3f}" if r.probability is not None else ""
    what = "callable target" if r.target < 0 else f"class {r.target}{label}"
    return f"{what} (score {r.score:.4g}{prob})"


def _top_text(r: CamResult) -> str:
    if not r.top:
        return "n/a"
    return " | ".join(f"{i} {label or ''} {p:.3f}".replace("  ", " ") for i, label, p in r.top)


def _peak_text(m: RegionMetrics, tolerance: float) -> str:
    if m.peak is None:
        return "no peak (the map is empty)"
    where = "inside the region" if m.peak_distance == 0 else f"{m.peak_distance:.1f} px from the region"
    return f"peak at (x={m.peak[0]}, y={m.peak[1]}), {where} (tolerance {tolerance:g} px)"


def _metrics_line(name: str, m: RegionMetrics) -> str:
    return (f"{name}: energy {m.energy:.3f}, chance {m.chance:.3f}, lift {m.lift:.2f}, "
            f"rank accuracy {m.rank_accuracy:.3f}")


def _explain(check: str, r: CamResult, region_texts: list[str], lines: list[str], overlay: Any) -> str:
    h, w = r.image_size
    out = [
        f"camcheck {check} failed",
        f"  method {r.method}, layer {r.layer}, {_target_text(r)}",
        f"  image {w}x{h} px; " + "; ".join(region_texts),
        *[f"  {line}" for line in lines],
        f"  top-5: {_top_text(r)}",
        f"  overlay: {overlay}",
    ]
    return "\n".join(out)


def _save_overlay(check: str, r: CamResult, image: Any, masks: Sequence[np.ndarray], peak: Any
                  ) -> tuple[Path | None, str]:
    """Write the failure picture; a folder that cannot be written is reported, not raised."""
    try:
        picture = overlay(_picture(r, image), r.heatmap, region=masks[0],
                          other_region=masks[1] if len(masks) > 1 else None, peak=peak)
        path = save_png(picture, context.artifact_path(check))
    except OSError as err:
        return None, f"not written ({err})"
    return path, str(path)


def _run(check: str, model: torch.nn.Module, image: Any, target: Any, regions: Sequence[Region],
         decide: Callable[[CamResult, list[RegionMetrics]], tuple[bool, list[str], dict[str, Any]]],
         tolerance: float, cam_kwargs: dict[str, Any]) -> CamResult:
    result = _single(compute_cam(model, image, target, **cam_kwargs))
    masks = [to_mask(region, result.image_size) for region in regions]
    metrics = [measure(result.heatmap, mask, tolerance) for mask in masks]
    passed, lines, thresholds = decide(result, metrics)
    if result.empty:
        passed = False
        lines = ["the map is EMPTY: the target has no positive evidence at this layer (all-zero or constant map), "
                 "so it cannot attend to anything"] + lines
    picture, picture_text = (None, "") if passed else _save_overlay(check, result, image, masks, metrics[0].peak)
    names = ["region", "other region"]
    region_texts = [f"{names[i]}: {describe(reg)}" for i, reg in enumerate(regions)]
    message = "" if passed else _explain(check, result, region_texts, lines, picture_text)
    flat = {f"{names[i].replace(' ', '_')}.{k}": v for i, m in enumerate(metrics) for k, v in m.as_dict().items()}
    context.record(context.CheckRecord(
        check=check, passed=passed, method=result.method, layer=result.layer, target=result.target,
        label=result.label, probability=result.probability, metrics=flat, thresholds=thresholds,
        overlay=picture, message=message,
    ))
    if not passed:
        raise AssertionError(message)
    return result


def assert_attends_to(
    model: torch.nn.Module,
    image: Any,
    target: Any,
    region: Region,
    *,
    min_lift: float = DEFAULT_RULE.min_lift,
    tolerance: float = DEFAULT_RULE.tolerance,
    pointing: bool = True,
    min_energy: float | None = None,
    **cam_kwargs: Any,
) -> CamResult:
    """Assert that the map of ``target`` looks at ``region``; return the :class:`CamResult` when it does.

    Holds when the map is not empty, its peak is in the region or within ``tolerance`` px (unless
    ``pointing=False``), the region's lift (energy share / area share) is at least ``min_lift``, and, when
    given, its energy share is at least ``min_energy``. Other keywords go to :func:`compute_cam`.

    Example:
        >>> result = assert_attends_to(model, "dog.jpg", "golden retriever", (40, 30, 200, 210))  # doctest: +SKIP
    """
    __tracebackhide__ = True
    min_lift = _check_threshold("min_lift", min_lift)
    tolerance = _check_threshold("tolerance", tolerance)
    if min_energy is not None:
        min_energy = _check_threshold("min_energy", min_energy)

    def decide(r: CamResult, ms: list[RegionMetrics]) -> tuple[bool, list[str], dict[str, Any]]:
        m = ms[0]
        need = required_lift(min_lift, m.chance)
        ok_peak = m.hit or not pointing
        ok_lift = m.lift >= need
        ok_energy = min_energy is None or m.energy >= min_energy
        lines = [
            f"pointing game: {'HIT' if m.hit else 'MISS'}; {_peak_text(m, tolerance)}"
            + ("" if pointing else " [not required]"),
            f"lift {m.lift:.2f} (energy {m.energy:.3f} / chance {m.chance:.3f}), required >= {need:.3g}"
            + ("" if need == min_lift else f" (min_lift {min_lift:g}, capped for a region this large)")
            + ("" if ok_lift else "  <-- too low"),
        ]
        if min_energy is not None:
            lines.append(f"energy {m.energy:.3f}, required >= {min_energy:g}" + ("" if ok_energy else "  <-- too low"))
        lines.append(f"rank accuracy {m.rank_accuracy:.3f}")
        thresholds = {"min_lift": min_lift, "tolerance": tolerance, "pointing": pointing, "min_energy": min_energy}
        return ok_peak and ok_lift and ok_energy, lines, thresholds

    return _run("attends_to", model, image, target, [region], decide, tolerance, cam_kwargs)


def assert_not_attends_to(
    model: torch.nn.Module,
    image: Any,
    target: Any,
    region: Region,
    *,
    max_lift: float = DEFAULT_RULE.max_lift,
    tolerance: float = 0.0,
    **cam_kwargs: Any,
) -> CamResult:
    """Assert that the map of ``target`` stays off ``region`` (a watermark, a caption, the background).

    Holds when the map's peak is outside the region (farther than ``tolerance`` px) and the region holds at
    most ``max_lift`` times its fair share of the map's mass. An empty map fails: it proves nothing.

    Example:
        >>> assert_not_attends_to(model, image, "cat", Box.relative(0.85, 0.85, 1, 1))  # doctest: +SKIP
    """
    __tracebackhide__ = True
    max_lift = _check_threshold("max_lift", max_lift)
    tolerance = _check_threshold("tolerance", tolerance)

    def decide(r: CamResult, ms: list[RegionMetrics]) -> tuple[bool, list[str], dict[str, Any]]:
        m = ms[0]
        ok_lift = m.lift <= max_lift
        lines = [
            f"peak: {'IN' if m.hit else 'outside'} the region; {_peak_text(m, tolerance)}"
            + ("  <-- must be outside" if m.hit else ""),
            f"lift {m.lift:.2f} (energy {m.energy:.3f} / chance {m.chance:.3f}), allowed <= {max_lift:g}"
            + ("" if ok_lift else "  <-- too high"),
        ]
        return (not m.hit) and ok_lift, lines, {"max_lift": max_lift, "tolerance": tolerance}

    return _run("not_attends_to", model, image, target, [region], decide, tolerance, cam_kwargs)


def assert_attends_more_to(
    model: torch.nn.Module,
    image: Any,
    target: Any,
    region: Region,
    other_region: Region,
    *,
    min_ratio: float = DEFAULT_RULE.min_ratio,
    **cam_kwargs: Any,
) -> CamResult:
    """Assert that the map of ``target`` prefers ``region`` to ``other_region`` (seed 002: the dog's class on
    the dog, not on the cat of the same photo).

    Holds when the map is not empty, its peak is nearer to ``region`` than to ``other_region``, and its mass
    per pixel (lift) on ``region`` is at least ``min_ratio`` times that on ``other_region``.

    Example:
        >>> assert_attends_more_to(model, photo, "tiger cat", cat_box, dog_box)  # doctest: +SKIP
    """
    __tracebackhide__ = True
    min_ratio = _check_threshold("min_ratio", min_ratio)

    def decide(r: CamResult, ms: list[RegionMetrics]) -> tuple[bool, list[str], dict[str, Any]]:
        a, b = ms
        ratio = a.lift / b.lift if b.lift > 0 else math.inf
        ok_peak = a.peak_distance < b.peak_distance
        ok_ratio = ratio >= min_ratio
        lines = [
            _metrics_line("region", a),
            _metrics_line("other region", b),
            f"density ratio (lift region / lift other) {ratio:.2f}, required >= {min_ratio:g}"
            + ("" if ok_ratio else "  <-- too low"),
            f"peak: {a.peak_distance:.1f} px from the region, {b.peak_distance:.1f} px from the other region"
            + ("" if ok_peak else "  <-- must be nearer the region"),
        ]
        return ok_peak and ok_ratio, lines, {"min_ratio": min_ratio}

    return _run("attends_more_to", model, image, target, [region, other_region], decide, 0.0, cam_kwargs)


class CamCheck:
    """The assertions bound to a device, a default method and default thresholds (the ``camcheck`` fixture).

    Keywords given to a call win over the bound defaults. With a device bound, a model that is not on it is an
    error, so a suite run with ``--camcheck-device=cuda`` really explains on the GPU.

    Example:
        >>> check = CamCheck(device="cpu", method="gradcam", rule=Rule(min_lift=2.0))
        >>> check.rule.min_lift
        2.0
    """

    def __init__(self, *, device: str | torch.device | None = None, method: str = "gradcam",
                 rule: Rule = DEFAULT_RULE) -> None:
        self.device, self.method, self.rule = device, method, rule

    def _kw(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"device": self.device, "method": self.method} | kwargs

    def compute(self, model: torch.nn.Module, image: Any, target: Any = None, **kwargs: Any
                ) -> CamResult | list[CamResult]:
        """:func:`compute_cam` with the bound defaults."""
        return compute_cam(model, image, target, **self._kw(kwargs))

    def attends_to(self, model: torch.nn.Module, image: Any, target: Any, region: Region, **kwargs: Any) -> CamResult:
        """:func:`assert_attends_to` with the bound defaults."""
        __tracebackhide__ = True
        kwargs = {"min_lift": self.rule.min_lift, "tolerance": self.rule.tolerance} | kwargs
        return assert_attends_to(model, image, target, region, **self._kw(kwargs))

    def not_attends_to(self, model: torch.nn.Module, image: Any, target: Any, region: Region,
                       **kwargs: Any) -> CamResult:
        """:func:`assert_not_attends_to` with the bound defaults."""
        __tracebackhide__ = True
        kwargs = {"max_lift": self.rule.max_lift} | kwargs
        return assert_not_attends_to(model, image, target, region, **self._kw(kwargs))

    def attends_more_to(self, model: torch.nn.Module, image: Any, target: Any, region: Region,
                        other_region: Region, **kwargs: Any) -> CamResult:
        """:func:`assert_attends_more_to` with the bound defaults."""
        __tracebackhide__ = True
        kwargs = {"min_ratio": self.rule.min_ratio} | kwargs
        return assert_attends_more_to(model, image, target, region, other_region, **self._kw(kwargs))
