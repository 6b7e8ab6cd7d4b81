"""Choosing the layer whose activations the map is built from."""

from __future__ import annotations

import difflib
import weakref
from typing import Any, Callable

import torch
from torch import nn

from ..errors import LayerError, TargetError
from .capture import evaluation_mode, record_outputs, run_model
from .layouts import Layout, decide_layout, inside_attention
from .targets import find_logits

_POOLS_TO_FIXED_SIZE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_AUTO: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]]" = weakref.WeakKeyDictionary()


def map_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, Layout]]:
    """Modules whose output is a grid of more than one position in a layout that can be told (NCHW, NHWC,
    tokens), with that layout, in the order they finish, from one probing pass (eval, no grad) on ``x``.

    Left out: adaptive pools to a fixed size (VGG's ``avgpool``: they only resample the layer before them),
    attention modules and what runs inside them, and outputs whose first dimension is not the images.
    """
    with evaluation_mode(model), torch.no_grad(), record_outputs(model, lambda t: t.dim() in (3, 4)) as seen:
        run_model(model, x)
    modules = dict(model.named_modules())
    found = []
    for name, shape in seen:
        module = modules.get(name)
        if not name or module is None or isinstance(module, _POOLS_TO_FIXED_SIZE) or inside_attention(model, name):
            continue
        try:
            layout = decide_layout(torch.empty(shape, device="meta"), name, model=model, module=module,
                                   images=x.shape[0], input_size=tuple(x.shape[-2:]))
        except LayerError:
            continue
        found.append((name, layout))
    return found


Find = Callable[[Any], "torch.Tensor | None"]


def _last_reached(model: nn.Module, x: torch.Tensor, found: list[tuple[str, Layout]], find: Find) -> str | None:
    """The last of ``found`` whose grid the top-1 class score depends on (one forward and backward with
    autograd, parameters untouched: only the layers' outputs are differentiated); None when the output has no
    class logits or no grid reaches the score."""
    layouts = dict(found)
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in layouts:
        def hook(_module: nn.Module, _inputs: tuple, output: object, name: str = name) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                outputs[name] = output
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with evaluation_mode(model), torch.enable_grad():
            output = run_model(model, x.detach().clone().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    try:
        logits = find(output)
    except TargetError:  # several tensors could be the logits
        return None
    if logits is None or logits.dim() != 2 or not outputs:
        return None
    score = logits[0, logits[0].argmax()] if logits.shape[1] > 1 else logits[0, 0]
    names = [n for n, _ in found if n in outputs]
    grads = torch.autograd.grad(score, [outputs[n] for n in names], allow_unused=True)
    for name, grad in reversed(list(zip(names, grads))):
        if grad is not None and bool(layouts[name].grid(grad).abs().amax() > 0):
            return name
    return None


def auto_layer(model: nn.Module, x: torch.Tensor, find: Find = find_logits) -> str:
    """Name of the last module whose output is a map grid before the head; probed once per model and input
    size. When that is a token layer, the last one whose grid the score depends on: for a CLS-pooled ViT the
    input of the last block's attention (its patch tokens do not reach the output after it). ``find`` reads
    the logits from the model's output."""
    key = tuple(x.shape[1:])
    cached = _AUTO.get(model, {}).get(key)
    if cached is not None:
        return cached
    found = map_layers(model, x[:1])
    if not found:
        raise LayerError(
            "no module of the model produces a spatial (N, C, H, W), (N, H, W, C) or token output with more than "
            f"one position for an input of shape {tuple(x.shape[1:])}, so there is nothing to build a map from. "
            "Fix: pass a larger image, or name a layer with layer='...' (and reshape=... for an unusual layout)"
        )
    name = found[-1][0]
    if found[-1][1].name == "tokens":
        name = _last_reached(model, x[:1], found, find) or name
    _AUTO.setdefault(model, {})[key] = name
    return name


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
