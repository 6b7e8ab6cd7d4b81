"""Model catalogue: what pytest-camcheck knows about a model (its class names and preprocessing).

Information is kept beside the model (a weak reference), never written onto it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = ["ModelInfo", "attach_info", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """Class names and preprocessing known for a model.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> attach_info(net, ModelInfo(name="toy", categories=("a", "b")))
        >>> model_info(net).categories
        ('a', 'b')
    """

    name: str | None = None
    categories: Sequence[str] | None = None
    preprocess: Callable | None = None


_INFO: "weakref.WeakKeyDictionary[torch.nn.Module, ModelInfo]" = weakref.WeakKeyDictionary()


def attach_info(model: torch.nn.Module, info: ModelInfo) -> None:
    """Remember ``info`` for ``model`` without touching the model object.

    Example:
        >>> import torch
        >>> attach_info(torch.nn.Identity(), ModelInfo(name="id"))
    """
    _INFO[model] = info


def model_info(model: torch.nn.Module) -> ModelInfo | None:
    """Return what was attached to ``model`` with :func:`attach_info`, or ``None``.

    Example:
        >>> import torch
        >>> model_info(torch.nn.Identity()) is None
        True
    """
    return _INFO.get(model)
