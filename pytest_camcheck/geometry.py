"""Preprocessing geometry: where each pixel of the model's input tensor came from in the original image.

A preprocessing pipeline is read transform by transform. Photometric steps (ToTensor, Normalize, ...)
leave the geometry alone; Resize and CenterCrop change it in a way that can be undone exactly; anything
else (random crops, flips, random containers such as ``RandomChoice``, unknown callables) is refused, because
a map placed with a guessed geometry would be silently wrong; only torchvision's ``Compose`` and
``torch.nn.Sequential`` are opened into their steps. Steps are recognised by what they are (torchvision's v1 and
v2 classes, timm's and Hugging Face's through :mod:`pytest_camcheck.integrations`), never by their class name
alone: a class of your own called ``CenterCrop`` may crop anywhere.

:meth:`Geometry.seen` tells which original pixels the model saw (a centre crop leaves the borders out); the
region metrics judge a region on its seen part only (:func:`pytest_camcheck.metrics.measure`).

Coordinates are continuous and edge-based: pixel ``i`` covers ``[i, i + 1)``, its centre is ``i + 0.5``.
Along each axis the input coordinate ``u`` and the original coordinate ``x`` satisfy ``x = scale * u + shift``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import GeometryError

__all__ = ["Geometry", "center_crop_geometry", "describe_preprocess", "geometry_neutral", "infer_geometry"]


@dataclass(frozen=True)
class _Axis:
    scale: float
    shift: float


@dataclass(frozen=True)
class Geometry:
    """Map between the model input (``input_size``) and the original image (``image_size``), both (H, W).

    Example:
        >>> g = Geometry.identity((4, 6)).resized((8, 12))
        >>> g.input_size
        (8, 12)
        >>> g.to_image(torch.ones(1, 2, 3)).shape
        torch.Size([1, 4, 6])
    """

    image_size: tuple[int, int]
    input_size: tuple[int, int]
    y: _Axis
    x: _Axis

    @classmethod
    def identity(cls, size: tuple[int, int]) -> "Geometry":
        """Geometry of an image fed as it is. Example: ``Geometry.identity((224, 224))``."""
        return _identity(int(size[0]), int(size[1]))

    def resized(self, new_size: tuple[int, int]) -> "Geometry":
        """The geometry after resizing the current input to ``new_size`` (H, W)."""
        (h, w), (nh, nw) = self.input_size, new_size
        return Geometry(
            self.image_size,
            (int(nh), int(nw)),
            _Axis(self.y.scale * h / nh, self.y.shift),
            _Axis(self.x.scale * w / nw, self.x.shift),
        )

    def cropped(self, top: int, left: int, size: tuple[int, int]) -> "Geometry":
        """The geometry after cropping ``size`` at (top, left); negative offsets mean zero padding."""
        return Geometry(
            self.image_size,
            (int(size[0]), int(size[1])),
            _Axis(self.y.scale, self.y.shift + self.y.scale * top),
            _Axis(self.x.scale, self.x.shift + self.x.scale * left),
        )

    def is_plain_resize(self) -> bool:
        """Whether the model input is the whole image, only rescaled (no crop, no padding)."""
        (height, width), (in_h, in_w) = self.image_size, self.input_size
        return (self.y.shift == 0 and self.x.shift == 0 and abs(self.y.scale * in_h - height) < 1e-6 * height
                and abs(self.x.scale * in_w - width) < 1e-6 * width)

    def _centres(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each original row's and column's centre in input coordinates (float64)."""
        height, width = self.image_size
        ys = (torch.arange(height, device=device, dtype=torch.float64) + 0.5 - self.y.shift) / self.y.scale
        xs = (torch.arange(width, device=device, dtype=torch.float64) + 0.5 - self.x.shift) / self.x.scale
        return ys, xs

    def seen(self) -> np.ndarray:
        """Boolean (H, W) mask of the original pixels the model saw: those whose centre falls in the input.

        All True for an image fed whole (no crop, or a crop with padding); a centre crop leaves out what it cut
        off, and :meth:`to_image` gives the map 0 there.

        Example:
            >>> center_crop_geometry(Geometry.identity((2, 6)), 2).seen().astype(int)
            array([[0, 0, 1, 1, 0, 0],
                   [0, 0, 1, 1, 0, 0]])
        """
        if self.is_plain_resize():
            return np.ones(self.image_size, dtype=bool)
        rows, cols = (t.numpy() for t in self._inside())
        return rows[:, None] & cols[None, :]

    def _inside(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Which original rows and which columns have their centre in the input (each a contiguous run: the
        centres are monotonic), so the pixels the model saw are always a rectangle."""
        ys, xs = self._centres(device)
        in_h, in_w = self.input_size
        return (ys >= 0) & (ys <= in_h), (xs >= 0) & (xs <= in_w)

    def seen_box(self) -> tuple[slice, slice] | None:
        """The rows and columns of :meth:`seen` as slices, None when the model saw every pixel; empty slices when
        it saw none. Found from the rows and columns alone, without the (H, W) mask.

        Example:
            >>> center_crop_geometry(Geometry.identity((2, 6)), 2).seen_box()
            (slice(0, 2, None), slice(2, 4, None))
        """
        if self.is_plain_resize():
            return None
        rows, cols = (np.flatnonzero(t.numpy()) for t in self._inside())
        if rows.size == self.image_size[0] and cols.size == self.image_size[1]:
            return None
        if rows.size == 0 or cols.size == 0:
            return slice(0, 0), slice(0, 0)
        return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)

    def to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """Resample maps covering the model input, shape (N, h, w) at any resolution, into original pixels.

        Bilinear interpolation at each original pixel's centre; pixels the model never saw get 0.
        The result stays on the maps' device, shape (N, H, W).
        """
        n = maps.shape[0]
        height, width = self.image_size
        in_h, in_w = self.input_size
        dev, dtype = maps.device, maps.dtype if maps.is_floating_point() else torch.float32
        if self.is_plain_resize():
            # The input covers the whole image: sampling at pixel centres is exactly F.interpolate's bilinear
            # (align_corners=False, edges clamped), without building a sampling grid.
            return F.interpolate(maps[:, None].to(dtype), size=(height, width), mode="bilinear",
                                 align_corners=False)[:, 0]
        ys, xs = self._centres(dev)
        rows, cols = self._inside(dev)
        inside = rows[:, None] & cols[None, :]
        gy = (2 * ys / in_h - 1).to(dtype)
        gx = (2 * xs / in_w - 1).to(dtype)
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)
        out = F.grid_sample(
            maps[:, None].to(dtype),
            grid.expand(n, -1, -1, -1),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )[:, 0]
        return out * inside.to(dtype)


@functools.lru_cache(maxsize=64)
def _identity(height: int, width: int) -> Geometry:
    """One shared (frozen) identity geometry per size: building a frozen dataclass costs tens of microseconds,
    a noticeable share of a small model's map."""
    size = (height, width)
    return Geometry(size, size, _Axis(1.0, 0.0), _Axis(1.0, 0.0))


class _Neutral:
    """A callable the user declared as geometry-neutral (it changes colours or dtype only)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, image: Any) -> Any:
        return self.fn(image)

    def __repr__(self) -> str:
        return f"geometry_neutral({self.fn!r})"


def cropped_view(geometry: Geometry | None) -> np.ndarray | None:
    """The (H, W) mask of the original pixels the model saw (:meth:`Geometry.seen`) when it saw only part of the
    image (a centre crop), else None: what region metrics, dataset checks and quality checks restrict themselves to.

    Example:
        >>> cropped_view(Geometry.identity((2, 6))) is None, cropped_view(None) is None
        (True, True)
        >>> int(cropped_view(center_crop_geometry(Geometry.identity((2, 6)), 2)).sum())
        4
    """
    return None if geometry is None or geometry.seen_box() is None else geometry.seen()


def geometry_neutral(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Declare that ``fn`` moves no pixel (no resize, crop, pad or flip), so its geometry is the identity.

    Example:
        >>> import torchvision.transforms.functional as TF
        >>> prep = geometry_neutral(lambda im: TF.to_tensor(im) * 2 - 1)
    """
    return _Neutral(fn)


_NEUTRAL_NAMES = ("ToTensor", "PILToTensor", "ConvertImageDtype", "Normalize", "ToImage", "ToDtype", "ToPureTensor",
                  "Grayscale", "RGB", "Identity", "ToPILImage")
_GEOMETRIC_NAMES = ("Resize", "CenterCrop", "ImageClassification")


@functools.lru_cache(maxsize=None)
def _torchvision(*names: str) -> tuple[type, ...]:
    """torchvision's own classes of these names, from v1 (``torchvision.transforms``, its weights presets) and v2."""
    from torchvision import transforms as v1
    from torchvision.transforms import _presets, v2

    return tuple(getattr(m, n) for m in (v1, v2, _presets) for n in names if isinstance(getattr(m, n, None), type))


def _is_torchvision(step: Any, *names: str) -> bool:
    """Whether ``step`` is torchvision's own transform of one of ``names``: an instance whose class torchvision
    defines, so that a subclass or a look-alike of your own (whose crop may be anywhere) does not pass."""
    return type(step) in _torchvision(*names)

_RANDOM_HINT = (
    "it is random or moves pixels in a way that cannot be undone (a random container such as RandomChoice, "
    "RandomApply or RandomOrder runs a step, or an order, drawn at each call), so the map could not be placed in the "
    "original image. Fix: use your evaluation transforms (e.g. Resize + CenterCrop + ToTensor + Normalize, in "
    "torchvision's Compose); or preprocess the image yourself and pass the tensor (the heatmap then comes back at "
    "tensor size)"
)


def _resize_output_size(size_hw: tuple[int, int], size: Any, max_size: int | None) -> tuple[int, int]:
    """torchvision's rule for the output size of Resize."""
    h, w = size_hw
    if size is None:
        if max_size is None:
            raise GeometryError("Resize(size=None) needs max_size; fix the transform")
        ratio = max_size / max(h, w)
        return (int(h * ratio), int(w * ratio))
    if isinstance(size, int) or (isinstance(size, Sequence) and len(size) == 1):
        requested = size if isinstance(size, int) else size[0]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = requested, int(requested * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        return (new_h, new_w)
    return (int(size[0]), int(size[1]))


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if len(size) == 1:
        return (int(size[0]), int(size[0]))
    return (int(size[0]), int(size[1]))


def center_crop_geometry(geom: Geometry, size: Any) -> Geometry:
    """The geometry after torchvision's ``CenterCrop(size)`` (zero padding where the crop is larger, the offset
    rounded), which timm's ``CenterCropOrPad`` follows too.

    Example:
        >>> center_crop_geometry(Geometry.identity((10, 10)), 4).input_size
        (4, 4)
    """
    ch, cw = _pair(size)
    h, w = geom.input_size
    top = -((ch - h) // 2) if ch > h else int(round((h - ch) / 2.0))
    left = -((cw - w) // 2) if cw > w else int(round((w - cw) / 2.0))
    return geom.cropped(top, left, (ch, cw))


def describe_preprocess(step: Any) -> str:
    """A preprocessing step as the user would recognise it in one line: its repr when short, else its class name.

    Example:
        >>> describe_preprocess(geometry_neutral(abs))
        'geometry_neutral(<built-in function abs>)'
    """
    text = repr(step)
    return text if len(text) <= 100 and "\n" not in text else type(step).__name__


def _steps(preprocess: Any) -> list[Any]:
    """The steps of ``preprocess`` in the order they run: only torchvision's own ``Compose`` (v1, v2) and
    ``torch.nn.Sequential`` itself are opened, since they run every step in order; any other container
    (``RandomChoice``, ``RandomApply``, ``RandomOrder``, a class of your own with a ``.transforms`` list) is one step,
    refused by :func:`infer_geometry` because which of its steps run, and in which order, cannot be known."""
    if _is_torchvision(preprocess, "Compose"):
        return [s for t in preprocess.transforms for s in _steps(t)]
    if type(preprocess) is torch.nn.Sequential:
        return [s for t in preprocess for s in _steps(t)]
    return [preprocess]


def infer_geometry(preprocess: Any, image_size: tuple[int, int]) -> Geometry:
    """Read the geometry of ``preprocess`` applied to an image of ``image_size`` (H, W).

    Understands torchvision v1 and v2 ``Compose`` and ``torch.nn.Sequential`` (the only containers opened, as they
    run every step in order: ``RandomChoice``, ``RandomApply``, ``RandomOrder`` and containers of your own with a
    ``.transforms`` list are refused), ``Resize`` (int or (h, w), ``max_size``), ``CenterCrop``, photometric
    steps, the weights presets (``ResNet18_Weights.DEFAULT.transforms()``), and through
    :mod:`pytest_camcheck.integrations` timm's eval transforms and Hugging Face image processors. A step is known by
    its class (torchvision's own, not a subclass or a class of the same name); any other step raises a
    :class:`~pytest_camcheck.errors.GeometryError` naming it and the fix.

    Example:
        >>> from torchvision import transforms as T
        >>> g = infer_geometry(T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]), (300, 400))
        >>> g.input_size
        (224, 224)
    """
    from .integrations import adapt_preprocess, step_geometry

    geom = Geometry.identity(image_size)
    if preprocess is None:
        return geom
    for step in _steps(adapt_preprocess(preprocess)):
        name = type(step).__name__
        if isinstance(step, _Neutral) or _is_torchvision(step, *_NEUTRAL_NAMES) or type(step) is torch.nn.Identity:
            continue
        if _is_torchvision(step, "ImageClassification"):
            resize = step.resize_size
            if resize is not None:
                geom = geom.resized(_resize_output_size(geom.input_size, resize, None))
            geom = center_crop_geometry(geom, step.crop_size)
        elif _is_torchvision(step, "Resize"):
            geom = geom.resized(_resize_output_size(geom.input_size, step.size, getattr(step, "max_size", None)))
        elif _is_torchvision(step, "CenterCrop"):
            geom = center_crop_geometry(geom, step.size)
        elif name.startswith("Random") or name in {"ColorJitter", "GaussianBlur", "AutoAugment", "RandAugment",
                                                  "TrivialAugmentWide", "AugMix", "ElasticTransform"}:
            raise GeometryError(f"preprocess step {name} cannot be used to explain a model: {_RANDOM_HINT}")
        elif (moved := step_geometry(step, geom)) is not None:
            geom = moved
        else:
            raise GeometryError(_unknown_step(step))
    return geom


def _unknown_step(step: Any) -> str:
    cls = type(step)
    # a class of your own named like torchvision's (an albumentations-style CenterCrop, a Resize taking (w, h)), or
    # derived from it, is not trusted to move pixels as torchvision's does
    known = (*_NEUTRAL_NAMES, *_GEOMETRIC_NAMES, "Compose")
    base = next((c for c in cls.__mro__[1:] if c in (*_torchvision(*known), torch.nn.Sequential)), None)
    inner = getattr(step, "transforms", None)
    if base is not None or cls.__name__ in known:
        owner = "torch.nn." if base is torch.nn.Sequential else "torchvision's "
        problem = (f"preprocess step {describe_preprocess(step)} is {cls.__module__}.{cls.__qualname__}, "
                   f"{'a subclass of' if base else 'not'} {owner}{(base or cls).__name__}, so where it moves "
                   "pixels cannot be known")
    elif isinstance(inner, (list, tuple)):
        problem = (f"preprocess step {describe_preprocess(step)} is a container of its own "
                   f"({cls.__module__}.{cls.__qualname__}, not torchvision's Compose or torch.nn.Sequential), so "
                   f"which of its {len(inner)} steps run, and in which order, cannot be known")
    else:
        problem = f"cannot tell where preprocess step {describe_preprocess(step)} moves pixels"
    return (
        f"{problem}, and the heatmap could not be placed in the original image. Fix: build preprocess from "
        "torchvision's own Resize / CenterCrop / ToTensor / Normalize (torchvision.transforms or "
        "torchvision.transforms.v2, or a weights preset); or wrap a step that only changes colours or dtype with "
        "pytest_camcheck.geometry_neutral(fn); or preprocess the image yourself and pass the tensor (the heatmap "
        "then comes back at tensor size)"
    )
