"""Models wrapped by torch itself: ``nn.DataParallel``, ``DistributedDataParallel`` and ``torch.compile``'s
``OptimizedModule`` are explained through the module they wrap (same weights, same map); TorchScript models are
refused, because their graph cannot be hooked."""

from __future__ import annotations

from torch import nn

from ..errors import CamCheckError

__all__ = ["unwrap_layer", "unwrap_model"]


def _inner(model: nn.Module) -> tuple[nn.Module, str] | None:
    """(the module ``model`` wraps, the attribute holding it), or ``None`` when it wraps nothing."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module, "module"
    inner = getattr(model, "_orig_mod", None)  # torch._dynamo.eval_frame.OptimizedModule
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        return inner, "_orig_mod"
    return None


def unwrap_model(model: nn.Module, *, refuse_script: bool = True) -> nn.Module:
    """The plain ``nn.Module`` under DataParallel / DistributedDataParallel / ``torch.compile`` wrappers (any
    nesting); ``model`` itself when it is not wrapped. A TorchScript model raises a :class:`CamCheckError` with the
    fix unless ``refuse_script=False``.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap_model(torch.nn.DataParallel(net)) is net
        True
    """
    seen = model
    while (inner := _inner(seen)) is not None:
        seen = inner[0]
    if refuse_script:
        import torch.jit

        if isinstance(seen, torch.jit.ScriptModule):
            raise CamCheckError(
                f"the model is a TorchScript module ({type(seen).__name__}, from torch.jit.script or torch.jit.trace); "
                "TorchScript graphs cannot be hooked, so no layer's activations or gradients can be read. Fix: "
                "explain the eager model it was made from (build the Python nn.Module and load the same state_dict, "
                "e.g. net.load_state_dict(scripted.state_dict()))"
            )
    return seen


def unwrap_layer(model: nn.Module, layer: object) -> object:
    """A layer name given relative to the wrapper (``"module.layer4"``, ``"_orig_mod.layer4"``) made relative to
    the wrapped module (``"layer4"``); anything else unchanged.

    Example:
        >>> import torch
        >>> unwrap_layer(torch.nn.DataParallel(torch.nn.Linear(2, 2)), "module.weight")
        'weight'
    """
    seen = model
    while isinstance(layer, str) and (inner := _inner(seen)) is not None:
        seen, attribute = inner
        if layer.startswith(attribute + "."):
            layer = layer[len(attribute) + 1:]
    return layer
