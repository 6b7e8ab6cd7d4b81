"""Choosing the layer whose activations the map is built from."""

from __future__ import annotations

import difflib
import threading
import weakref
from collections import Counter
from typing import Any, Callable

import torch
from torch import nn

from ..errors import LayerError, TargetError
from .capture import evaluation_mode, record_outputs, run_model, structure
from .forward import check_runs_once
from .layouts import Layout, decide_layout, inside_attention, patchifies
from .targets import Reader

_POOLS_TO_FIXED_SIZE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
# model -> (input shape, how logits are read, the model's structure) -> layer name
AUTO_KEEP = 8
_AUTO_GUARD = threading.Lock()
_AUTO: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]]" = weakref.WeakKeyDictionary()


def _readable(probed: list[tuple[str, tuple, "Layout | LayerError", int]]) -> list[tuple[str, Layout]]:
    """(name, layout) of the probed modules whose output has a layout and that run once."""
    return [(name, layout) for name, _, layout, calls in probed if isinstance(layout, Layout) and calls == 1]


def _probe(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple, "Layout | LayerError", int]]:
    """(name, output shape, layout or why it has none, how many times the module ran) of every module whose
    output is 3-D or 4-D with the images first, in the order they finish (the last call of a module run
    several times), from one probing pass (eval, no grad) on ``x``. Left out: adaptive pools to a fixed size
    (VGG's ``avgpool``: they only resample the layer before them), attention modules and what runs inside them,
    and outputs whose first dimension is not the images.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
        >>> [(name, str(layout)) for name, layout in _readable(_probe(net, torch.rand(1, 3, 8, 8)))]
        [('0', 'NCHW'), ('1', 'NCHW')]
    """
    with evaluation_mode(model), torch.no_grad(), record_outputs(model, lambda t: t.dim() in (3, 4)) as (seen, flow):
        run_model(model, x)
    modules = dict(model.named_modules())
    calls = Counter(name for name, _ in seen)
    last = {name: i for i, (name, _) in enumerate(seen)}
    found = []
    for i, (name, shape) in enumerate(seen):
        module = modules.get(name)
        if (last[name] != i or not name or module is None or isinstance(module, _POOLS_TO_FIXED_SIZE)
                or shape[0] != x.shape[0] or inside_attention(model, name)):
            continue
        try:
            layout: Layout | LayerError = decide_layout(
                torch.empty(shape, device="meta"), name, model=model, module=module, images=x.shape[0],
                input_size=tuple(x.shape[-2:]), flow=lambda: flow)
        except LayerError as err:
            layout = err
        found.append((name, shape, layout, calls[name]))
    return found


def _positions(shape: tuple, layout: Layout) -> int:
    h, w = layout.grid(torch.empty(shape, device="meta")).shape[-2:]
    return h * w


def _patchify(module: nn.Module) -> bool:
    """A convolution that cuts the image into patches (:func:`~.layouts.patchifies`), or a module ending in one."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return bool(convs) and patchifies(convs[-1])


def _unread_tokens_after(probed: list, name: str, module: nn.Module) -> tuple[str, tuple, LayerError] | None:
    """When ``name`` is a patch embedding or stem (the model's first grid, or a patchifying convolution), a token
    output (N, L, C) that finishes after it and could not be read as a grid, with at least as many tokens as
    ``name``'s grid has positions: the model's token stages, which a choice of ``name`` would skip (CLS tokens the
    model does not declare leave them unreadable). A pooled output (N, C, 1) is no token stage; and a grid after
    other grids that does not patchify (a CNN trunk's last stage before a transformer head) is a real stage of the
    model, explained as such."""
    at = next(i for i, p in enumerate(probed) if p[0] == name)
    if any(isinstance(p[2], Layout) for p in probed[:at]) and not _patchify(module):
        return None
    positions = _positions(probed[at][1], probed[at][2])
    for other, shape, layout, _ in probed[at + 1:]:
        if isinstance(layout, LayerError) and len(shape) == 3 and shape[1] >= positions and shape[2] > 1:
            return other, shape, layout
    return None


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


def auto_layer(model: nn.Module, x: torch.Tensor, reader: Reader = Reader()) -> str:
    """Name of the last module whose output is a map grid before the head; probed once per model, input size
    and ``reader`` (up to 8 of them a model). When that is a token layer, the last one whose grid the score depends
    on: for a CLS-pooled ViT the input of the last block's attention (its patch tokens do not reach the output
    after it). ``reader`` reads the logits from the model's output (compute_cam's ``output=`` and the number of
    class names) and its structure (a module replaced since asks again). Modules that run more than once per
    forward are skipped; a model whose token layers cannot be read is refused rather than explained at the layer
    before them (the patch embedding or stem).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
        >>> auto_layer(net, torch.rand(1, 3, 8, 8))
        '1'
    """
    find = reader.find
    # a Reader is equal to another of the same pick and names; a callable pick (maybe a method of the model, which
    # the cache would then keep alive) and one that cannot be hashed are probed every call
    key: tuple | None = None if callable(reader.pick) else (tuple(x.shape[1:]), reader, structure(model))
    try:
        cached = _AUTO.get(model, {}).get(key) if key is not None else None
    except TypeError:
        key, cached = None, None
    if cached is not None:
        return cached
    probed = _probe(model, x[:1])
    found = _readable(probed)
    if not found:
        repeated = [(name, calls) for name, _, layout, calls in probed if isinstance(layout, Layout) and calls > 1]
        if repeated:
            try:
                check_runs_once(*repeated[-1])
            except LayerError as err:
                raise LayerError(f"every module whose output is a map grid runs more than once per forward pass, "
                                 f"so layer=None has none to choose; e.g. {err}") from None
        raise LayerError(
            "no module of the model produces a spatial (N, C, H, W), (N, H, W, C) or token output with more than "
            f"one position for an input of shape {tuple(x.shape[1:])}, so there is nothing to build a map from. "
            "Fix: pass a larger image, or name a layer with layer='...' (and reshape=... for an unusual layout)"
        )
    name = found[-1][0]
    skipped = _unread_tokens_after(probed, name, model.get_submodule(name))
    if skipped is not None:
        other, shape, why = skipped
        raise LayerError(
            f"the model's token layers cannot be read as a grid ({why}), so layer=None would fall back to "
            f"{name!r}, a layer before them (the patch embedding or stem). Fix: pass layer='{other}' (or another "
            "token layer) with reshape=fn mapping its output to (N, C, H, W), or layer=" + repr(name) +
            " to explain that layer knowingly"
        )
    if found[-1][1].name == "tokens":
        name = _last_reached(model, x[:1], found, find) or name
    if key is not None:
        with _AUTO_GUARD:  # two threads may fill one model's entries at once
            known = _AUTO.setdefault(model, {})
            while len(known) >= AUTO_KEEP:  # other input sizes, picks or structures: the oldest is forgotten
                del known[next(iter(known))]
            known[key] = name
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
