"""Where a map looks: energy in a region, pointing game, chance level, rank accuracy, map similarity.

Every function takes a float heatmap (height, width) with values in [0, 1] and, where a region is
involved, a boolean mask of the same shape (see `regions.to_mask`). Pixel positions are (x, y) =
(column, row); distances are Euclidean, in pixels, between pixel centres.

An all-zero ("empty") map carries no evidence: its energy and rank accuracy are 0, it has no peak,
and it misses the pointing game.

When the model saw only part of the image (a centre crop: ``CamResult.geometry.seen()``), pass that part as
``seen``: a region is then judged on its seen part, and its chance level is its share of the seen pixels
(region ∩ seen / seen), since the map has no mass elsewhere. A region entirely outside the seen part, or
covering all of it, cannot be judged and raises :class:`~pytest_camcheck.errors.UnseenRegionError`. With
``seen=None`` (or all True) nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from .errors import CamCheckError, UnseenRegionError

_RANGE_SLACK = 1e-6


def check_heatmap(heatmap: Any, name: str = "heatmap") -> np.ndarray:
    """Validate a heatmap: a 2-D, non-empty, finite float numpy array with values in [0, 1].

    Returns it as float64, with rounding excursions of up to 1e-6 outside [0, 1] clipped. Raises
    CamCheckError naming the fix.

    Example:
        >>> check_heatmap(np.zeros((2, 3), dtype=np.float32)).dtype
        dtype('float64')
    """
    return _validated(heatmap, name).astype(np.float64, copy=False)


def _validated(heatmap: Any, name: str = "heatmap") -> np.ndarray:
    """:func:`check_heatmap` without the conversion to float64: the region metrics read a float32 map as it is
    (half the memory traffic) and accumulate its sums in float64."""
    if not isinstance(heatmap, np.ndarray):
        fix = " (for a torch tensor: t.detach().cpu().numpy())" if type(heatmap).__module__.startswith("torch") else ""
        raise CamCheckError(
            f"{name} is a {type(heatmap).__name__}, not a numpy array. Fix: pass a float numpy array of shape "
            f"(height, width){fix}"
        )
    if heatmap.ndim != 2:
        raise CamCheckError(
            f"{name} has shape {heatmap.shape}; expected 2-D (height, width). Fix: pass one map, e.g. result.heatmap "
            "or batch[0]"
        )
    if heatmap.size == 0:
        raise CamCheckError(f"{name} is empty (shape {heatmap.shape}); pass a map with pixels")
    if not np.issubdtype(heatmap.dtype, np.floating):
        raise CamCheckError(
            f"{name} has dtype {heatmap.dtype}; expected float values in [0, 1]. Fix: convert it, e.g. "
            "heatmap.astype(np.float32) / heatmap.max()"
        )
    if not np.isfinite(heatmap).all():
        raise CamCheckError(f"{name} contains NaN or infinite values; fix the map (e.g. a division by zero upstream)")
    low, high = float(heatmap.min()), float(heatmap.max())
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        raise CamCheckError(
            f"{name} values range from {low:g} to {high:g}; expected [0, 1]. Fix: rescale it, e.g. "
            "np.clip(heatmap, 0, None) / heatmap.max()"
        )
    return np.clip(heatmap, 0.0, 1.0) if low < 0 or high > 1 else heatmap


def _check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        what = f"dtype {mask.dtype}" if isinstance(mask, np.ndarray) else f"type {type(mask).__name__}"
        raise CamCheckError(
            f"mask has {what}; expected a boolean numpy array. Fix: build it with regions.to_mask(region, image_size) "
            "or convert it, e.g. mask > 0"
        )
    if mask.shape != shape:
        raise CamCheckError(
            f"mask has shape {mask.shape} but the heatmap has shape {shape}. Fix: build the mask at the heatmap's "
            "(original image's) size with regions.to_mask(region, heatmap.shape)"
        )
    if not mask.any():
        raise CamCheckError("mask selects no pixel; pass a region with at least one pixel")
    return mask


_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _checked(heatmap: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    h = _validated(heatmap)
    if h.dtype not in _NATIVE_FLOATS:  # float16, long double or a foreign byte order: what torch cannot share
        h = h.astype(np.float64)
    return h, _check_mask(mask, h.shape)


def _energy(h: np.ndarray, m: np.ndarray) -> float:
    total = h.sum(dtype=np.float64)
    return float(h[m].sum(dtype=np.float64) / total) if total > 0 else 0.0


def _peak(h: np.ndarray) -> tuple[int, int] | None:
    flat = h.ravel()
    first = int(flat.argmax())
    top = flat[first]
    if top <= 0:
        return None
    tied = np.flatnonzero(flat == top)
    if tied.size == 1:
        return first % h.shape[1], first // h.shape[1]
    ys, xs = np.divmod(tied, h.shape[1])
    nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return int(xs[nearest]), int(ys[nearest])


def _distance(m: np.ndarray, p: tuple[int, int] | None) -> float:
    if p is None:
        return math.inf
    x, y = p
    if m[y, x]:
        return 0.0
    # the nearest mask pixel to one point: a distance transform of the whole image would cost ~10x more. The
    # pixels are listed inside the mask's bounding box only.
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    top, left = rows[0], cols[0]
    ys, xs = np.nonzero(m[top:rows[-1] + 1, left:cols[-1] + 1])
    return float(np.sqrt(((xs + (left - x)) ** 2 + (ys + (top - y)) ** 2).min()))


def _rank_accuracy(h: np.ndarray, m: np.ndarray) -> float:
    flat, inside = h.ravel(), m.ravel()
    if flat.max() <= 0:
        return 0.0
    k = int(np.count_nonzero(inside))
    # the k-th largest value. A map is often half zeros (negative evidence, pixels the model never saw): the
    # selection runs over the positive pixels only, and the cut is 0 when fewer than k are positive. numpy's
    # partition degrades badly on many equal values, torch's selection does not.
    positive = flat[flat > 0]
    cut = torch.from_numpy(positive).kthvalue(positive.size - k + 1).values.item() if positive.size >= k else 0.0
    above, tied = flat > cut, flat == cut
    share = (k - np.count_nonzero(above)) * np.count_nonzero(tied & inside) / np.count_nonzero(tied)
    return float((np.count_nonzero(above & inside) + share) / k)


def energy(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total mass inside the mask (energy-based pointing game, Wang et al. 2020).

    0.0 for an all-zero map.

    Example:
        >>> h = np.array([[0.5, 0.5], [0.0, 1.0]])
        >>> energy(h, np.array([[True, False], [False, False]]))
        0.25
    """
    return _energy(*_checked(heatmap, mask))


def peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """Pixel (x, y) = (column, row) of the map's maximum; None for an all-zero map.

    When several pixels share the maximum, the one nearest to their centroid is taken (the first in
    row-major order among equally near ones), so a flat-topped blob is located at its middle.

    Example:
        >>> peak(np.array([[0.0, 0.2, 0.0], [0.0, 0.0, 0.9]]))
        (2, 1)
        >>> peak(np.zeros((2, 2))) is None
        True
    """
    return _peak(check_heatmap(heatmap))


def peak_distance(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Distance in pixels from the peak to the nearest mask pixel (0.0 inside); math.inf for an all-zero map.

    Example:
        >>> h = np.zeros((1, 6)); h[0, 5] = 1.0
        >>> peak_distance(h, np.array([[True, False, False, False, False, False]]))
        5.0
    """
    h, m = _checked(heatmap, mask)
    return _distance(m, _peak(h))


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance: float = 15) -> bool:
    """Whether the map's peak lies inside the mask or within `tolerance` pixels of it (Zhang et al. 2016).

    An all-zero map has no peak and is a miss.

    Example:
        >>> h = np.zeros((1, 30)); h[0, 20] = 1.0
        >>> m = np.zeros((1, 30), dtype=bool); m[0, 0] = True
        >>> pointing_game(h, m), pointing_game(h, m, tolerance=20)
        (False, True)
    """
    if tolerance < 0:
        raise CamCheckError(f"tolerance is {tolerance}; pass a distance in pixels >= 0 (15 is the usual value)")
    h, m = _checked(heatmap, mask)
    return _distance(m, _peak(h)) <= tolerance


def view_span(seen: np.ndarray) -> str:
    """The extent of the seen pixels in words.

    Example:
        >>> view_span(np.array([[False, True, True, False]]))
        'columns 1-2, rows 0-0 of the 4x1 image'
    """
    rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
    h, w = seen.shape
    return f"columns {cols[0]}-{cols[-1]}, rows {rows[0]}-{rows[-1]} of the {w}x{h} image"


def _in_view(m: np.ndarray, seen: np.ndarray | None) -> tuple[np.ndarray, float]:
    """The part of the region the model saw and its chance level (its share of the seen pixels)."""
    if seen is None or _check_mask(seen, m.shape).all():
        return m, int(np.count_nonzero(m)) / m.size
    part = m & seen
    n_part, n_seen = int(np.count_nonzero(part)), int(np.count_nonzero(seen))
    if n_part == 0:
        raise UnseenRegionError(
            f"the region lies entirely outside the part of the image the model saw ({view_span(seen)}; the "
            "preprocessing cropped the rest away), so the map cannot say whether the model looks at it. Fix: use "
            "preprocessing that keeps the region, e.g. resize the full image to the model's input size "
            "(Resize((224, 224)) instead of Resize + CenterCrop), or check a region inside the part the model saw",
            "never seen by the model: the preprocessing crops it away")
    if n_part == n_seen:
        raise UnseenRegionError(
            f"the region covers every pixel the model saw ({view_span(seen)}), which leaves nothing to compare its "
            "attention against. Fix: check a smaller region, or use preprocessing that shows more of the image "
            "(e.g. Resize((224, 224)) instead of Resize + CenterCrop)",
            "covers all the model saw")
    return part, n_part / n_seen


def chance(mask: np.ndarray, seen: np.ndarray | None = None) -> float:
    """Chance level of a region: its area over the image area (the energy of a uniform map); with ``seen``, the
    share of the seen pixels that the region covers.

    Example:
        >>> chance(np.array([[True, False, False, False]]))
        0.25
        >>> chance(np.array([[True, False, False, False]]), seen=np.array([[True, True, False, False]]))
        0.5
    """
    m = _check_mask(mask, getattr(mask, "shape", ()))
    return float(_in_view(m, seen)[1])


def lift(heatmap: np.ndarray, mask: np.ndarray, seen: np.ndarray | None = None) -> float:
    """Energy over chance level: 1.0 is what a uniform map gets, higher means attention on the region. ``seen``
    as in :func:`measure`.

    Example:
        >>> lift(np.array([[1.0, 0.0, 0.0, 0.0]]), np.array([[True, False, False, False]]))
        4.0
    """
    h, m = _checked(heatmap, mask)
    part, level = _in_view(m, seen)
    return _energy(h, part) / float(level)


def rank_accuracy(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's top-|mask| pixels (by value) that lie inside the mask (relevance rank accuracy).

    Pixels tied at the cut-off value are counted pro rata (the expected value over random tie
    breaks), so a uniform map scores the chance level; an all-zero map scores 0.0.

    Example:
        >>> h = np.array([[0.9, 0.1, 0.8, 0.0]])
        >>> rank_accuracy(h, np.array([[True, True, False, False]]))
        0.5
    """
    return _rank_accuracy(*_checked(heatmap, mask))


@dataclass(frozen=True)
class RegionMetrics:
    """Every region metric of one map, as `measure` computes them.

    `peak` is None and `peak_distance` is math.inf when the map is all zero (`empty`).
    """

    energy: float
    chance: float
    lift: float
    hit: bool
    peak: tuple[int, int] | None
    peak_distance: float
    rank_accuracy: float
    empty: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values: peak as [x, y] or None, an infinite peak distance as None.

        Example:
            >>> RegionMetrics(0.0, 0.5, 0.0, False, None, math.inf, 0.0, True).as_dict()["peak_distance"] is None
            True
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["peak"] = list(self.peak) if self.peak is not None else None
        out["peak_distance"] = self.peak_distance if math.isfinite(self.peak_distance) else None
        return out


def measure(heatmap: np.ndarray, mask: np.ndarray, tolerance: float = 15, *,
            seen: np.ndarray | None = None) -> RegionMetrics:
    """All region metrics of a map at once (the inputs are validated once).

    ``seen``: the pixels the model saw (``CamResult.geometry.seen()``), when a crop hid the rest. Every metric is
    then taken on the region's seen part and the chance level is ``count(region & seen) / count(seen)``; a region
    with no seen pixel, or covering all of them, raises :class:`~pytest_camcheck.errors.UnseenRegionError`.

    Example:
        >>> h = np.zeros((4, 6)); h[1, 4] = 1.0
        >>> m = np.zeros((4, 6), dtype=bool); m[:, 3:] = True
        >>> r = measure(h, m)
        >>> r.energy, r.chance, r.lift, r.hit, r.peak
        (1.0, 0.5, 2.0, True, (4, 1))
        >>> seen = np.zeros((4, 6), dtype=bool); seen[:, 2:] = True   # the model saw columns 2-5 only
        >>> h[:, 2:] = 1.0                                            # a flat map on what it saw
        >>> round(measure(h, m, seen=seen).lift, 6)
        1.0
    """
    if tolerance < 0:
        raise CamCheckError(f"tolerance is {tolerance}; pass a distance in pixels >= 0 (15 is the usual value)")
    h, m = _checked(heatmap, mask)
    m, level = _in_view(m, seen)
    share = _energy(h, m)
    top = _peak(h)  # None exactly when the map (values in [0, 1]) is all zero
    distance = _distance(m, top)
    return RegionMetrics(
        energy=share,
        chance=level,
        lift=share / level,
        hit=distance <= tolerance,
        peak=top,
        peak_distance=distance,
        rank_accuracy=_rank_accuracy(h, m) if top is not None else 0.0,
        empty=top is None,
    )


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2)[inverse.ravel()]


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if np.array_equal(a, b):
        return 1.0
    if a.min() == a.max() or b.min() == b.max():
        return 0.0
    return float(np.corrcoef(_ranks(a.ravel()), _ranks(b.ravel()))[0, 1])


def map_similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How alike two maps of the same shape are: SSIM on the 2-D maps and Spearman rank correlation.

    `ssim` is skimage's structural similarity with data_range=1.0 (window 7, or the largest odd size
    that fits maps smaller than 7 px). `spearman` is the rank correlation of the pixels (tied values
    get their average rank); it is 1.0 for identical maps and 0.0 when exactly one map is constant
    (where the correlation is undefined).

    Example:
        >>> a = np.linspace(0, 1, 64).reshape(8, 8)
        >>> map_similarity(a, a)
        {'ssim': 1.0, 'spearman': 1.0}
    """
    a, b = check_heatmap(a, "first map"), check_heatmap(b, "second map")
    if a.shape != b.shape:
        raise CamCheckError(
            f"the maps have different shapes, {a.shape} and {b.shape}. Fix: compare maps of the same image "
            "(resize one, e.g. with skimage.transform.resize, if they come from different sizes)"
        )
    side = min(a.shape)
    if side < 3:
        raise CamCheckError(f"maps of shape {a.shape} are too small for SSIM; compare maps of at least 3x3 px")
    win = min(7, side if side % 2 else side - 1)
    return {
        "ssim": float(structural_similarity(a, b, data_range=1.0, win_size=win)),
        "spearman": _rank_correlation(a, b),
    }
