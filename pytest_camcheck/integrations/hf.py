"""Hugging Face: image processors as preprocessing with their geometry undone, ``config.id2label`` class names,
fixed input sizes, the local hub cache (hash-checked) and ``hf:REPO`` models. Imported only for objects that come
from transformers.

An image processor's geometry is known when its resizing and cropping are transformers' own code, read here
step by step as ``_preprocess`` runs them: the Torchvision and PIL backends (``ViTImageProcessor``, DeiT, BEiT,
Swin and most others) and ConvNeXT's ``crop_pct`` resize. A processor class that overrides any of those steps is
refused with a short message: its geometry would be a guess.

Example:
    >>> from transformers import ViTImageProcessor
    >>> from pytest_camcheck.geometry import infer_geometry
    >>> infer_geometry(ViTImageProcessor(size={"height": 32, "width": 32}), (300, 400)).input_size
    (32, 32)
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CamCheckError, GeometryError, InputError
from ..geometry import Geometry

__all__ = ["ImageProcessorPreprocess", "cached_hub_file", "check_input_size", "hf_info", "hub_cache_dir",
           "is_image_processor", "load_hf"]

# the methods of an image processor that decide where pixels go, and the classes whose code for them is read here
_GEOMETRY_METHODS = ("__call__", "preprocess", "_preprocess_image_like_inputs", "_prepare_image_like_inputs",
                     "process_image", "_preprocess", "resize", "center_crop", "pad")
_KNOWN_OWNERS = {"BaseImageProcessor", "TorchvisionBackend", "PilBackend", "ConvNextImageProcessor",
                 "ConvNextImageProcessorPil"}
_GENERIC_LABEL = re.compile(r"LABEL_\d+")
_STRICT_PATCH_EMBEDDINGS = {"ViTPatchEmbeddings", "DeiTPatchEmbeddings"}


def is_image_processor(obj: Any) -> bool:
    """Whether ``obj`` is a transformers image processor (``ViTImageProcessor``, ``AutoImageProcessor``'s ...)."""
    try:
        from transformers.image_processing_utils import BaseImageProcessor
    except ImportError:
        return False
    return isinstance(obj, BaseImageProcessor)


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def _unknown_steps(processor: Any) -> list[str]:
    out = []
    for name in _GEOMETRY_METHODS:
        owner = _owner(type(processor), name)
        if owner is not None and not (owner.__name__ in _KNOWN_OWNERS
                                      and owner.__module__.startswith("transformers.")):
            out.append(f"{name} (from {owner.__name__})")
    return out


def _size_dict(value: Any) -> Any:
    from transformers.image_utils import SizeDict

    if value is None or isinstance(value, SizeDict):
        return value
    if isinstance(value, dict):
        return SizeDict(**value)
    if isinstance(value, int):
        return SizeDict(height=value, width=value)
    raise GeometryError(f"image processor size {value!r} is not understood; give a dict such as "
                        "{'height': 224, 'width': 224} or {'shortest_edge': 224}")


def _resize_size(size: Any, hw: tuple[int, int]) -> tuple[int, int]:
    """The output (H, W) of the backends' ``resize`` for an image of ``hw``, by transformers' own size rules."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension, get_image_size_for_max_height_width

    if size.shortest_edge and size.longest_edge:
        return tuple(get_size_with_aspect_ratio(hw, size.shortest_edge, size.longest_edge))
    if size.shortest_edge:
        return tuple(get_resize_output_image_size(np.empty((1, *hw), np.uint8), size=size.shortest_edge,
                                                  default_to_square=False, input_data_format=ChannelDimension.FIRST))
    if size.max_height and size.max_width:
        return tuple(get_image_size_for_max_height_width(hw, size.max_height, size.max_width))
    if size.height and size.width:
        return (size.height, size.width)
    raise GeometryError(f"image processor size {size} has none of height/width, shortest_edge or max_height/"
                        "max_width; fix the processor's size")


def _crop_offset(length: int, crop: int, pil: bool) -> int:
    """Where a centre crop of ``crop`` starts along an axis of ``length`` (negative: zero padding before it). The
    two backends differ when the padding is odd: the Torchvision one puts the smaller half first, NumPy's the
    larger."""
    if crop <= length:
        return (length - crop) // 2
    return -math.ceil((crop - length) / 2) if pil else -((crop - length) // 2)


def _center_crop(geometry: Geometry, size: Any, pil: bool) -> Geometry:
    crop_h, crop_w = int(size.height), int(size.width)
    h, w = geometry.input_size
    return geometry.cropped(_crop_offset(h, crop_h, pil), _crop_offset(w, crop_w, pil), (crop_h, crop_w))


class ImageProcessorPreprocess:
    """A Hugging Face image processor as pytest-camcheck preprocessing: ``__call__`` gives one image's
    ``pixel_values`` as a (C, H, W) tensor, :meth:`geometry` where its pixels came from.

    Example:
        >>> from PIL import Image
        >>> from transformers import ViTImageProcessor
        >>> prep = ImageProcessorPreprocess(ViTImageProcessor(size={"height": 32, "width": 32}))
        >>> prep(Image.new("RGB", (64, 48))).shape
        torch.Size([3, 32, 32])
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor) and image.is_floating_point() and getattr(self.processor, "do_rescale",
                                                                                     False):
            raise InputError(
                f"{type(self.processor).__name__} rescales pixels by {self.processor.rescale_factor:.4g}, so a float "
                "tensor given to it (already in [0, 1] or normalised) would be scaled twice. Fix: pass the PIL "
                "image or uint8 array with preprocess=processor, or the processed pixel_values without preprocess"
            )
        out = self.processor(images=image, return_tensors="pt")
        pixels = out["pixel_values"] if "pixel_values" in out else None
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or pixels.shape[0] != 1:
            raise InputError(f"{type(self.processor).__name__} gave no (1, C, H, W) pixel_values for one image; "
                             "pass the processed tensor pixel_values instead")
        return pixels[0]

    def geometry(self, geometry: Geometry) -> Geometry:
        """The geometry after the processor, following its ``_preprocess``: resize, centre crop, pad."""
        from transformers.image_processing_backends import PilBackend

        p = self.processor
        name = type(p).__name__
        unknown = _unknown_steps(p)
        if unknown:
            raise GeometryError(
                f"cannot undo the geometry of the Hugging Face image processor {name}: it has its own "
                f"{', '.join(unknown)}, so where its pixels come from would be a guess. Fix: use torchvision "
                "transforms equivalent to it as preprocess=, or pass its pixel_values tensor (the heatmap then "
                "comes back at tensor size)"
            )
        pil = isinstance(p, PilBackend)
        if getattr(p, "do_resize", False):
            size = _size_dict(p.size)
            if _owner(type(p), "resize").__name__.startswith("ConvNext"):
                edge = size.shortest_edge
                if not edge:
                    raise GeometryError(f"{name} needs size={{'shortest_edge': ...}}; fix the processor's size")
                if edge < 384:
                    from transformers.image_utils import SizeDict

                    geometry = geometry.resized(_resize_size(SizeDict(shortest_edge=int(edge / p.crop_pct)),
                                                             geometry.input_size))
                    geometry = _center_crop(geometry, SizeDict(height=edge, width=edge), pil)
                else:
                    geometry = geometry.resized((edge, edge))
            else:
                geometry = geometry.resized(_resize_size(size, geometry.input_size))
        if getattr(p, "do_center_crop", False):
            geometry = _center_crop(geometry, _size_dict(p.crop_size), pil)
        if getattr(p, "do_pad", False) and getattr(p, "pad_size", None) is not None:
            pad = _size_dict(p.pad_size)
            geometry = geometry.cropped(0, 0, (int(pad.height), int(pad.width)))
        return geometry

    def __repr__(self) -> str:
        return f"{type(self.processor).__name__}(size={dict(_size_dict(self.processor.size) or {})!r})" if hasattr(
            self.processor, "size") else type(self.processor).__name__


def hf_info(model: nn.Module) -> Any:
    """Class names from ``config.id2label`` (``None`` when they are the generic ``LABEL_0``, ``LABEL_1``...).

    Example:
        >>> from transformers import ConvNextConfig, ConvNextForImageClassification
        >>> cfg = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, id2label={0: "cat", 1: "dog"})
        >>> hf_info(ConvNextForImageClassification(cfg)).categories
        ('cat', 'dog')
    """
    from ..zoo import ModelInfo

    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    if not id2label:
        return None
    try:
        labels = tuple(str(id2label[i]) for i in range(len(id2label)))
    except KeyError:
        return None
    if all(_GENERIC_LABEL.fullmatch(label) for label in labels):
        labels = None
    return ModelInfo(name=getattr(config, "name_or_path", None) or getattr(config, "model_type", None),
                     categories=labels)


def check_input_size(model: nn.Module, size: tuple[int, int]) -> None:
    """Refuse an input size that a Hugging Face ViT / DeiT (fixed position embeddings) cannot take."""
    for module in model.modules():
        if type(module).__name__ in _STRICT_PATCH_EMBEDDINGS and hasattr(module, "image_size"):
            fixed = tuple(int(v) for v in module.image_size)
            if tuple(size) != fixed:
                raise InputError(
                    f"Hugging Face {type(model).__name__} takes {fixed[0]}x{fixed[1]} inputs only (config.image_size), "
                    f"but the input is {size[0]}x{size[1]}. Fix: pass its image processor as preprocess= "
                    "(AutoImageProcessor.from_pretrained(repo)), or resize the image to that size"
                )
            return


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment says now: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _check_blob(path: Path) -> None:
    """The hub cache names each file's blob by its hash (sha256 for large files, the git blob sha1 otherwise):
    a blob whose content has another hash is refused."""
    blob = path.resolve()
    name = blob.name
    if re.fullmatch(r"[0-9a-f]{64}", name):
        digest = hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", name):
        digest = hashlib.sha1(f"blob {blob.stat().st_size}\0".encode())
    else:
        return
    with open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != name:
        raise CamCheckError(f"{path} (blob {blob}) does not match the hash the hub gave it ({digest.hexdigest()[:12]} "
                            f"instead of {name[:12]}); the file is incomplete or damaged. Fix: delete it and fetch "
                            "it again")


def cached_hub_file(repo_id: str, filenames: list[str], revision: str | None = None) -> Path | None:
    """The first of ``filenames`` present in the local hub cache for ``repo_id``, hash-checked; ``None`` when
    none is there. Never touches the network.

    Example:
        >>> cached_hub_file("nobody/nothing", ["config.json"]) is None
        True
    """
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()), revision=revision)
        if isinstance(found, str):
            path = Path(found)
            _check_blob(path)
            return path
    return None


def _check_loaded(repo: str, loading: dict[str, Any]) -> None:
    """Refuse a checkpoint that does not hold every weight of the model: transformers initialises what is missing
    at random and only logs it, so a backbone-only repo (``...-in21k``, DINOv2) would be served with a random
    classifier head, a map that looks normal but explains nothing the repo learned.

    Example:
        >>> _check_loaded("acme/ok", {"missing_keys": [], "mismatched_keys": []})
    """
    missing = list(loading.get("missing_keys") or [])
    mismatched = [k[0] if isinstance(k, (list, tuple)) else k for k in loading.get("mismatched_keys") or []]
    if not missing and not mismatched:
        return
    parts = []
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        parts.append(f"lacks {len(missing)} of the model's weights ({shown})")
    if mismatched:
        parts.append(f"holds {len(mismatched)} of another shape ({', '.join(sorted(mismatched)[:5])})")
    raise CamCheckError(
        f"the checkpoint of Hugging Face model {repo!r} {' and '.join(parts)}; transformers would initialise them "
        "at random, so the model would not be the one the repo trained (a backbone-only repo has no classifier "
        "head). Fix: use a repo fine-tuned for image classification, or load your own model with its trained head "
        "and serve it with pytest_camcheck.register_model"
    )


def load_hf(repo: str, weights: Any, device: torch.device) -> tuple[nn.Module, Any]:
    """(model, image processor or None) for an image-classification repo in the local hub cache, offline
    (``local_files_only``): ``weights="DEFAULT"`` reads its weights (hash-checked), ``weights=None`` builds the
    architecture of its ``config.json`` with a random initialisation (fixed seed). Raises ``WeightsUnavailable``
    when the files are not in the cache.
    """
    try:
        import transformers
    except ImportError as err:
        raise CamCheckError("'hf:' models need transformers, which is not installed. Fix: pip install transformers"
                            ) from err
    from ..zoo import RANDOM_INIT_SEED, WeightsUnavailable

    cache = hub_cache_dir()
    fix = (f"Fix: on a machine with network run `hf download {repo}` and point HF_HOME / HF_HUB_CACHE at that "
           "cache; pytest-camcheck never downloads Hugging Face files")
    if cached_hub_file(repo, ["config.json"]) is None:
        raise WeightsUnavailable(f"Hugging Face model {repo!r} has no config.json in the hub cache {cache}. {fix}")
    kwargs = dict(cache_dir=str(cache), local_files_only=True)
    config = transformers.AutoConfig.from_pretrained(repo, **kwargs)
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = transformers.AutoModelForImageClassification.from_config(config)
    elif weights == "DEFAULT":
        files = ["model.safetensors", "pytorch_model.bin"]
        if cached_hub_file(repo, files) is None:
            raise WeightsUnavailable(f"Hugging Face model {repo!r} has no weights ({' or '.join(files)}) in the hub "
                                     f"cache {cache} (its config.json is there). {fix}, or use weights=None for a "
                                     "random initialisation")
        try:
            model, loading = transformers.AutoModelForImageClassification.from_pretrained(
                repo, output_loading_info=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - a truncated or damaged file (safetensors' own error class too)
            raise CamCheckError(f"the weights of Hugging Face model {repo!r} in the hub cache {cache} cannot be read "
                                f"({type(err).__name__}: {' '.join(str(err).split())[:300]}). {fix}") from err
        _check_loaded(repo, loading)
    else:
        raise CamCheckError(f"weights={weights!r} for Hugging Face model {repo!r}: use 'DEFAULT' (the weights in the "
                            "cache) or None for a random initialisation")
    processor = None
    if cached_hub_file(repo, ["preprocessor_config.json"]) is not None:
        processor = transformers.AutoImageProcessor.from_pretrained(repo, **kwargs)
    return model.to(device).eval(), processor
