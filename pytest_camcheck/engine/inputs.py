"""Turning what the user hands over (images, paths, arrays, tensors) into one input batch and its geometries."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from ..errors import CamCheckWarning, InputError, MixedSizesError
from ..geometry import Geometry, infer_geometry
from ..integrations import adapt_preprocess


@dataclass
class Batch:
    """The model input, one geometry per image, the original pictures (None for tensors), whether the
    caller handed over several images, and the EXIF orientation applied to each picture (1: none)."""

    x: torch.Tensor
    geometries: list[Geometry]
    pictures: list[Image.Image | None]
    batched: bool
    orientations: list[int] = field(default_factory=list)


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element is finite. A NaN or infinity makes the sum non-finite, so a finite sum settles it
    at the cost of one reduction; only a non-finite sum (possibly overflow) takes the element-wise check."""
    if t.numel() == 0:
        return True
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _is_single(image: Any) -> bool:
    if isinstance(image, torch.Tensor):
        return image.dim() != 4
    return not isinstance(image, (list, tuple))


def _check_tensor(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.device.type == "meta":
        raise InputError(
            f"{what} is a tensor on the meta device: it has a shape {tuple(t.shape)} but no values. Fix: pass a "
            "tensor with data (e.g. torch.rand(3, 224, 224)) or the image itself"
        )
    if t.dim() != 3:
        raise InputError(
            f"{what} has shape {tuple(t.shape)}; expected (C, H, W) for one image or (N, C, H, W) for a batch. "
            "Fix: add or remove a batch dimension (t.unsqueeze(0) / t[0])"
        )
    if not t.is_floating_point():
        raise InputError(
            f"{what} has dtype {t.dtype}; a preprocessed tensor must be floating point. Fix: pass the PIL image or "
            "array with preprocess=..., or convert the tensor (e.g. t.float() / 255 and normalise as the model expects)"
        )
    if t.shape[-1] == 0 or t.shape[-2] == 0 or t.shape[0] == 0:
        raise InputError(f"{what} is empty (shape {tuple(t.shape)}); pass an image with pixels")
    if not all_finite(t):
        raise InputError(f"{what} contains NaN or infinite values; fix the image or the preprocessing")
    return t


LARGE_INPUT = 4_000_000  # pixels


def _one(image: Any, preprocess: Callable | None, explicit: bool, index: int
         ) -> tuple[torch.Tensor, Geometry, Image.Image | None, int]:
    what = "the image" if index < 0 else f"image {index} of the batch"
    if isinstance(image, torch.Tensor):
        t = _check_tensor(image.detach(), what)
        if explicit and preprocess is not None:
            geometry = infer_geometry(preprocess, tuple(t.shape[-2:]))
            t = _check_tensor(_apply(preprocess, t, what), f"{what} after preprocess")
            return _sized(t, geometry), geometry, None, 1
        return t, Geometry.identity(tuple(t.shape[-2:])), None, 1
    from ..images import load_image_oriented

    picture, orientation = load_image_oriented(image)
    geometry = infer_geometry(preprocess, (picture.height, picture.width))
    t = TF.to_tensor(picture) if preprocess is None else _apply(preprocess, picture, what)
    if not isinstance(t, torch.Tensor):
        raise InputError(
            f"preprocess returned {type(t).__name__} for {what}, not a tensor. Fix: end the preprocessing with "
            "ToTensor() (v1) or ToImage() + ToDtype(torch.float32, scale=True) (v2)"
        )
    t = _sized(_check_tensor(t, f"{what} after preprocess"), geometry)
    h, w = t.shape[-2:]
    if h * w > LARGE_INPUT and (h, w) == (picture.height, picture.width):
        warnings.warn(CamCheckWarning(
            f"{what} goes to the model at its full {w}x{h} px ({h * w / 1e6:.1f} megapixels): no preprocessing "
            "resized it, which is slow and memory-hungry and not what a classifier was trained on. Fix: pass "
            "preprocess=... with Resize (e.g. the weights' transforms()), or downscale the image"), stacklevel=4)
    return t, geometry, picture, orientation


def _sized(t: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``t`` when its size is the one the geometry read from the transforms describes (a second check that the
    map will land where the pixels came from)."""
    if tuple(t.shape[-2:]) != geometry.input_size:
        raise InputError(
            f"preprocess produced a tensor of size {tuple(t.shape[-2:])} but its transforms describe "
            f"{geometry.input_size}; the map could not be placed reliably. Fix: use torchvision's own Resize/CenterCrop"
        )
    return t


def _apply(preprocess: Callable, image: Any, what: str) -> Any:
    try:
        return preprocess(image)
    except Exception as err:
        raise InputError(f"preprocess failed on {what}: {err}. Fix the preprocessing or the image") from err


def _tensor_batch(image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> Batch:
    """An (N, C, H, W) tensor fed as it is: checked as a whole (one reduction), and image by image only to name
    the first bad image. The model gets a copy, so the caller's tensor is never written to."""
    t = image.detach()
    if t.device.type == "meta":
        _check_tensor(t[0], "image 0 of the batch")
    if not all_finite(t) or not t.is_floating_point() or 0 in t.shape:
        for i, item in enumerate(t):
            _check_tensor(item, f"image {i} of the batch")
    x = t.to(device=device, dtype=dtype, copy=True)
    geometry = Geometry.identity(tuple(t.shape[-2:]))
    n = t.shape[0]
    return Batch(x, [geometry] * n, [None] * n, True, [1] * n)


def prepare(image: Any, preprocess: Callable | None, *, explicit_preprocess: bool, device: torch.device,
            dtype: torch.dtype) -> Batch:
    """Build the input batch: one image, a list of images, or a tensor of shape (C,H,W) / (N,C,H,W). A Hugging Face
    image processor as ``preprocess`` gives each image's ``pixel_values``."""
    preprocess = adapt_preprocess(preprocess)
    single = _is_single(image)
    if isinstance(image, torch.Tensor) and image.dim() == 4 and not explicit_preprocess and image.shape[0] > 0:
        return _tensor_batch(image, device, dtype)
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        items: Sequence[Any] = list(image)
    elif isinstance(image, (list, tuple)):
        items = list(image)
    elif isinstance(image, (str, Path, Image.Image, np.ndarray, torch.Tensor)):
        items = [image]
    else:
        raise InputError(
            f"image of type {type(image).__name__} is not understood; pass a PIL image, an HxWx3 uint8 array, "
            "a file path, a preprocessed (C, H, W) tensor, or a list / (N, C, H, W) tensor of them"
        )
    if not items:
        raise InputError("the batch of images is empty; pass at least one image")
    parts = [_one(item, preprocess, explicit_preprocess, -1 if single else i) for i, item in enumerate(items)]
    shapes = {tuple(t.shape) for t, _, _, _ in parts}
    if len(shapes) > 1:
        raise MixedSizesError(
            f"the images of the batch have different shapes after preprocessing ({sorted(shapes)}); a batch needs "
            "one shape. Fix: add Resize((h, w)) or CenterCrop to preprocess, or explain the images one at a time"
        )
    x = torch.stack([t for t, _, _, _ in parts]).to(device=device, dtype=dtype)
    return Batch(x, [g for _, g, _, _ in parts], [p for _, _, p, _ in parts], not single, [o for *_, o in parts])
