"""Synthetic scenes whose object positions are known exactly: the data of the bundled models.

Each scene is an RGB image of its own size (short side 96-160 px, width / height 0.6-1.7) with a cluttered
background (a patchwork of colour regions, stripes, lines and pixel noise) and one or two shapes of the
classes in :data:`CLASSES`, at random positions, scales (14%-46% of the short side), rotations and colours.
Every object comes with its exact mask and the tight box around it.

Kinds:

- ``"single"``: one object; the scene's label is its class.
- ``"pair"``: two objects of different classes whose boxes are apart; the label is the first object's class.
- ``"shortcut"``: one object, plus a watermark in the bottom-right corner: a white-framed square whose
  colour (:data:`WATERMARK_COLOURS`) codes the label, as does the object's class. ``cue`` (:data:`CUES`) can
  leave the label to one of them: ``"watermark"`` draws the object's class independently of the label, so
  only the watermark predicts it (what the shortcut model learns from); ``"object"`` draws the watermark's
  colour independently, so it is noise to ignore (part of what the clean model learns from).

Seeds: the same ``(seed, kind, cue)`` always gives the same pixels. Training uses seeds below
:data:`HELD_OUT` (1_000_000); tests and measurements use seeds from :data:`HELD_OUT` up, which no bundled
model has seen.

Example:
    >>> s = make_scene(HELD_OUT, "pair")
    >>> s.image.dtype, len(s.objects), s.label == s.objects[0].label
    (dtype('uint8'), 2, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from skimage.measure import points_in_poly

from .errors import CamCheckError

__all__ = ["CLASSES", "CUES", "HELD_OUT", "KINDS", "WATERMARK_COLOURS", "Scene", "SceneObject", "make_scene"]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
KINDS: tuple[str, ...] = ("single", "pair", "shortcut")
CUES: tuple[str, ...] = ("both", "watermark", "object")
HELD_OUT = 1_000_000
WATERMARK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 25), (25, 200, 25), (30, 60, 240), (250, 230, 20), (230, 30, 230), (20, 220, 230),
)

_SHORT_SIDE = (96, 160)
_ASPECT = (0.6, 1.7)
_SCALE = (0.14, 0.46)
_PAIR_SCALE = (0.14, 0.34)
_PAIR_GAP = 4
_WATERMARK_GAP = 24
_MIN_CONTRAST = 90.0
_CLUTTER_CONTRAST = (0.25, 1.0)


@dataclass(eq=False)
class SceneObject:
    """One object of a scene: class index and name, tight box ``(x0, y0, x1, y1)`` (pixels, x right, y down,
    end exclusive) and boolean mask of the image's shape.

    Example:
        >>> obj = make_scene(HELD_OUT).objects[0]
        >>> x0, y0, x1, y1 = obj.box
        >>> bool(obj.mask[y0:y1, x0:x1].sum() == obj.mask.sum())
        True
    """

    label: int
    name: str
    box: tuple[int, int, int, int]
    mask: np.ndarray


@dataclass(eq=False)
class Scene:
    """An image (uint8, H x W x 3), its objects, the class it is labelled with, and the watermark's box
    (``None`` unless the kind is ``"shortcut"``).

    Example:
        >>> s = make_scene(HELD_OUT + 1, "shortcut")
        >>> s.watermark_box is not None, s.name == CLASSES[s.label]
        (True, True)
    """

    image: np.ndarray
    objects: list[SceneObject]
    label: int
    watermark_box: tuple[int, int, int, int] | None
    kind: str
    seed: int

    @property
    def name(self) -> str:
        """Name of the scene's label."""
        return CLASSES[self.label]


def make_scene(seed: int, kind: str = "single", *, cue: str = "both") -> Scene:
    """Draw the scene of ``seed`` and ``kind`` ("single", "pair" or "shortcut").

    ``cue`` (shortcut only): which part shows the label, "both" (object and watermark), "watermark" (the
    object's class is independent of the label) or "object" (the watermark's colour is independent of it).

    Example:
        >>> a, b = make_scene(1_000_123), make_scene(1_000_123)
        >>> bool((a.image == b.image).all()), a.objects[0].box == b.objects[0].box
        (True, True)
    """
    if kind not in KINDS:
        raise CamCheckError(f"unknown scene kind {kind!r}; use one of: {', '.join(KINDS)}")
    if cue not in CUES:
        raise CamCheckError(f"unknown cue {cue!r}; use one of: {', '.join(CUES)}")
    if cue != "both" and kind != "shortcut":
        raise CamCheckError(f"cue={cue!r} only applies to kind='shortcut', not {kind!r}; drop it or change the kind")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CamCheckError(f"seed must be a non-negative integer, not {seed!r}")
    rng = np.random.default_rng([int(seed), KINDS.index(kind), CUES.index(cue)])
    height, width = _image_size(rng)
    image = _background(rng, height, width)
    short = min(height, width)

    watermark = None
    if kind == "shortcut":
        side = int(np.clip(round(0.12 * short), 12, 18))
        margin = round(0.1 * short)
        watermark = (width - margin - side, height - margin - side, width - margin, height - margin)

    n_objects = 2 if kind == "pair" else 1
    classes = [int(c) for c in rng.choice(len(CLASSES), size=n_objects, replace=False)]
    label = classes[0]
    if cue == "watermark":
        classes = [int(rng.integers(len(CLASSES)))]
    code = int(rng.integers(len(CLASSES))) if cue == "object" else label
    scale = _PAIR_SCALE if kind == "pair" else _SCALE
    radii = [0.5 * short * float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1])))) for _ in classes]
    centres = _place(rng, height, width, radii, watermark)

    objects = []
    for cls, radius, (cx, cy) in zip(classes, radii, centres):
        mask = _shape_mask(CLASSES[cls], height, width, cx, cy, radius, rng.uniform(0, 2 * np.pi))
        _paint_object(rng, image, mask, radius)
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(SceneObject(cls, CLASSES[cls], box, mask))
    if watermark is not None:
        _paint_watermark(image, watermark, WATERMARK_COLOURS[code])
    return Scene(_finish(image), objects, label, watermark, kind, int(seed))


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.integers(_SHORT_SIDE[0], _SHORT_SIDE[1] + 1))
    aspect = float(np.exp(rng.uniform(np.log(_ASPECT[0]), np.log(_ASPECT[1]))))
    if aspect >= 1:
        return short, int(round(short * aspect))
    return int(round(short / aspect)), short


def _smooth_noise(rng: np.random.Generator, height: int, width: int, channels: int, cells: int) -> np.ndarray:
    grid = rng.random((cells, max(2, round(cells * width / height)), channels)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(grid[..., c]).resize((width, height), Image.Resampling.BICUBIC))
              for c in range(channels)]
    return np.stack(planes, axis=-1)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Soft-edged patchwork of colour regions, stripes and lines at a random contrast, then pixel noise
    (float32, H x W x 3)."""
    regions = int(rng.integers(4, 9))
    field = _smooth_noise(rng, height, width, regions, int(rng.integers(4, 9))) * rng.uniform(6, 14)
    weights = np.exp(field - field.max(axis=-1, keepdims=True))
    palette = rng.integers(0, 256, size=(regions, 3)).astype(np.float32)
    image = (weights / weights.sum(axis=-1, keepdims=True)) @ palette
    image += _smooth_noise(rng, height, width, 3, int(rng.integers(2, 5))) * 60 - 30

    for _ in range(int(rng.integers(0, 3))):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 14)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
        stripes = (np.sin(2 * np.pi * phase) > rng.uniform(-0.5, 0.5)).astype(np.float32)
        region = _smooth_noise(rng, height, width, 1, 3)[..., 0] > rng.uniform(0.3, 0.6)
        alpha = rng.uniform(0.3, 0.8) * stripes * region
        image = image * (1 - alpha[..., None]) + _random_colour(rng) * alpha[..., None]

    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(4, 14))):
        x0, x1 = rng.uniform(-0.2, 1.2, size=2) * width
        y0, y1 = rng.uniform(-0.2, 1.2, size=2) * height
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in _random_colour(rng)),
                  width=int(rng.integers(1, 4)))
    image = np.asarray(picture, dtype=np.float32)
    mean = image.mean(axis=(0, 1))
    image = mean + (image - mean) * rng.uniform(*_CLUTTER_CONTRAST)
    return image + rng.normal(0, rng.uniform(8, 18), size=image.shape).astype(np.float32)


def _place(rng: np.random.Generator, height: int, width: int, radii: list[float],
           watermark: tuple[int, int, int, int] | None) -> list[tuple[float, float]]:
    """Centres such that every object's circumscribed box lies inside the image, apart from the others and
    from the watermark."""
    for _ in range(200):
        centres: list[tuple[float, float]] = []
        for radius in radii:
            cx = rng.uniform(radius + 1, width - radius - 1)
            cy = rng.uniform(radius + 1, height - radius - 1)
            if watermark is not None and _boxes_near((cx, cy, radius), watermark, _WATERMARK_GAP):
                break
            if any(_boxes_near((cx, cy, radius), _circle_box(c, r), _PAIR_GAP) for c, r in zip(centres, radii)):
                break
            centres.append((cx, cy))
        if len(centres) == len(radii):
            return centres
        radii[:] = [0.95 * r for r in radii]
    raise RuntimeError("no placement found for the scene's objects")


def _circle_box(centre: tuple[float, float], radius: float) -> tuple[float, float, float, float]:
    return (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius)


def _boxes_near(circle: tuple[float, float, float], box: tuple[float, float, float, float], gap: float) -> bool:
    x0, y0, x1, y1 = _circle_box(circle[:2], circle[2])
    return x0 < box[2] + gap and box[0] < x1 + gap and y0 < box[3] + gap and box[1] < y1 + gap


def _polygon(name: str, radius: float) -> np.ndarray:
    """Vertices (x, y) around the origin of the polygonal shapes, circumradius ``radius``."""
    if name == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if name == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if name == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
        return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)
    arm, half = 0.95 * radius, 0.3 * radius
    return np.array([(half, -arm), (half, -half), (arm, -half), (arm, half), (half, half), (half, arm),
                     (-half, arm), (-half, half), (-arm, half), (-arm, -half), (-half, -half), (-half, -arm)])


def _shape_mask(name: str, height: int, width: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Pixels whose centre lies inside the shape."""
    x0, x1 = max(0, int(cx - radius) - 1), min(width, int(cx + radius) + 2)
    y0, y1 = max(0, int(cy - radius) - 1), min(height, int(cy + radius) + 2)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u, v = xs + 0.5 - cx, ys + 0.5 - cy
    if name in ("circle", "ring"):
        r = np.hypot(u, v)
        inside = (r <= radius) & (r >= 0.55 * radius if name == "ring" else True)
    else:
        c, s = np.cos(angle), np.sin(angle)
        points = np.stack([c * u + s * v, -s * u + c * v], axis=-1).reshape(-1, 2)
        inside = points_in_poly(points, _polygon(name, radius)).reshape(u.shape)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = inside
    return mask


def _paint_object(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, radius: float) -> None:
    """Flat colour with a light texture and a dark or light outline, far enough in colour from the background
    it covers."""
    under = image[mask].mean(axis=0)
    colour = _random_colour(rng)
    for _ in range(20):
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
        colour = _random_colour(rng)
    else:
        colour = np.where(under > 127, 0.0, 255.0).astype(np.float32)
    texture = rng.normal(0, 4, size=(int(mask.sum()), 3)).astype(np.float32)
    image[mask] = colour + texture
    edge = mask & ~_erode(mask, 1 if radius < 14 else 2)
    image[edge] = colour * 0.3 if rng.random() < 0.5 else 255 - (255 - colour) * 0.3


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask


def _paint_watermark(image: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255.0
    image[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = colour


def _finish(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
