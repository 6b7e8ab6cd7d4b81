"""Attention assertions: compute the map, measure it against a region, decide with
:mod:`pytest_camcheck.rule`, and explain a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import context
from ._text import target_text
from ._values import check_threshold
from .engine import CamResult, compute_cam
from .errors import CamCheckError
from .geometry import cropped_view
from .metrics import RegionMetrics, measure, view_span
from .regions import Region, describe, to_mask
from .render import overlay, save_png
from .rule import DEFAULT_RULE, Rule, Verdict, required_lift

__all__ = ["DEFAULT_RULE", "CamCheck", "Rule", "required_lift", "assert_attends_more_to", "assert_attends_to", "assert_not_attends_to"]


def _single(result: CamResult | list[CamResult], image: Any) -> CamResult:
    """The one result of a check; a batch of one image tensor (a Hugging Face processor's ``pixel_values`` of
    shape (1, C, H, W)) with one target counts as one image."""
    if isinstance(result, list) and len(result) == 1 and isinstance(image, torch.Tensor) and image.dim() == 4:
        return result[0]
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
    t = t[0] if t.dim() == 4 else t
    t = t[:3] if t.shape[0] >= 3 else t[:1].expand(3, -1, -1)
    t = (t - t.min()) / (t.max() - t.min() + 1e-12)
    return Image.fromarray((t.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


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
        f"  method {r.method}, layer {r.layer}, {target_text(r)}",
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


Decide = Callable[[list[RegionMetrics]], Verdict]
Explain = Callable[[list[RegionMetrics], Verdict], list[str]]

_EMPTY_LINE = ("the map is EMPTY: the target has no positive evidence at this layer (all-zero or constant map), "
               "so it cannot attend to anything")


def _run(check: str, model: torch.nn.Module, image: Any, target: Any, regions: Sequence[Region], tolerance: float,
         decide: Decide, explain: Explain, thresholds: dict[str, Any], cam_kwargs: dict[str, Any]) -> CamResult:
    result = _single(compute_cam(model, image, target, **cam_kwargs), image)
    masks = [to_mask(region, result.image_size, orientation=result.orientation) for region in regions]
    # a region is judged on the part of the image the model saw (an UnseenRegionError when there is none)
    seen = cropped_view(result.geometry)
    metrics = [measure(result.heatmap, mask, tolerance, seen=seen) for mask in masks]
    verdict = decide(metrics)
    passed = verdict.passed
    message = ""
    picture = None
    if not passed:
        lines = ([_EMPTY_LINE] if not verdict.criteria["map not empty"] else []) + explain(metrics, verdict)
        if seen is not None:
            lines.append(f"the model saw only {view_span(seen)} (the preprocessing cropped the rest): regions are "
                         "measured on their seen part, chance over the seen pixels")
        picture, picture_text = _save_overlay(check, result, image, masks, metrics[0].peak)
        region_texts = [f"{name}: {describe(reg)}" for name, reg in zip(_REGION_NAMES, regions)]
        message = _explain(check, result, region_texts, lines, picture_text)
    flat = {f"{name.replace(' ', '_')}.{k}": v for name, m in zip(_REGION_NAMES, metrics)
            for k, v in m.as_dict().items()}
    context.record(context.CheckRecord(
        check=check, passed=passed, method=result.method, layer=result.layer, target=result.target,
        label=result.label, probability=result.probability, metrics=flat, thresholds=thresholds,
        overlay=picture, message=message, image=context.describe_image(image),
    ))
    if not passed:
        raise AssertionError(message)
    return result


_REGION_NAMES = ("region", "other region")


def _too(ok: bool, text: str) -> str:
    return "" if ok else f"  <-- {text}"


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
    given, its energy share is at least ``min_energy`` (:meth:`pytest_camcheck.rule.Rule.attends`). Other
    keywords go to :func:`compute_cam`.

    When the preprocessing crops (Resize + CenterCrop), the region is judged on the part the model saw and its
    area share is taken over the seen pixels (:func:`pytest_camcheck.metrics.measure`); a region the model never
    saw, or one covering all it saw, raises :class:`~pytest_camcheck.errors.UnseenRegionError` (the same for
    every assertion here).

    Example:
        >>> scene = make_scene(HELD_OUT + 7, "single")
        >>> assert_attends_to(shapes_model, scene.image, scene.objects[0].name, scene.objects[0].box).method
        'gradcam'
    """
    __tracebackhide__ = True
    rule = Rule(min_lift=min_lift, tolerance=tolerance)
    if min_energy is not None:
        min_energy = check_threshold("min_energy", min_energy, low=0.0)

    def explain(ms: list[RegionMetrics], v: Verdict) -> list[str]:
        m, need = ms[0], v.required_lift
        lines = [
            f"pointing game: {'HIT' if m.hit else 'MISS'}; {_peak_text(m, rule.tolerance)}"
            + ("" if pointing else " [not required]"),
            f"lift {m.lift:.2f} (energy {m.energy:.3f} / chance {m.chance:.3f}), required >= {need:.3g}"
            + ("" if need == rule.min_lift else f" (min_lift {rule.min_lift:g}, capped for a region this large)")
            + _too(v.criteria["lift"], "too low"),
        ]
        if min_energy is not None:
            lines.append(f"energy {m.energy:.3f}, required >= {min_energy:g}" + _too(v.criteria["energy"], "too low"))
        return lines + [f"rank accuracy {m.rank_accuracy:.3f}"]

    thresholds = {"min_lift": rule.min_lift, "tolerance": rule.tolerance, "pointing": pointing,
                  "min_energy": min_energy}
    return _run("attends_to", model, image, target, [region], rule.tolerance,
                lambda ms: rule.attends(ms[0], pointing=pointing, min_energy=min_energy), explain, thresholds,
                cam_kwargs)


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
    most ``max_lift`` times its fair share of the map's mass (:meth:`pytest_camcheck.rule.Rule.not_attends`).
    An empty map fails: it proves nothing.

    Example:
        >>> scene = make_scene(HELD_OUT + 7, "single")
        >>> assert_not_attends_to(shapes_model, scene.image, scene.objects[0].name, Box.relative(0, 0, 0.1, 0.1)).layer
        'features'
    """
    __tracebackhide__ = True
    rule = Rule(max_lift=max_lift, tolerance=tolerance)

    def explain(ms: list[RegionMetrics], v: Verdict) -> list[str]:
        m = ms[0]
        return [
            f"peak: {'IN' if m.hit else 'outside'} the region; {_peak_text(m, rule.tolerance)}"
            + _too(v.criteria["peak outside"], "must be outside"),
            f"lift {m.lift:.2f} (energy {m.energy:.3f} / chance {m.chance:.3f}), allowed <= {rule.max_lift:g}"
            + _too(v.criteria["lift"], "too high"),
        ]

    thresholds = {"max_lift": rule.max_lift, "tolerance": rule.tolerance}
    return _run("not_attends_to", model, image, target, [region], rule.tolerance,
                lambda ms: rule.not_attends(ms[0]), explain, thresholds, cam_kwargs)


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
    per pixel (lift) on ``region`` is at least ``min_ratio`` times that on ``other_region``
    (:meth:`pytest_camcheck.rule.Rule.attends_more`).

    Example:
        >>> scene = make_scene(HELD_OUT + 3, "pair")
        >>> first, second = scene.objects
        >>> assert_attends_more_to(shapes_model, scene.image, first.name, first.box, second.box).label == first.name
        True
    """
    __tracebackhide__ = True
    rule = Rule(min_ratio=min_ratio)

    def explain(ms: list[RegionMetrics], v: Verdict) -> list[str]:
        a, b = ms
        return [
            _metrics_line("region", a),
            _metrics_line("other region", b),
            f"density ratio (lift region / lift other) {v.ratio:.2f}, required >= {rule.min_ratio:g}"
            + _too(v.criteria["ratio"], "too low"),
            f"peak: {a.peak_distance:.1f} px from the region, {b.peak_distance:.1f} px from the other region"
            + _too(v.criteria["peak nearer"], "must be nearer the region"),
        ]

    return _run("attends_more_to", model, image, target, [region, other_region], 0.0,
                lambda ms: rule.attends_more(*ms), explain, {"min_ratio": rule.min_ratio}, cam_kwargs)


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

    def sane(self, model: torch.nn.Module, image: Any, target: Any = None, **kwargs: Any) -> Any:
        """:func:`pytest_camcheck.assert_sane` with the bound defaults."""
        __tracebackhide__ = True
        from .quality import assert_sane

        return assert_sane(model, image, target, **self._kw(kwargs))

    def faithful(self, model: torch.nn.Module, image: Any, target: Any = None, **kwargs: Any) -> Any:
        """:func:`pytest_camcheck.assert_faithful` with the bound defaults."""
        __tracebackhide__ = True
        from .quality import assert_faithful

        bound = self._kw(kwargs)
        if kwargs.get("heatmap") is not None and "method" not in kwargs:
            bound.pop("method")  # a given map is judged as it is: the bound method would do nothing
        return assert_faithful(model, image, target, **bound)

    def stable(self, model: torch.nn.Module, image: Any, target: Any = None, **kwargs: Any) -> Any:
        """:func:`pytest_camcheck.assert_stable` with the bound defaults."""
        __tracebackhide__ = True
        from .quality import assert_stable

        return assert_stable(model, image, target, **self._kw(kwargs))

    def dataset_attends_to(self, model: torch.nn.Module, dataset: Any, **kwargs: Any) -> Any:
        """:func:`~pytest_camcheck.assert_dataset_attends_to` with the bound defaults (``dataset``: a Dataset or
        a path)."""
        __tracebackhide__ = True
        from .dataset_check import assert_dataset_attends_to

        kwargs = {"min_lift": self.rule.min_lift, "tolerance": self.rule.tolerance} | kwargs
        return assert_dataset_attends_to(model, dataset, **self._kw(kwargs))
