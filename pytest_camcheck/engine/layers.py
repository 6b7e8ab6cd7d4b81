"""Choosing the layer whose activations the map is built from."""

from __future__ import annotations

import difflib
import weakref

import torch
from torch import nn

from ..errors import LayerError
from .capture import evaluation_mode, record_outputs, run_model
from .layouts import is_spatial

_POOLS_TO_FIXED_SIZE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_AUTO: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]]" = weakref.WeakKeyDictionary()


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple]]:
    """Modules with a spatial output, in the order they finish, from one probing pass (eval, no grad)."""
    with evaluation_mode(model), torch.no_grad(), record_outputs(model, is_spatial) as seen:
        run_model(model, x)
    return list(seen)


def auto_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last module with a spatial output before the head; probed once per model and input size.

    Adaptive pools to a fixed size (VGG's ``avgpool``) are skipped: they only resample the layer before them.
    """
    key = tuple(x.shape[1:])
    cached = _AUTO.get(model, {}).get(key)
    if cached is not None:
        return cached
    modules = dict(model.named_modules())
    found = [n for n, _ in spatial_layers(model, x[:1]) if n and not isinstance(modules[n], _POOLS_TO_FIXED_SIZE)]
    if not found:
        raise LayerError(
            "no module of the model produces a spatial (N, C, H, W) output with more than one position for "
            f"an input of shape {tuple(x.shape[1:])}, so there is nothing to build a map from. Fix: pass a larger "
            "image, or name a convolutional layer with layer='...'"
        )
    _AUTO.setdefault(model, {})[key] = found[-1]
    return found[-1]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return (dotted name, module) for a name or a module of ``model``."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return (name or "<model>"), module
        raise LayerError(
            f"the module given as layer ({type(layer).__name__}) is not part of this model. Fix: pass a submodule "
            "of the model you explain, e.g. model.layer4, or its dotted name"
        )
    if not isinstance(layer, str):
        raise LayerError(f"layer must be None, a dotted module name or a module, not {type(layer).__name__}")
    if layer:
        try:  # follows the dotted path only, instead of walking the whole model
            return layer, model.get_submodule(layer)
        except AttributeError:
            pass
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"top-level modules: {', '.join(n for n in names if '.' not in n)}"
    raise LayerError(f"layer {layer!r} not found in the model; {hint}. Fix: pass one of these names, or layer=None")
