"""Regions of an image (boxes, relative boxes, boolean masks) and their boolean masks in image pixels.

Coordinates are ORIGINAL image pixels: x to the right, y down, the top-left corner of the image at
(0, 0). A box (x0, y0, x1, y1) spans x0 <= x < x1 and y0 <= y < y1. Pixel (column i, row j) covers
the square [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5).

Image sizes are given as (height, width), numpy's order, not PIL's (width, height).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from .errors import RegionError, UnseenRegionError

_NAMES = ("x0", "y0", "x1", "y1")
_BOX_FORMAT = "(x0, y0, x1, y1) in pixels, x to the right, y down, x1/y1 exclusive"


def _number(name: str, value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RegionError(
            f"{what} coordinate {name}={value!r} ({type(value).__name__}) is not a number. "
            f"Fix: pass four numbers {_BOX_FORMAT}"
        )
    if not math.isfinite(value):
        raise RegionError(f"{what} coordinate {name} is {value}; pass finite numbers {_BOX_FORMAT}")


def _fmt(value: float) -> str:
    return f"{value:g}"


def _check_size(image_size: Any) -> tuple[int, int]:
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        raise RegionError(
            f"image_size {image_size!r} is not a (height, width) pair of positive integers. "
            "Fix: pass (height, width), e.g. array.shape[:2] or (pil_image.height, pil_image.width)"
        )
    return int(image_size[0]), int(image_size[1])


@dataclass(frozen=True)
class Box:
    """A rectangle in original-image pixels: x0 <= x < x1, y0 <= y < y1 (x to the right, y down).

    Coordinates may be fractional; see `to_mask` for which pixels a box contains.

    Example:
        >>> box = Box(10, 20, 50, 80)
        >>> box.width, box.height, box.area
        (40, 60, 2400)
    """

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        for name in _NAMES:
            _number(name, getattr(self, name), "Box")
        for lo, hi in (("x0", "x1"), ("y0", "y1")):
            if getattr(self, hi) <= getattr(self, lo):
                raise RegionError(
                    f"Box ({_fmt(self.x0)}, {_fmt(self.y0)})-({_fmt(self.x1)}, {_fmt(self.y1)}) is inverted or empty: "
                    f"{hi} ({_fmt(getattr(self, hi))}) must be greater than {lo} ({_fmt(getattr(self, lo))}). "
                    f"Fix: pass {_BOX_FORMAT}; from (x, y, width, height) use Box(x, y, x + width, y + height)"
                )

    @property
    def width(self) -> float:
        """x1 - x0, in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """y1 - y0, in pixels."""
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        """width * height, in square pixels."""
        return self.width * self.height

    @staticmethod
    def relative(fx0: float, fy0: float, fx1: float, fy1: float) -> RelativeBox:
        """A box in fractions of the image width (x) and height (y), resolved once the image size is known.

        Example:
            >>> Box.relative(0.25, 0, 0.75, 0.5).resolve((100, 200))
            Box(x0=50.0, y0=0.0, x1=150.0, y1=50.0)
        """
        return RelativeBox(fx0, fy0, fx1, fy1)

    def resolve(self, image_size: tuple[int, int]) -> Box:
        """The box in pixels: a Box is already in pixels, so it is returned as is.

        Example:
            >>> Box(1, 2, 3, 4).resolve((10, 10))
            Box(x0=1, y0=2, x1=3, y1=4)
        """
        return self

    def clip(self, image_size: tuple[int, int]) -> Box:
        """The part of the box inside an image of size (height, width).

        Example:
            >>> Box(-10, 5, 30, 500).clip((100, 200))
            Box(x0=0, y0=5, x1=30, y1=100)
        """
        h, w = _check_size(image_size)
        _check_overlap(self, h, w)
        return Box(max(self.x0, 0), max(self.y0, 0), min(self.x1, w), min(self.y1, h))


@dataclass(frozen=True)
class RelativeBox:
    """A box in fractions of the image size: fx along the width, fy along the height, each in [0, 1].

    Example:
        >>> RelativeBox(0, 0, 0.5, 0.5).resolve((30, 50))
        Box(x0=0.0, y0=0.0, x1=25.0, y1=15.0)
    """

    fx0: float
    fy0: float
    fx1: float
    fy1: float

    def __post_init__(self) -> None:
        for name in ("fx0", "fy0", "fx1", "fy1"):
            _number(name, getattr(self, name), "relative box")
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise RegionError(
                    f"relative box fraction {name}={_fmt(value)} is outside [0, 1]. Fix: pass fractions of the image "
                    "width and height between 0 and 1, or use Box(x0, y0, x1, y1) for pixels"
                )
        for lo, hi in (("fx0", "fx1"), ("fy0", "fy1")):
            if getattr(self, hi) <= getattr(self, lo):
                raise RegionError(
                    f"relative box ({_fmt(self.fx0)}, {_fmt(self.fy0)})-({_fmt(self.fx1)}, {_fmt(self.fy1)}) is "
                    f"inverted or empty: {hi} must be greater than {lo}. Fix: pass (fx0, fy0, fx1, fy1) with "
                    "fx0 < fx1 and fy0 < fy1"
                )

    def resolve(self, image_size: tuple[int, int]) -> Box:
        """The box in pixels of an image of size (height, width).

        Example:
            >>> RelativeBox(0.1, 0.5, 0.2, 1.0).resolve((10, 100))
            Box(x0=10.0, y0=5.0, x1=20.0, y1=10.0)
        """
        h, w = _check_size(image_size)
        return Box(float(self.fx0) * w, float(self.fy0) * h, float(self.fx1) * w, float(self.fy1) * h)


Region = Union[Box, RelativeBox, tuple, list, np.ndarray, torch.Tensor]


def _plain(region: Any) -> Any:
    """A 1-D tensor is a box given as a tensor, (x0, y0, x1, y1); a meta tensor has no values to use."""
    if isinstance(region, torch.Tensor):
        if region.device.type == "meta":
            raise RegionError(
                f"the region is a tensor on the meta device (shape {tuple(region.shape)}, no values). Fix: pass a "
                "box (x0, y0, x1, y1) or a boolean mask with data"
            )
        if region.dim() == 1:
            return region.detach().cpu().tolist()
    return region


def _as_box(region: Any) -> Box | RelativeBox:
    region = _plain(region)
    if isinstance(region, (Box, RelativeBox)):
        return region
    if isinstance(region, np.ndarray) and region.ndim == 1:
        region = region.tolist()
    if isinstance(region, (tuple, list)):
        if len(region) != 4:
            raise RegionError(
                f"region {tuple(region)!r} has {len(region)} values; a box needs 4: {_BOX_FORMAT}. "
                "Fix: pass (x0, y0, x1, y1), Box(...), or a boolean mask of the image's shape"
            )
        return Box(*region)
    raise RegionError(
        f"region of type {type(region).__name__} is not understood. Fix: pass (x0, y0, x1, y1), Box(...), "
        "Box.relative(...), or a boolean mask (numpy array or torch tensor) of shape (height, width)"
    )


def _check_overlap(box: Box, h: int, w: int) -> None:
    if box.x1 <= 0 or box.y1 <= 0 or box.x0 >= w or box.y0 >= h:
        raise RegionError(
            f"{describe(box)} lies entirely outside the image of {w}x{h} px (width x height). Fix: give the box in "
            "ORIGINAL image pixels (x to the right, y down), not in model-input pixels or (row, column) order"
        )


def _axis(lo: float, hi: float, size: int) -> slice:
    lo, hi = round(lo, 9), round(hi, 9)
    start, stop = math.ceil(lo - 0.5), math.ceil(hi - 0.5)
    if stop <= start:
        start = min(max(math.floor((lo + hi) / 2), 0), size - 1)
        stop = start + 1
    return slice(start, stop)


def _box_mask(box: Box, h: int, w: int) -> np.ndarray:
    _check_overlap(box, h, w)
    if box.x0 < 0 or box.y0 < 0 or box.x1 > w or box.y1 > h:
        raise RegionError(
            f"{describe(box)} reaches outside the image of {w}x{h} px (width x height; x in [0, {w}], y in [0, {h}]). "
            f"Fix: correct the box, or keep the part inside with box.clip(({h}, {w}))"
        )
    mask = np.zeros((h, w), dtype=bool)
    mask[_axis(box.y0, box.y1, h), _axis(box.x0, box.x1, w)] = True
    return mask


def _wrong_shape(shape: tuple[int, ...], h: int, w: int, orientation: int | None) -> str:
    """The fix for a mask of another shape than the image's: a mask of the image's size turned by 90 degrees was
    built from an EXIF-turned photo's stored pixels (or in (width, height) order), and resizing it would be wrong."""
    problem = f"mask has shape {shape} but the image is {(h, w)} (height, width)"
    if shape != (w, h) or h == w:
        return (f"{problem}. Fix: build the mask at the ORIGINAL image's size (resize it with nearest neighbour), "
                "or pass a Box")
    if orientation in (5, 6, 7, 8):
        return (f"{problem}: the image has EXIF orientation {orientation}, so it is shown turned by 90 degrees "
                f"({w}x{h} px, width x height) and maps and regions are in the pixels as shown, while the mask has "
                "the size of the stored, unturned pixels (np.asarray(img) of the opened file gives those). Fix: build "
                "the mask from PIL.ImageOps.exif_transpose(img), the image as shown; resizing this mask would not "
                "turn it")
    return (f"{problem}, the image's size turned by 90 degrees. Fix: if the image is a photo with an EXIF orientation "
            "(shown turned), the mask was built from its stored pixels (np.asarray(img)): build it from "
            "PIL.ImageOps.exif_transpose(img), the image as shown, in which maps and regions are; if the mask was "
            "made in (width, height) order, make it (height, width). Resizing it would not turn it")


def _array_mask(region: np.ndarray | torch.Tensor, h: int, w: int, orientation: int | None = None) -> np.ndarray:
    if isinstance(region, torch.Tensor):
        if region.dtype != torch.bool:
            raise RegionError(
                f"mask tensor has dtype {region.dtype}, not torch.bool. Fix: convert it, e.g. mask > 0.5 "
                "or mask.bool()"
            )
        region = region.detach().cpu().numpy()
    if region.dtype != np.bool_:
        raise RegionError(
            f"mask array has dtype {region.dtype}, not bool. Fix: convert it, e.g. mask > 0 or mask.astype(bool)"
        )
    if region.shape != (h, w):
        raise RegionError(_wrong_shape(tuple(region.shape), h, w, orientation))
    return np.array(region, dtype=bool, copy=True)


def to_mask(region: Region, image_size: tuple[int, int], *, orientation: int | None = None) -> np.ndarray:
    """The boolean mask (height, width) of the pixels a region covers in an image of size (height, width).

    `region` is (x0, y0, x1, y1), a `Box`, a `RelativeBox` (`Box.relative(...)`), or a boolean numpy
    array / torch tensor of shape (height, width); masks are returned as a copy. Like maps, regions are in the
    pixels as shown: for a photo with an EXIF orientation, build a mask from ``PIL.ImageOps.exif_transpose(img)``,
    not from the stored pixels (``np.asarray(img)``). ``orientation`` (``CamResult.orientation``), when given,
    lets the error for a mask of the stored, unturned size say so for certain.

    A box contains the pixels whose CENTRE (i + 0.5, j + 0.5) lies inside it, x0 <= i + 0.5 < x1 and
    y0 <= j + 0.5 < y1, so integer boxes contain exactly columns x0..x1-1 and rows y0..y1-1, and
    boxes that share an edge share no pixel. A box thinner than a pixel along an axis contains, along
    that axis, the pixel under its centre.

    Raises RegionError for a box outside or partly outside the image (see `Box.clip`), a mask of the
    wrong shape or dtype, and a region that covers no pixel or every pixel (a region covering the whole
    image leaves nothing to compare attention against).

    Example:
        >>> m = to_mask((1, 0, 3, 2), (3, 4))
        >>> m.astype(int)
        array([[0, 1, 1, 0],
               [0, 1, 1, 0],
               [0, 0, 0, 0]])
        >>> int(to_mask(Box(1.4, 0.2, 1.6, 0.3), (3, 4)).sum())
        1
        >>> try:
        ...     to_mask(np.ones((4, 3), bool), (3, 4), orientation=6)
        ... except RegionError as err:
        ...     print(str(err).split(", so")[0])
        mask has shape (4, 3) but the image is (3, 4) (height, width): the image has EXIF orientation 6
    """
    h, w = _check_size(image_size)
    region = _plain(region)
    if isinstance(region, torch.Tensor) or (isinstance(region, np.ndarray) and region.ndim != 1):
        mask = _array_mask(region, h, w, orientation)
    else:
        mask = _box_mask(_as_box(region).resolve((h, w)), h, w)
    if not mask.any():
        raise RegionError(
            "the region mask selects no pixel. Fix: check how the mask was made (e.g. its threshold); a region "
            "needs at least one pixel"
        )
    if mask.all():
        raise UnseenRegionError(
            f"the region covers the whole image ({w}x{h} px): its chance level is 100% and every map puts all of "
            "its energy inside, so attention cannot be measured against chance. Fix: pass a region smaller than "
            "the image", "covers the whole image")
    return mask


def describe(region: Region) -> str:
    """Short human text for a region, for failure messages and reports.

    Example:
        >>> describe((10, 20, 50, 80))
        'box (10, 20)-(50, 80), 40x60 px'
        >>> describe(Box.relative(0, 0, 0.5, 1))
        'relative box (0, 0)-(0.5, 1) of the image'
    """
    if isinstance(region, RelativeBox):
        return (
            f"relative box ({_fmt(region.fx0)}, {_fmt(region.fy0)})-({_fmt(region.fx1)}, {_fmt(region.fy1)}) "
            "of the image"
        )
    region = _plain(region)
    if isinstance(region, torch.Tensor):
        region = region.detach().cpu().numpy()
    if isinstance(region, np.ndarray) and region.ndim != 1:
        ys, xs = np.nonzero(region)
        if not len(xs):
            return f"empty mask of shape {tuple(region.shape)}"
        return (
            f"mask of {len(xs)} px within ({xs.min()}, {ys.min()})-({xs.max() + 1}, {ys.max() + 1}) "
            f"of a {region.shape[1]}x{region.shape[0]} px image"
        )
    box = _as_box(region)
    return (
        f"box ({_fmt(box.x0)}, {_fmt(box.y0)})-({_fmt(box.x1)}, {_fmt(box.y1)}), "
        f"{_fmt(box.width)}x{_fmt(box.height)} px"
    )
