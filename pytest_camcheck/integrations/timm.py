"""timm: the geometry of its eval transforms, ImageNet class names, the model's own data config as preprocessing,
fixed input sizes, and ``timm:NAME`` models from the local caches. Imported only for objects that come from timm.

The transforms ``timm.data.create_transform(**resolve_data_config({}, model=m))`` builds for evaluation are
undone exactly in every crop mode: ``center`` (``Resize`` of the short side or ``ResizeKeepRatio``, then
``CenterCrop``), ``squash`` (``Resize((h, w))`` + ``CenterCrop``), ``border`` (``ResizeKeepRatio(longest=1)`` +
``CenterCropOrPad``), with ``TrimBorder``, ``MaybeToTensor`` and ``MaybePILToTensor``. Random variants are refused.

Example:
    >>> import timm
    >>> from timm.data import create_transform, resolve_data_config
    >>> from pytest_camcheck.geometry import infer_geometry
    >>> net = timm.create_model("resnet18", pretrained=False)
    >>> infer_geometry(create_transform(**resolve_data_config({}, model=net)), (300, 400)).input_size
    (224, 224)
"""

from __future__ import annotations

import difflib
import functools
import os
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CamCheckError, GeometryError, InputError
from ..geometry import Geometry, center_crop_geometry

__all__ = ["check_input_size", "imagenet_categories", "load_timm", "step_geometry", "timm_info"]

_NEUTRAL = {"MaybeToTensor", "MaybePILToTensor", "ToTensor", "ToNumpy"}
IMAGENET_CLASS_COUNTS = {1000: "imagenet-1k", 21843: "imagenet-21k"}


def _resize_keep_ratio(step: Any, size: tuple[int, int]) -> tuple[int, int]:
    """``ResizeKeepRatio.get_params`` without its random parts: the output (H, W) for an input of ``size``."""
    target_h, target_w = step.size
    ratio_h, ratio_w = size[0] / target_h, size[1] / target_w
    ratio = max(ratio_h, ratio_w) * step.longest + min(ratio_h, ratio_w) * (1.0 - step.longest)
    return round(size[0] / ratio), round(size[1] / ratio)


def step_geometry(step: Any, geometry: Geometry) -> Geometry | None:
    """The geometry after one timm transform, ``None`` for a transform this module does not know (the caller
    refuses it), a :class:`GeometryError` for a random one."""
    name = type(step).__name__
    if name in _NEUTRAL:
        return geometry
    if name == "ResizeKeepRatio":
        if step.random_scale_prob > 0 or step.random_aspect_prob > 0:
            raise GeometryError(
                f"timm ResizeKeepRatio with random_scale_prob={step.random_scale_prob} / random_aspect_prob="
                f"{step.random_aspect_prob} resizes at random, so the map cannot be placed. Fix: use the eval "
                "transforms, timm.data.create_transform(**resolve_data_config({}, model=model)) (is_training=False)"
            )
        return geometry.resized(_resize_keep_ratio(step, geometry.input_size))
    if name == "CenterCropOrPad":
        return center_crop_geometry(geometry, step.size)
    if name == "TrimBorder":
        h, w = geometry.input_size
        border = step.border_size
        return geometry.cropped(min(border, h), min(border, h), (max(0, h - 2 * border), max(0, w - 2 * border)))
    if name.startswith("Random"):
        raise GeometryError(f"timm transform {name} is random, so the map cannot be placed. Fix: use the eval "
                            "transforms, timm.data.create_transform(**resolve_data_config({}, model=model))")
    return None


@functools.lru_cache(maxsize=4)
def imagenet_categories(num_classes: int) -> tuple[str, ...] | None:
    """ImageNet class names as timm ships them (the first name of each class's description, as torchvision
    gives them: 'tench', 'golden retriever'), for 1000 or 21843 classes; ``None`` for other counts.

    Example:
        >>> imagenet_categories(1000)[207], imagenet_categories(10)
        ('golden retriever', None)
    """
    subset = IMAGENET_CLASS_COUNTS.get(num_classes)
    if subset is None:
        return None
    from timm.data import ImageNetInfo

    return tuple(d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions())


def _data_config(model: nn.Module) -> dict[str, Any]:
    from timm.data import resolve_data_config

    return resolve_data_config({}, model=model)


_INFO_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Any]]" = weakref.WeakKeyDictionary()


def timm_info(model: nn.Module) -> Any:
    """Class names (ImageNet for 1000 / 21843 classes) and the model's own eval preprocessing
    (``create_transform(**resolve_data_config({}, model=model))``) for a timm model; remembered per model while
    its class count and ``pretrained_cfg`` stay the same (building the transforms costs a few hundred us).

    Example:
        >>> import timm
        >>> info = timm_info(timm.create_model("resnet18", pretrained=False))
        >>> info.categories[1], info.preprocess_note.startswith("timm data config")
        ('goldfish', True)
    """
    key = (getattr(model, "num_classes", None), id(getattr(model, "pretrained_cfg", None)))
    cached = _INFO_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    from timm.data import create_transform

    from ..zoo import ModelInfo

    config = _data_config(model)
    _, h, w = config["input_size"]
    note = (f"timm data config of {getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__} "
            f"(input {h}x{w}, crop_pct {config.get('crop_pct')}, crop_mode {config.get('crop_mode')}, "
            f"{config.get('interpolation')}, mean {tuple(round(v, 3) for v in config['mean'])}, "
            f"std {tuple(round(v, 3) for v in config['std'])})")
    num_classes = getattr(model, "num_classes", None)
    info = ModelInfo(
        name=getattr(model, "pretrained_cfg", {}).get("architecture"),
        categories=imagenet_categories(num_classes) if isinstance(num_classes, int) else None,
        preprocess=create_transform(**config),
        preprocess_note=note,
    )
    _INFO_CACHE[model] = (key, info)
    return info


def check_input_size(model: nn.Module, size: tuple[int, int]) -> None:
    """Refuse an input size a timm model with a fixed patch grid (``patch_embed.strict_img_size``, no
    ``dynamic_img_size``) cannot take, naming the fix."""
    embed = getattr(model, "patch_embed", None)
    fixed = getattr(embed, "img_size", None)
    if (embed is None or fixed is None or not getattr(embed, "strict_img_size", False)
            or getattr(model, "dynamic_img_size", False)):
        return
    fixed = tuple(int(v) for v in fixed)
    if tuple(size) == fixed:
        return
    config = _data_config(model)["input_size"][1:]
    built = (f"preprocess= built for {fixed[0]}x{fixed[1]}: timm.data.create_transform(**timm.data."
             f"resolve_data_config({{'input_size': (3, {fixed[0]}, {fixed[1]})}}, model=model))")
    if tuple(config) != fixed:  # the model's own data config is what gave the wrong size: it is no fix
        problem = f" (its data config gives {config[0]}x{config[1]})"
        fix = f"pass {built}, resize the image to {fixed[0]}x{fixed[1]} and pass the tensor"
    else:
        problem = ""
        fix = "pass the image with preprocess=None to use the model's own data config, resize it to that size"
    raise InputError(
        f"timm model {type(model).__name__} takes {fixed[0]}x{fixed[1]} inputs only (patch_embed.img_size with "
        f"strict_img_size), but the input is {size[0]}x{size[1]}{problem}. Fix: {fix}, or create the model with "
        "timm.create_model(..., dynamic_img_size=True)"
    )


def _require_timm() -> Any:
    try:
        import timm
    except ImportError as err:
        raise CamCheckError("'timm:' models need timm, which is not installed. Fix: pip install timm") from err
    return timm


def _weights_file(name: str, weights_dir: Path | None) -> tuple[Path, str]:
    """(file, where) of the default pretrained weights of ``name`` in the local caches, hash-checked; raises
    WeightsUnavailable otherwise. Nothing is downloaded."""
    from timm.models import get_pretrained_cfg

    from ..zoo import WeightsFile, WeightsUnavailable, find_weights
    from .hf import cached_hub_file, hub_cache_dir

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise CamCheckError(f"timm model {name!r} has no pretrained weights; use weights=None for a random "
                            "initialisation, or name a tag that has weights (timm.list_pretrained())")
    searched = []
    if cfg.hf_hub_id:
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        found = cached_hub_file(cfg.hf_hub_id, files)
        if found is not None:
            return found, f"Hugging Face cache ({cfg.hf_hub_id})"
        searched.append(f"the Hugging Face cache {hub_cache_dir()} (repo {cfg.hf_hub_id}, {' or '.join(files)})")
    if cfg.url:
        try:
            return find_weights(WeightsFile(cfg.url), weights_dir=weights_dir, offline=True), "torch hub cache"
        except WeightsUnavailable:
            searched.append(f"the weights dir / torch hub cache ({os.path.basename(cfg.url)})")
    fetch = (f"hf download {cfg.hf_hub_id}" if cfg.hf_hub_id else f"download {cfg.url}")
    raise WeightsUnavailable(
        f"weights of timm model {name!r} not found in {'; '.join(searched) or 'any cache'}; pytest-camcheck never "
        f"downloads timm or Hugging Face weights. Fix: on a machine with network run `{fetch}` (or "
        f"timm.create_model({name!r}, pretrained=True) once) and point HF_HOME / HF_HUB_CACHE at that cache, or use "
        "weights=None for a random initialisation"
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise CamCheckError(f"{path} cannot be read as safetensors ({err}). Fix: delete it and fetch it again"
                                ) from err
    from ..zoo import load_state_dict

    return load_state_dict(path)


def load_timm(name: str, weights: Any, device: torch.device, weights_dir: Path | None) -> nn.Module:
    """``timm.create_model(name)`` in eval mode on ``device``: ``weights="DEFAULT"`` reads the pretrained weights
    from the local Hugging Face / torch hub cache (hash-checked, weights only, never downloaded), ``weights=None``
    gives a random initialisation with a fixed seed. Categories and the data config's preprocessing are attached.

    Example:
        >>> net = load_timm("resnet18", None, torch.device("cpu"), None)
        >>> net.training, net.num_classes
        (False, 1000)
    """
    timm = _require_timm()
    from ..zoo import RANDOM_INIT_SEED

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise CamCheckError(f"timm has no model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                            + " Fix: use a name from timm.list_models() (with an optional .tag)")
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(name, pretrained=False)
    elif weights == "DEFAULT":
        path, _where = _weights_file(name, weights_dir)
        state = _read_weights(path)
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state))
        except RuntimeError as err:
            raise CamCheckError(f"the weights in {path} do not fit timm model {name!r} ({str(err)[:300]}). Fix: "
                                "delete the file and fetch it again") from err
    else:
        raise CamCheckError(f"weights={weights!r} for timm model {name!r}: use 'DEFAULT' (the pretrained weights of "
                            "the name's tag, e.g. 'timm:resnet18.a1_in1k') or None for a random initialisation")
    return model.to(device).eval()
