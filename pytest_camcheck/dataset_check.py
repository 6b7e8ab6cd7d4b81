"""Attention checks over an annotated dataset: the pointing game's protocol as a CI assertion.

One check per (image, model class present): the map of the class is judged with the rule of
:func:`~pytest_camcheck.assert_attends_to` against the union of that class's objects in the image (a map that
points at any instance of the class hits, as in Zhang et al. 2016 and TorchRay). Labels that ``classes`` maps to
one model class are one class: their objects form one union and the check is named by the labels joined with
``+`` ("cat+kitten"); a label mapped alone keeps its name. Objects flagged ``difficult`` are part of the union
but a class whose objects are all difficult is not checked unless ``difficult=True``.

The region is judged on the part of the image the model saw (``CamResult.geometry.seen()``, see
:func:`~pytest_camcheck.metrics.measure`): a check whose objects the preprocessing cropped away entirely, or
whose objects cover all the model saw, is not counted and is listed in ``skipped`` under ``"image [label]"``.

Next to the rate, the same rule is applied to a centred Gaussian map (standard deviation a quarter of the
image's width and height) on every check: the centre baseline, which is strong on photographs where objects sit
in the middle (TorchRay: 69.6% on VOC07), so a rate means little without it.

The work streams: images are decoded in a background thread one batch ahead while the model runs, maps are
computed ``batch_size`` checks at a time and reduced to their metrics at once; only the five worst failures keep
their maps (for the overlays written at the end). Memory does not grow with the dataset beyond one small record
per check.
"""

from __future__ import annotations

import heapq
import math
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from . import context
from ._ahead import one_ahead
from ._values import check_threshold
from .datasets import Dataset, load_dataset
from .datasets.core import Entry
from .engine import CamResult, compute_cam
from .engine.targets import index_of_name
from .errors import CamCheckError, MixedSizesError, RegionError, TargetError, UnseenRegionError
from .geometry import cropped_view
from .metrics import RegionMetrics, measure
from .regions import to_mask
from .rule import DEFAULT_RULE, Rule

__all__ = ["CENTER_SIGMA", "SMALL_SHARE", "DatasetCheck", "DatasetResult", "assert_dataset_attends_to",
           "run_dataset", "wilson_interval"]

CENTER_SIGMA = 0.25
SMALL_SHARE = 0.05
WORST = 5
_LISTED = 10
PROGRESS_AFTER_S = 3.0
PROGRESS_EVERY_S = 3.0
_Z95 = 1.959963984540054


def wilson_interval(passed: int, total: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a rate of ``passed`` out of ``total``.

    Example:
        >>> [round(v, 3) for v in wilson_interval(18, 20)]
        [0.699, 0.972]
    """
    if total <= 0:
        return (0.0, 1.0)
    p = passed / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class DatasetCheck:
    """One (image, class) check: the image's name, the annotation label (the labels joined with ``+`` when
    ``classes`` maps several to one model class), the model target it was mapped to,
    the verdict, the region metrics (``RegionMetrics.as_dict()``), whether the centre baseline passes the same
    check, whether the class's region is small (under :data:`SMALL_SHARE` of the image), and whether the image's
    centre is within ``tolerance`` of the region (the pointing game's centre baseline).

    Example:
        >>> DatasetCheck("a.png", "dog", 3, True, {"lift": 2.0}, False, False).passed
        True
    """

    image: str
    label: str
    target: Any
    passed: bool
    metrics: dict[str, Any]
    center_passed: bool
    small: bool
    center_hit: bool = False


@dataclass
class DatasetResult:
    """The outcome of a dataset check.

    ``pass_rate`` (checks passed / checks), ``interval`` (Wilson 95%), ``per_class`` (label -> (passed,
    total)), ``checks`` (every :class:`DatasetCheck`), ``failures`` (the failed ones, worst first: misses, then
    lowest lift), ``center_baseline`` (the rate of a centred Gaussian map under the same rule), ``skipped``
    (label, or ``"image [label]"`` for one check the model did not see, -> why it was not checked),
    ``min_pass_rate``, ``method``, ``layer``, and ``overlays`` (the pictures of the worst failures, by (image,
    label)).

    Example:
        >>> r = DatasetResult(0.5, (0.1, 0.9), {"a": (1, 2)}, [], [], 0.25, {}, 0.9, "gradcam", "layer4")
        >>> r.passed
        False
    """

    pass_rate: float
    interval: tuple[float, float]
    per_class: dict[str, tuple[int, int]]
    checks: list[DatasetCheck]
    failures: list[DatasetCheck]
    center_baseline: float
    skipped: dict[str, str]
    min_pass_rate: float
    method: str
    layer: str
    overlays: dict[tuple[str, str], Path | None] = field(default_factory=dict)
    difficult_only: int = 0

    @property
    def passed(self) -> bool:
        """Whether the rate reaches ``min_pass_rate``."""
        return self.pass_rate >= self.min_pass_rate

    def worst_classes(self, n: int = 3) -> list[tuple[str, int, int]]:
        """The ``n`` classes of lowest rate, as (label, passed, total)."""
        rows = sorted(self.per_class.items(), key=lambda kv: (kv[1][0] / kv[1][1], -kv[1][1], kv[0]))
        return [(label, p, t) for label, (p, t) in rows[:n]]

    def summary(self) -> str:
        """The failure message (also the text of a passing result)."""
        n = len(self.checks)
        low, high = self.interval
        verdict = "passed" if self.passed else "failed"
        lines = [
            f"camcheck dataset_attends_to {verdict}: {self.pass_rate:.1%} of {n} checks passed "
            f"(95% interval {low:.1%}-{high:.1%}), required >= {self.min_pass_rate:.1%}"
            + ("" if self.passed else "  <-- too low"),
            f"  centre baseline (a centred Gaussian map, same rule): {self.center_baseline:.1%}"
            + ("  <-- the model does no better than looking at the centre"
               if self.pass_rate <= self.center_baseline else ""),
            f"  method {self.method}, layer {self.layer}",
            "  worst classes: " + ", ".join(f"{label} {p}/{t}" for label, p, t in self.worst_classes()),
        ]
        if self.skipped:
            shown = [f"{label} ({why})" for label, why in list(self.skipped.items())[:_LISTED]]
            more = len(self.skipped) - len(shown)
            lines.append("  skipped: " + "; ".join(shown) + (f"; and {more} more" if more else ""))
        if self.difficult_only:
            lines.append(f"  {self.difficult_only} (image, class) pairs with only difficult objects not checked "
                         "(difficult=True checks them)")
        if self.failures:
            lines.append(f"  worst {min(WORST, len(self.failures))} of {len(self.failures)} failures:")
            for check in self.failures[:WORST]:
                m = check.metrics
                where = "no peak (empty map)" if m["peak"] is None else (
                    f"peak {m['peak_distance']:.0f} px from the region" if m["peak_distance"] else "peak inside")
                picture = self.overlays.get((check.image, check.label))
                lines.append(f"    {check.image} [{check.label}]: lift {m['lift']:.2f}, {where}; overlay: "
                             f"{picture if picture is not None else 'not written'}")
        return "\n".join(lines)


def _targets(dataset: Dataset, classes: Any, categories: Sequence[str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """label -> model target for every label of the dataset that can be checked, and label -> why not."""
    targets: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for label in dataset.labels:
        if classes is None:
            if categories is None:
                raise CamCheckError(
                    "the model has no class names, so the dataset's labels cannot be matched to its outputs. Fix: "
                    "pass classes={'dog': 3, ...} (label -> class index or name), or categories=[...]"
                )
            if label in categories:
                targets[label] = label
            else:
                skipped[label] = "not a class of the model"
            continue
        target = classes.get(label) if isinstance(classes, Mapping) else classes(label)
        if target is None:
            skipped[label] = "not in classes" if isinstance(classes, Mapping) else "classes(label) is None"
            continue
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise CamCheckError(f"classes maps {label!r} to {target!r}; map each label to a class index (int), a class "
                                "name (str) or None to skip it")
        if isinstance(target, str) and categories is not None and target.lower() not in {c.lower() for c in categories}:
            raise CamCheckError(f"classes maps {label!r} to {target!r}, which is not a class name of the model. Fix: map "
                                "it to one of the model's class names or indices, or to None to skip it")
        targets[label] = target
    if not targets:
        raise CamCheckError(
            f"no label of the dataset can be checked: {'; '.join(f'{k} ({v})' for k, v in skipped.items())}. Fix: "
            "map the labels to the model's classes with classes={label: class index or name}"
        )
    return targets, skipped


@dataclass(frozen=True)
class _Group:
    """The labels mapped to one model class, checked as one: ``name`` is the labels joined with ``+``."""

    name: str
    target: Any
    labels: tuple[str, ...]


def _groups(targets: Mapping[str, Any], categories: Sequence[str] | None) -> dict[str, _Group]:
    """label -> its group: labels whose targets resolve to the same class ("circle", "Circle" and its index)
    share one."""
    by_class: dict[Any, list[str]] = {}
    for label, target in targets.items():
        key = target
        if isinstance(target, str) and categories:
            try:
                key = index_of_name(target, categories, len(categories))
            except TargetError:
                pass  # compute_cam reports it
        by_class.setdefault(key, []).append(label)
    out: dict[str, _Group] = {}
    for labels in by_class.values():
        group = _Group("+".join(labels), targets[labels[0]], tuple(labels))
        out.update((label, group) for label in labels)
    return out


def _center_map(size: tuple[int, int], cache: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    if size not in cache:
        h, w = size
        ys = np.exp(-0.5 * (((np.arange(h) + 0.5) - h / 2) / (CENTER_SIGMA * h)) ** 2)
        xs = np.exp(-0.5 * (((np.arange(w) + 0.5) - w / 2) / (CENTER_SIGMA * w)) ** 2)
        g = np.outer(ys, xs)
        cache[size] = (g / g.max()).astype(np.float32)
        if len(cache) > 64:
            cache.pop(next(iter(cache)))
    return cache[size]


@dataclass(frozen=True)
class _Rule:
    """The thresholds of assert_attends_to's rule for every check of the run."""

    rule: Rule
    pointing: bool
    min_energy: float | None

    @property
    def tolerance(self) -> float:
        return self.rule.tolerance

    def holds(self, m: RegionMetrics) -> bool:
        return self.rule.attends(m, pointing=self.pointing, min_energy=self.min_energy).passed


def _plan(entry: Entry, groups: Mapping[str, _Group], difficult: bool) -> tuple[list[_Group], int]:
    """The classes of one image to check, and how many present classes had only difficult objects."""
    present = list(dict.fromkeys(groups[label] for label in entry.labels if label in groups))
    checked, only_difficult = [], 0
    for group in present:
        if difficult or any(not o.difficult for o in entry.objects if o.label in group.labels):
            checked.append(group)
        else:
            only_difficult += 1
    return checked, only_difficult


def _batches(dataset: Dataset, groups: Mapping[str, _Group], difficult: bool, batch_size: int,
             counts: dict[str, int]) -> Iterator[list[tuple[int, list[_Group]]]]:
    batch: list[tuple[int, list[_Group]]] = []
    jobs = 0
    for index, entry in enumerate(dataset.entries):
        labels, only_difficult = _plan(entry, groups, difficult)
        counts["difficult_only"] += only_difficult
        if not labels:
            continue
        batch.append((index, labels))
        jobs += len(labels)
        if jobs >= batch_size:
            yield batch
            batch, jobs = [], 0
    if batch:
        yield batch


def _decode(dataset: Dataset, batch: list[tuple[int, list[_Group]]]) -> list[tuple[Any, list[_Group]]]:
    return [(Dataset.sample(dataset.entries[i]), labels) for i, labels in batch]


def _maps(model: torch.nn.Module, pictures: list[Any], targets: list[Any], cam_kwargs: dict[str, Any]
          ) -> list[CamResult]:
    """compute_cam on the batch; pictures whose preprocessing gives different input sizes go by size."""
    try:
        return compute_cam(model, pictures, targets, **cam_kwargs)
    except MixedSizesError:
        pass
    out: list[CamResult | None] = [None] * len(pictures)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(pictures):
        groups.setdefault(p.size, []).append(i)
    for rows in groups.values():
        for i, r in zip(rows, compute_cam(model, [pictures[i] for i in rows], [targets[i] for i in rows],
                                          **cam_kwargs)):
            out[i] = r
    return out  # type: ignore[return-value]


class _Worst:
    """The WORST failures seen so far with what their overlays need (a bounded heap)."""

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[float, float], int, Any]] = []
        self._count = 0

    def offer(self, key: tuple[float, float], keep: Callable[[], Any]) -> None:
        self._count += 1
        item = (key, -self._count)  # on equal severity the earlier failure stays, as in the sorted failures
        if len(self._heap) < WORST:
            heapq.heappush(self._heap, (*item, keep()))
        elif item > self._heap[0][:2]:
            heapq.heapreplace(self._heap, (*item, keep()))

    def items(self) -> list[Any]:
        return [value for _, _, value in sorted(self._heap, key=lambda t: (t[0], t[1]), reverse=True)]


def _severity(m: RegionMetrics) -> tuple[float, float]:
    """Larger is worse: misses before hits, then lower lift."""
    return (0.0 if m.hit else 1.0, -m.lift)


def run_dataset(model: torch.nn.Module, dataset: Dataset | str | Any, *, min_pass_rate: float = 0.9,
                classes: Mapping[str, Any] | Callable[[str], Any] | None = None, batch_size: int = 32,
                difficult: bool = False, min_lift: float = DEFAULT_RULE.min_lift,
                tolerance: float = DEFAULT_RULE.tolerance, pointing: bool = True, min_energy: float | None = None,
                overlays: bool = True, **cam_kwargs: Any) -> DatasetResult:
    """Run every check of the dataset and return the :class:`DatasetResult` without asserting (what
    :func:`assert_dataset_attends_to` and the ``camcheck dataset`` command run). ``overlays=False`` writes no
    picture.

    Example:
        >>> from pytest_camcheck import load_model
        >>> r = run_dataset(load_model("camcheck-shapes"), "fixtures/shapes-coco/instances.json", overlays=False)
        >>> 0 <= r.center_baseline <= 1 and len(r.checks) > 0
        True
    """
    from .zoo import model_info

    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    min_pass_rate = check_threshold("min_pass_rate", min_pass_rate, low=0.0, high=1.0, default=0.9)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CamCheckError(f"batch_size={batch_size!r}; pass a whole number >= 1 (32 is the default)")
    if classes is not None and not isinstance(classes, Mapping) and not callable(classes):
        raise CamCheckError(f"classes is a {type(classes).__name__}; pass a dict label -> class index or name, a "
                            "function of the label, or None (labels are the model's class names)")
    rule = _Rule(Rule(min_lift=min_lift, tolerance=tolerance), bool(pointing),
                 None if min_energy is None else check_threshold("min_energy", min_energy, low=0.0))
    info = model_info(model)
    given = cam_kwargs.get("categories")  # categories=[] means no names, as in compute_cam
    categories = given if given is not None else (info.categories if info is not None else None)
    targets, skipped = _targets(dataset, classes, categories)
    groups = _groups(targets, categories)

    checks: list[DatasetCheck] = []
    centers: dict[tuple[int, int], np.ndarray] = {}
    worst = _Worst()
    counts = {"difficult_only": 0}
    unseen: dict[str, str] = {}  # "image [label]" -> why the check could not be judged
    method = layer = ""
    start = last = time.monotonic()
    images_done = 0
    batches = _batches(dataset, groups, difficult, batch_size, counts)
    ahead = one_ahead(lambda batch: _decode(dataset, batch), batches, "camcheck-decode")
    with closing(ahead):  # an error in the loop stops the decoding thread now, not when the traceback goes
        for decoded in ahead:
            pictures = [s.image for s, present in decoded for _ in present]
            wanted = [group.target for _, present in decoded for group in present]
            results = iter(_maps(model, pictures, wanted, cam_kwargs))
            for sample, present in decoded:
                for group in present:
                    result = next(results)
                    method, layer = result.method, result.layer
                    try:
                        checks.append(_one(sample, group, result, rule, centers, worst))
                    except UnseenRegionError as err:
                        unseen[f"{sample.name} [{group.name}]"] = err.reason
            images_done += len(decoded)
            now = time.monotonic()
            finished = images_done == len(dataset)
            if checks and now - start >= PROGRESS_AFTER_S and (finished or now - last >= PROGRESS_EVERY_S):
                last = now
                rate = sum(c.passed for c in checks) / len(checks)
                context.progress(f"camcheck dataset: {images_done}/{len(dataset)} images, {len(checks)} checks, "
                                 f"{rate:.1%} passed so far", images_done, len(dataset))
    skipped.update(unseen)
    if not checks:
        why, fix = "every object is difficult, or its label skipped", "pass difficult=True, or classes=..."
        if unseen:
            listed = "; ".join(f"{k} ({v})" for k, v in list(unseen.items())[:_LISTED])
            why += f", or the model did not see it: {listed}"
            fix += ", or preprocessing that keeps the objects in view (e.g. Resize((224, 224)) without CenterCrop)"
        raise CamCheckError(f"the dataset {dataset.root} has no (image, class) pair to check: {why}. Fix: {fix}")
    passed = sum(c.passed for c in checks)
    per_class: dict[str, list[int]] = {}
    for c in checks:
        per_class.setdefault(c.label, [0, 0])
        per_class[c.label][0] += c.passed
        per_class[c.label][1] += 1
    failures = sorted((c for c in checks if not c.passed),
                      key=lambda c: _severity(_metrics_of(c)), reverse=True)
    result = DatasetResult(
        pass_rate=passed / len(checks), interval=wilson_interval(passed, len(checks)),
        per_class={k: (v[0], v[1]) for k, v in sorted(per_class.items())}, checks=checks, failures=failures,
        center_baseline=sum(c.center_passed for c in checks) / len(checks), skipped=skipped,
        min_pass_rate=min_pass_rate, method=method, layer=layer, difficult_only=counts["difficult_only"],
    )
    if overlays and not result.passed:
        result.overlays = _write_overlays(worst.items())
    return result


def _metrics_of(check: DatasetCheck) -> RegionMetrics:
    m = check.metrics
    return RegionMetrics(m["energy"], m["chance"], m["lift"], m["hit"], None, math.inf, m["rank_accuracy"], m["empty"])


def _one(sample: Any, group: _Group, result: CamResult, rule: _Rule, centers: dict[tuple[int, int], np.ndarray],
         worst: _Worst) -> DatasetCheck:
    """One check; an UnseenRegionError when the model saw none of the objects, or nothing but them (objects
    covering the whole image included)."""
    label = group.name
    try:
        regions = [sample.regions[one] for one in group.labels if one in sample.regions]
        union = regions[0] if len(regions) == 1 else np.logical_or.reduce([to_mask(r, result.image_size)
                                                                           for r in regions])
        mask = to_mask(union, result.image_size)
    except UnseenRegionError:
        raise  # an object covering the whole image: skipped with the reason, as one the model never saw
    except RegionError as err:
        raise CamCheckError(f"{sample.source}: the region of {label!r} cannot be checked ({err})") from err
    seen = cropped_view(result.geometry)
    m = measure(result.heatmap, mask, rule.tolerance, seen=seen)
    center_map = _center_map(result.image_size, centers)
    if seen is not None:
        center_map = center_map * seen  # the baseline, like the model's map, has no mass where the model saw nothing
    center = measure(center_map, mask, rule.tolerance, seen=seen)
    passed = rule.holds(m)
    if not passed:
        worst.offer(_severity(m), lambda: (sample.name, label, sample.image, result, mask, m.peak))
    return DatasetCheck(sample.name, label, result.target, passed, m.as_dict(), rule.holds(center),
                        m.chance < SMALL_SHARE, center.hit)


def _write_overlays(items: list[Any]) -> dict[tuple[str, str], Path | None]:
    from .render import overlay, save_png

    out: dict[tuple[str, str], Path | None] = {}
    for name, label, picture, result, mask, peak in items:
        try:
            out[(name, label)] = save_png(overlay(picture, result.heatmap, region=mask, peak=peak),
                                          context.artifact_path("dataset"))
        except OSError:
            out[(name, label)] = None
    return out


def _record(result: DatasetResult, dataset: Dataset, message: str) -> None:
    n = len(result.checks)
    gallery = []
    for check in result.failures[:WORST]:
        gallery.append({"image": check.image, "label": check.label, "lift": check.metrics["lift"],
                        "hit": check.metrics["hit"], "overlay": result.overlays.get((check.image, check.label))})
    context.record(context.CheckRecord(
        check="dataset_attends_to", passed=result.passed, method=result.method, layer=result.layer, target=None,
        label=None, probability=None,
        metrics={"pass_rate": result.pass_rate, "center_baseline": result.center_baseline, "checks": n,
                 "interval_low": result.interval[0], "interval_high": result.interval[1]},
        thresholds={"min_pass_rate": result.min_pass_rate},
        overlay=next((g["overlay"] for g in gallery if g["overlay"] is not None), None), message=message,
        image=f"{dataset.format} dataset {dataset.root}",
        details={"dataset": str(dataset.root), "format": dataset.format,
                 "per_class": {k: list(v) for k, v in result.per_class.items()}, "worst": gallery,
                 "skipped": dict(result.skipped)},
    ))


def assert_dataset_attends_to(model: torch.nn.Module, dataset: Dataset | str | Any, *, min_pass_rate: float = 0.9,
                              classes: Mapping[str, Any] | Callable[[str], Any] | None = None, batch_size: int = 32,
                              difficult: bool = False, **kwargs: Any) -> DatasetResult:
    """Assert that the model looks at the annotated objects on at least ``min_pass_rate`` of the dataset's
    (image, class) checks; return the :class:`DatasetResult`.

    ``dataset``: a :class:`~pytest_camcheck.Dataset` or a path for :func:`~pytest_camcheck.load_dataset`.
    ``classes``: annotation label -> model target (class index or name; a dict or a function; ``None`` skips the
    label); by default a label must be one of the model's class names, others are skipped and listed. Labels
    mapped to one model class are checked as one class, named by the labels joined with ``+``.
    ``difficult``: also check classes whose objects are all flagged difficult. Rule keywords (``min_lift``,
    ``tolerance``, ``pointing``, ``min_energy``) are those of :func:`~pytest_camcheck.assert_attends_to`; the
    others go to :func:`~pytest_camcheck.compute_cam` (``method``, ``layer``, ``preprocess``, ``device``...).
    ``batch_size`` checks share one batched ``compute_cam`` call.

    A failure message gives the rate, its 95% interval, the centre baseline, the worst classes and the five
    worst images with their overlays (only those are written).

    Example:
        >>> from pytest_camcheck import load_model
        >>> res = assert_dataset_attends_to(load_model("camcheck-shapes"), "fixtures/shapes-coco/instances.json",
        ...                                 min_pass_rate=0.7)
        >>> res.pass_rate >= 0.7
        True
    """
    __tracebackhide__ = True
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    result = run_dataset(model, ds, min_pass_rate=min_pass_rate, classes=classes, batch_size=batch_size,
                         difficult=difficult, **kwargs)
    message = result.summary()
    _record(result, ds, "" if result.passed else message)
    if not result.passed:
        raise AssertionError(message)
    return result
