"""Model outputs and targets: which number the map explains."""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..errors import TargetError
from .inputs import all_finite

Target = int | str | Callable[[torch.Tensor], torch.Tensor] | None


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model output: a tensor, the first tensor of a tuple/list, ``out``/``logits`` of a dict,
    or ``.logits`` of an object."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    raise TargetError(
        f"cannot find logits in the model output of type {type(output).__name__}. Expected a tensor, a tuple whose "
        "first item is a tensor, a dict with 'logits' or 'out', or an object with .logits. Fix: pass target as a "
        "callable that takes the model output for one image and returns the scalar score to explain"
    )


@dataclass(frozen=True)
class Scorer:
    """Turns per-image outputs into the scores to explain.

    ``index`` is the class index, or -1 for a callable target. On a single-logit (binary) head class 1 is the
    logit and class 0 its negation, so the negative class gets the negated map.
    """

    index: int
    fn: Callable[[Any], torch.Tensor] | None = None

    def score(self, logits_row: torch.Tensor, output_row: Any) -> torch.Tensor:
        if self.fn is not None:
            value = self.fn(output_row)
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(value, dtype=torch.float64)  # a Python float is a double
            if value.numel() != 1:
                raise TargetError(
                    f"the target callable returned a tensor of shape {tuple(value.shape)}; it must return one "
                    "scalar per image (e.g. output[cls].sum() or output.max()). Fix: reduce it to a scalar"
                )
            return value.reshape(())
        if logits_row.numel() == 1:
            return logits_row.reshape(()) * (1.0 if self.index == 1 else -1.0)
        return logits_row[self.index]


def class_count(logits: torch.Tensor) -> int:
    """Number of classes a (N, K) logits tensor stands for; a single logit stands for two classes."""
    return 2 if logits.shape[1] == 1 else int(logits.shape[1])


def top_classes(logits: torch.Tensor) -> list[int]:
    """Each row's top-1 class of (N, K) logits; a single logit stands for class 1 when positive, else class 0."""
    return [int(c) for c in (logits.argmax(dim=1) if logits.shape[1] > 1 else logits[:, 0] > 0).tolist()]


def check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise TargetError(
            f"the model output has shape {tuple(logits.shape)}, not (N, classes), so a class index or name cannot "
            "be applied. Fix: pass target as a callable on one image's output that returns a scalar, e.g. "
            "lambda out: out[cls].mean() for segmentation"
        )
    if not all_finite(logits):
        raise TargetError("the model produced NaN or infinite outputs for this input; fix the model or the input")


def resolve_target(target: Target, logits_row: torch.Tensor, categories: Sequence[str] | None) -> Scorer:
    """Resolve one image's target to a :class:`Scorer`; ``logits_row`` is one row of logits that already passed
    :func:`check_logits`."""
    if callable(target) and not isinstance(target, (str, numbers.Integral)):
        return Scorer(-1, target)
    n = class_count(logits_row[None])
    if target is None:
        return Scorer(top_classes(logits_row[None])[0])
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target.item())
    if isinstance(target, bool) or (isinstance(target, float)):
        raise TargetError(f"target {target!r} is not a class index; pass an int, a class name, None or a callable")
    if isinstance(target, numbers.Integral):
        index = int(target)
        if not 0 <= index < n:
            raise TargetError(f"target class {index} is out of range: the model has {n} classes (0..{n - 1})")
        return Scorer(index)
    if isinstance(target, str):
        return Scorer(_index_of_name(target, categories, n))
    raise TargetError(
        f"target of type {type(target).__name__} is not understood; pass a class index, a class name, None (top-1) "
        "or a callable on the model output"
    )


def _index_of_name(name: str, categories: Sequence[str] | None, n: int) -> int:
    if not categories:
        raise TargetError(
            f"target {name!r} is a class name, but no class names are known for this model. Fix: pass "
            "categories=[...] (for torchvision: ResNet18_Weights.DEFAULT.meta['categories']), load the model with "
            "the camcheck_model fixture, or pass the class index"
        )
    if len(categories) != n:
        raise TargetError(
            f"{len(categories)} class names are known but the model has {n} outputs; pass the categories that "
            "belong to this model"
        )
    lowered = [c.lower() for c in categories]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    close = difflib.get_close_matches(name.lower(), lowered, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(repr(categories[lowered.index(c)]) for c in close)}" if close else (
        "no close match")
    raise TargetError(f"unknown class name {name!r}; {hint}. Fix: use one of the model's category names or an index")


def label_of(index: int, categories: Sequence[str] | None) -> str | None:
    if categories and 0 <= index < len(categories):
        return str(categories[index])
    return None
