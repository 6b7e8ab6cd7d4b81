"""timm and Hugging Face as first-class citizens, and torch's own model wrappers.

Nothing here imports timm or transformers unless the object at hand comes from them (told by its class's
module name), so the package needs neither library:

- :mod:`.timm`: geometry of timm's eval transforms, ImageNet class names, the model's own data config as its
  preprocessing, ``timm:NAME`` models from the local caches;
- :mod:`.hf`: Hugging Face image processors as preprocessing with their geometry, ``config.id2label`` class names,
  ``hf:REPO`` models from the local Hugging Face cache;
- :mod:`.wrappers`: DataParallel / DistributedDataParallel / ``torch.compile`` unwrapped, TorchScript refused.

Example:
    >>> import torch
    >>> library_info(torch.nn.Linear(2, 2)) is None
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .wrappers import unwrap_layer, unwrap_model

if TYPE_CHECKING:
    from torch import nn

    from ..geometry import Geometry
    from ..zoo import ModelInfo

__all__ = ["adapt_preprocess", "check_input_size", "comes_from", "library_info", "step_geometry", "unwrap_layer",
           "unwrap_model"]


def comes_from(obj: Any, package: str) -> bool:
    """Whether ``obj``'s class, or a class it derives from, is defined in ``package`` (no import needed).

    Example:
        >>> import torch
        >>> comes_from(torch.nn.Linear(1, 1), "torch"), comes_from(torch.nn.Linear(1, 1), "timm")
        (True, False)
    """
    prefix = package + "."
    return any(getattr(c, "__module__", "").startswith(prefix) for c in type(obj).__mro__)


def adapt_preprocess(preprocess: Any) -> Any:
    """A Hugging Face image processor wrapped as a callable image -> (C, H, W) tensor whose geometry is known;
    anything else unchanged.

    Example:
        >>> adapt_preprocess(None) is None
        True
    """
    if preprocess is not None and comes_from(preprocess, "transformers"):
        from .hf import ImageProcessorPreprocess, is_image_processor

        if is_image_processor(preprocess):
            return ImageProcessorPreprocess(preprocess)
    return preprocess


def step_geometry(step: Any, geometry: "Geometry") -> "Geometry | None":
    """The geometry after one preprocessing step that timm or a Hugging Face processor provides, or ``None`` when
    the step is not theirs (a step of theirs that cannot be undone raises a ``GeometryError``)."""
    from .hf import ImageProcessorPreprocess

    if isinstance(step, ImageProcessorPreprocess):
        return step.geometry(geometry)
    if comes_from(step, "timm"):
        from .timm import step_geometry as timm_step

        return timm_step(step, geometry)
    return None


def library_info(model: "nn.Module") -> "ModelInfo | None":
    """What timm or transformers say about a model of theirs: class names (ImageNet for timm models with 1000 or
    21843 classes, ``config.id2label`` unless generic) and, for timm, its data config as preprocessing."""
    if comes_from(model, "timm"):
        from .timm import timm_info

        return timm_info(model)
    if comes_from(model, "transformers"):
        from .hf import hf_info

        return hf_info(model)
    return None


def check_input_size(model: "nn.Module", size: tuple[int, int]) -> None:
    """Raise an ``InputError`` naming the fix when ``model`` only accepts one input size (timm ViTs without
    ``dynamic_img_size``, Hugging Face ViT / DeiT) and ``size`` (H, W) is another."""
    if comes_from(model, "timm"):
        from .timm import check_input_size as timm_check

        timm_check(model, size)
    elif comes_from(model, "transformers"):
        from .hf import check_input_size as hf_check

        hf_check(model, size)
