"""Pictures for failures and reports: colour maps, heatmap overlays with regions and peaks, captioned tiles, PNGs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from skimage.segmentation import find_boundaries

from ._io import atomic_file
from .errors import CamCheckError
from .images import ImageLike, load_image
from .metrics import check_heatmap
from .regions import Region, to_mask

REGION_COLOUR = (255, 255, 255)
OTHER_REGION_COLOUR = (255, 0, 255)
PEAK_COLOUR = (255, 255, 255)
PEAK_EDGE_COLOUR = (0, 0, 0)
MIN_SIDE = 256
MAX_SIDE = 1024

Segments = tuple[list[tuple[float, float]], ...]


def _through(*anchors: tuple[float, tuple[float, float, float]]) -> Segments:
    return tuple([(stop, colour[i]) for stop, colour in anchors] for i in range(3))


_SEGMENTS: dict[str, Segments] = {
    "jet": (
        [(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)],
        [(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)],
        [(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)],
    ),
    "viridis": _through(
        (0.0, (0.267, 0.005, 0.329)),
        (0.25, (0.231, 0.322, 0.545)),
        (0.5, (0.128, 0.567, 0.551)),
        (0.75, (0.369, 0.789, 0.383)),
        (1.0, (0.993, 0.906, 0.144)),
    ),
    "magma": _through(
        (0.0, (0.001, 0.0, 0.014)),
        (0.2, (0.231, 0.059, 0.439)),
        (0.4, (0.549, 0.161, 0.506)),
        (0.6, (0.871, 0.288, 0.408)),
        (0.8, (0.996, 0.624, 0.427)),
        (1.0, (0.987, 0.991, 0.75)),
    ),
    "gray": _through((0.0, (0.0, 0.0, 0.0)), (1.0, (1.0, 1.0, 1.0))),
    "coolwarm": _through((0.0, (0.23, 0.299, 0.754)), (0.5, (0.865, 0.865, 0.865)), (1.0, (0.706, 0.016, 0.15))),
}
COLORMAPS = tuple(_SEGMENTS)


def _table(segments: Segments) -> np.ndarray:
    levels = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(levels, [s for s, _ in points], [v for _, v in points]) for points in segments]
    return np.rint(np.stack(channels, axis=1) * 255).astype(np.uint8)


_TABLES = {name: _table(segments) for name, segments in _SEGMENTS.items()}


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """RGB uint8 picture (H, W, 3) of a heatmap in [0, 1] through a 256-colour table.

    Colour maps: "jet", "viridis", "magma", "gray", and "coolwarm" (diverging, white at 0.5, for diffs).

    Example:
        >>> colorize(np.array([[0.0, 1.0]]), "gray").tolist()
        [[[0, 0, 0], [255, 255, 255]]]
    """
    if cmap not in _TABLES:
        raise CamCheckError(f"unknown colour map {cmap!r}; use one of: {', '.join(COLORMAPS)}")
    h = check_heatmap(heatmap)
    return _TABLES[cmap][np.rint(h * 255).astype(np.uint8)]


def _outline(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return find_boundaries(padded, mode="inner")[1:-1, 1:-1] | find_boundaries(mask, mode="outer")


def _paint(canvas: np.ndarray, mask: np.ndarray, scale: int, colour: tuple[int, int, int]) -> None:
    big = np.kron(mask, np.ones((scale, scale), dtype=bool)) if scale > 1 else mask
    canvas[_outline(big)] = colour


def _mark(img: Image.Image, x: float, y: float, size: int) -> None:
    draw = ImageDraw.Draw(img)
    for width, colour in ((5, PEAK_EDGE_COLOUR), (3, PEAK_COLOUR)):
        draw.line([(x - size, y), (x + size, y)], fill=colour, width=width)
        draw.line([(x, y - size), (x, y + size)], fill=colour, width=width)
        draw.ellipse([x - size, y - size, x + size, y + size], outline=colour, width=width - 2)


def overlay(
    image: ImageLike,
    heatmap: np.ndarray,
    *,
    region: Region | None = None,
    peak: tuple[int, int] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    other_region: Region | None = None,
) -> Image.Image:
    """The image blended with the coloured heatmap, region outlines and a peak marker, as an RGB PIL image.

    `image` and `heatmap` share height and width. `alpha` is the heatmap's weight (0: image only, 1:
    map only). `region` (any region `regions.to_mask` takes) is outlined in REGION_COLOUR, just inside
    and just outside its edge; `other_region` in OTHER_REGION_COLOUR; `peak` (x, y) gets a cross in a
    circle. Images whose short side is under MIN_SIDE px are enlarged by a whole factor (nearest
    neighbour, so map pixels stay sharp) to be readable, as far as the long side stays within MAX_SIDE px.

    Example:
        >>> h = np.zeros((64, 128)); h[10:20, 30:40] = 1.0
        >>> overlay(np.zeros((64, 128, 3), np.uint8), h, region=(30, 10, 40, 20), peak=(35, 15)).size
        (512, 256)
    """
    picture = load_image(image)
    h = check_heatmap(heatmap)
    if h.shape != (picture.height, picture.width):
        raise CamCheckError(
            f"the image is {picture.height}x{picture.width} (height x width) but the heatmap is "
            f"{h.shape[0]}x{h.shape[1]}. Fix: pass the ORIGINAL image the map was computed for (result.heatmap is "
            "in its pixels)"
        )
    if not 0 <= alpha <= 1:
        raise CamCheckError(f"alpha is {alpha}; pass the heatmap's weight in [0, 1] (0.5 blends evenly)")
    blend = (1 - alpha) * np.asarray(picture, dtype=np.float64) + alpha * colorize(h, cmap)
    scale = max(1, min(math.ceil(MIN_SIDE / min(h.shape)), MAX_SIDE // max(h.shape)))
    canvas = np.rint(blend).astype(np.uint8)
    if scale > 1:
        canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)
    for reg, colour in ((other_region, OTHER_REGION_COLOUR), (region, REGION_COLOUR)):
        if reg is not None:
            _paint(canvas, to_mask(reg, h.shape), scale, colour)
    out = Image.fromarray(canvas)
    if peak is not None:
        x, y = peak
        _mark(out, (x + 0.5) * scale, (y + 0.5) * scale, max(8, min(out.size) // 25))
    return out


def side_by_side(images: Sequence[Image.Image], labels: Sequence[str]) -> Image.Image:
    """Tiles in a row on white, each with its caption above, e.g. baseline / current / difference.

    Example:
        >>> tiles = [Image.new("RGB", (40, 30)), Image.new("RGB", (50, 20))]
        >>> side_by_side(tiles, ["baseline", "current"]).height > 30
        True
    """
    if len(images) != len(labels) or not images:
        raise CamCheckError(
            f"side_by_side got {len(images)} images and {len(labels)} labels; pass one label per image, at least one"
        )
    font = ImageFont.load_default()
    pad = 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), label, font=font) for label in labels]
    caption = max(b[3] for b in boxes) + 2 * pad
    widths = [max(img.width, b[2]) for img, b in zip(images, boxes)]
    width = sum(widths) + pad * (len(images) + 1)
    height = caption + max(img.height for img in images) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = pad
    for img, label, tile_width in zip(images, labels, widths):
        draw.text((x, pad), label, fill=(0, 0, 0), font=font)
        sheet.paste(img.convert("RGB"), (x, caption))
        x += tile_width + pad
    return sheet


def save_png(img: Image.Image, path: str | os.PathLike[str], *, text: dict[str, str] | None = None) -> Path:
    """Write a PNG atomically (temporary file in the same folder, then os.replace), creating parent folders; a
    path that is a symbolic link, or a folder that cannot be written, raises FileRefused (an OSError and a
    CamCheckError) naming it. ``text`` goes into PNG text chunks (e.g. ``{"Software": ...}``). Returns the
    absolute path.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     save_png(Image.new("RGB", (2, 2)), Path(tmp) / "out" / "map.png").name
        'map.png'
    """
    target = Path(path).expanduser().absolute()  # not resolve(): a link at the path is refused, never followed
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_file(target) as out:
        img.save(out, format="PNG", pnginfo=info if text else None)
    return target


PLOT_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def plot_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    x_label: str = "",
    y_range: tuple[float, float] = (0.0, 1.0),
    limit: float | None = None,
    size: tuple[int, int] = (240, 160),
) -> Image.Image:
    """A small line plot (PIL RGB image) of named curves ``{name: (xs, ys)}``: axes, y range, a dashed grey
    line at ``limit`` (a threshold), a legend. For failure pictures and the report; no plotting library needed.

    Example:
        >>> plot_curves({"map": ([0, 0.5, 1], [1.0, 0.2, 0.1])}, x_label="share deleted").size
        (240, 160)
    """
    if not series:
        raise CamCheckError("plot_curves needs at least one curve; pass {name: (xs, ys)}")
    low, high = y_range
    if not high > low:
        raise CamCheckError(f"y_range {y_range} is empty; pass (low, high) with high > low")
    width, height = size
    left, right, top, bottom = 30, 8, 8, 22
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs_all = [float(x) for xs, _ in series.values() for x in xs]
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    x1 = x1 if x1 > x0 else x0 + 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        y = min(max(y, low), high)
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                top + (high - y) / (high - low) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    for value in (low, high):
        draw.text((2, at(x0, value)[1] - 5), f"{value:g}", fill=(80, 80, 80), font=font)
    draw.text((left, height - bottom + 4), x_label, fill=(80, 80, 80), font=font)
    if limit is not None and low <= limit <= high:
        y = at(x0, limit)[1]
        for x in range(left, width - right, 6):
            draw.line([(x, y), (min(x + 3, width - right), y)], fill=(150, 150, 150))
    for k, (name, (xs, ys)) in enumerate(series.items()):
        colour = PLOT_COLOURS[k % len(PLOT_COLOURS)]
        points = [at(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(float(y))]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 1.5, py - 1.5, px + 1.5, py + 1.5], fill=colour)
        draw.text((width - right - 70, top + 2 + 11 * k), name, fill=colour, font=font)
    return img


# ------------------------------------------------------------------------------ curves of the quality checks

_Series = dict[str, tuple[list[float], list[float]]]
_Plot = tuple[_Series, dict[str, Any]]  # plot_curves' series and keywords


def _plot_values(items: Any, *, gaps: bool = False) -> list[float]:
    """Plain numbers of a recorded list (JSON: bools and strings are not numbers); with ``gaps``, None and
    non-finite values become NaN (a hole in the curve), else they raise ValueError."""
    if not isinstance(items, list) or not items:
        raise ValueError("not a non-empty list")
    out = []
    for item in items:
        if gaps and item is None:
            out.append(math.nan)
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and (gaps or math.isfinite(item)):
            out.append(float(item) if math.isfinite(item) else math.nan)
        else:
            raise ValueError(f"{item!r} is not a number")
    return out


def _limit(thresholds: dict[str, Any], name: str) -> float | None:
    """The threshold ``name`` as a finite number, or None (no limit line)."""
    value = thresholds.get(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _sane_plot(metrics: dict[str, Any], thresholds: dict[str, Any]) -> _Plot:
    """Spearman and SSIM with the original map against the number of groups randomised."""
    curve = metrics["curve"]
    if not isinstance(curve, list) or not all(isinstance(p, list) and len(p) == 4 for p in curve):
        raise ValueError("the sanity curve is not a list of [step, group, spearman, ssim]")
    steps = _plot_values([p[0] for p in curve])
    series = {name: (steps, _plot_values([p[k] for p in curve], gaps=True))
              for name, k in (("spearman", 2), ("ssim", 3))}
    return series, {"x_label": "groups randomised", "y_range": (-1.0, 1.0),
                    "limit": _limit(thresholds, "max_similarity")}


def _faithful_plot(metrics: dict[str, Any], thresholds: dict[str, Any]) -> _Plot:
    """The target's probability as shares of the pixels are deleted (inserted): the map's order and random ones."""
    curve, random = _plot_values(metrics["curve"], gaps=True), _plot_values(metrics["random_curve"], gaps=True)
    if len(curve) < 2 or len(random) != len(curve):
        raise ValueError("the curves are not two of equal length")
    shares = [k / (len(curve) - 1) for k in range(len(curve))]
    metric = metrics.get("metric")
    label = f"share of pixels ({metric[:20]})" if isinstance(metric, str) and metric else "share of pixels"
    return {"map": (shares, curve), "random": (shares, random)}, {"x_label": label, "y_range": (0.0, 1.0)}


def _stable_plot(metrics: dict[str, Any], thresholds: dict[str, Any]) -> _Plot:
    """The SSIM of each perturbed image's map with the clean map."""
    ssims = _plot_values(metrics["ssims"], gaps=True)
    return ({"ssim": (list(map(float, range(1, len(ssims) + 1))), ssims)},
            {"x_label": "perturbation", "y_range": (0.0, 1.0), "limit": _limit(thresholds, "min_similarity")})


QUALITY_CURVES: dict[str, Callable[[dict[str, Any], dict[str, Any]], _Plot]] = {
    "sane": _sane_plot, "faithful": _faithful_plot, "stable": _stable_plot,
}


def quality_curve(check: str, metrics: dict[str, Any], thresholds: dict[str, Any],
                  size: tuple[int, int] = (240, 160)) -> Image.Image:
    """The curve of an explanation-quality check ("sane", "faithful" or "stable") drawn from what it records (its
    metrics and thresholds, as in the JUnit properties and the report): for its failure picture and for the
    report. Raises ``KeyError`` / ``TypeError`` / ``ValueError`` when the metrics are not what the check records
    (an old or foreign report), or hold no finite value.

    Example:
        >>> quality_curve("stable", {"ssims": [0.99, 0.97]}, {"min_similarity": 0.95}).size
        (240, 160)
    """
    series, options = QUALITY_CURVES[check](metrics, thresholds)
    if not any(math.isfinite(y) for _, ys in series.values() for y in ys):
        raise ValueError("the curve has no finite value")
    return plot_curves(series, size=size, **options)
