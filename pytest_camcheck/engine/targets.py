"""Model outputs and targets: which number the map explains."""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..errors import TargetError
from .inputs import Batch, all_finite

Target = int | str | Callable[[torch.Tensor], torch.Tensor] | None


Pick = int | str | Callable[[Any], torch.Tensor] | None


@dataclass(frozen=True)
class Job:
    """One map to make: image ``image`` of the batch, explained for ``target``."""

    image: int
    target: Target


def make_jobs(target: Target | Sequence[Target], batch: Batch) -> list[Job]:
    """One job per image for a batch, one per target for a list of targets on one image."""
    n = batch.x.shape[0]
    if not batch.batched:
        if isinstance(target, (list, tuple)):
            if not target:
                raise TargetError("the list of targets is empty; pass at least one target or None")
            return [Job(0, t) for t in target]
        return [Job(0, target)]
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise TargetError(
                f"{len(target)} targets were given for a batch of {n} images; pass one target per image, or one "
                "target (or None) for all"
            )
        return [Job(i, t) for i, t in enumerate(target)]
    return [Job(i, target) for i in range(n)]


def images_of(jobs: Sequence[Job]) -> list[int]:
    """The batch index of each job's image."""
    return [job.image for job in jobs]

_FIX = ("Fix: pass output=<index> (or a key, or a callable returning the logits) to compute_cam to say which "
        "one holds the logits")


def _picked(output: Any, pick: Pick) -> torch.Tensor:
    if callable(pick) and not isinstance(pick, str):
        try:
            value = pick(output)
        except Exception as err:  # noqa: BLE001 - the user's picker failing is reported with what it got
            raise TargetError(f"output={pick!r} failed on the model output of type {type(output).__name__}: "
                              f"{type(err).__name__}: {err}. Fix the callable") from err
        what = f"output={getattr(pick, '__name__', pick)!r} returned {type(value).__name__}"
    elif isinstance(pick, bool) or not isinstance(pick, (int, str)):
        raise TargetError(f"output={pick!r} is not understood; pass an index (tuple/list outputs), a key (dict "
                          "outputs, or an attribute name), or a callable on the model output that returns the logits")
    elif isinstance(output, dict):
        if pick not in output:
            raise TargetError(f"output={pick!r} is not a key of the model output; its keys are "
                              f"{', '.join(map(repr, output))}. Fix: pass one of them")
        value, what = output[pick], f"output[{pick!r}] is {type(output[pick]).__name__}"
    elif isinstance(output, (tuple, list)) and isinstance(pick, int):
        if not -len(output) <= pick < len(output):
            raise TargetError(f"output={pick} is out of range: the model returns {len(output)} items. Fix: pass an "
                              f"index from 0 to {len(output) - 1}")
        value, what = output[pick], f"item {pick} of the model output is {type(output[pick]).__name__}"
    elif isinstance(pick, str) and hasattr(output, pick):
        value, what = getattr(output, pick), f"output.{pick} is {type(getattr(output, pick)).__name__}"
    else:
        raise TargetError(f"output={pick!r} cannot be applied to a model output of type {type(output).__name__}; "
                          "pass an index for a tuple/list, a key for a dict or an attribute name, or a callable")
    if not isinstance(value, torch.Tensor):
        raise TargetError(f"{what}, not a tensor of logits. Fix: pick the item that holds the logits")
    return value


def find_logits(output: Any, pick: Pick = None, num_classes: int | None = None) -> torch.Tensor | None:
    """The logits in a model output, or None when it holds none.

    ``pick`` (compute_cam's ``output=``): an index into a tuple/list output, a key of a dict output (or an
    attribute name), or a callable on the output returning the logits. Without it: a tensor output itself,
    ``logits``/``out`` of a dict, ``.logits`` of an object, or the one tensor (of rank >= 2) of a tuple/list.
    A tuple/list with several such tensors is refused (TargetError) unless exactly one has ``num_classes``
    columns (the number of class names known): taking the first could explain an embedding's channel 3 as
    "class 3".

    Example:
        >>> emb, logits = torch.zeros(1, 512), torch.zeros(1, 10)
        >>> find_logits((emb, logits), num_classes=10) is logits, find_logits((emb, logits), pick=1) is logits
        (True, True)
        >>> find_logits({"features": emb}) is None
        True
    """
    if pick is not None:
        return _picked(output, pick)
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        return None
    if isinstance(output, (tuple, list)):
        found = [(i, t) for i, t in enumerate(output) if isinstance(t, torch.Tensor) and t.dim() >= 2]
        if not found and output and isinstance(output[0], torch.Tensor):
            return output[0]
        if len(found) <= 1:
            return found[0][1] if found else None
        shapes = ", ".join(f"item {i}: {tuple(t.shape)}" for i, t in found)
        if num_classes is not None:
            match = [t for _, t in found if t.dim() == 2 and class_count(t) == num_classes]
            if len(match) == 1:
                return match[0]
            known = f"{'none' if not match else 'several'} of them {'has' if not match else 'have'} {num_classes} "
            known += "columns, the number of class names known"
        else:
            known = "no class names are known to tell them apart"
        raise TargetError(f"the model returns {len(output)} items with {len(found)} tensors that could be the logits "
                          f"({shapes}); {known}. {_FIX}")
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    return None


def logits_of(output: Any, pick: Pick = None, num_classes: int | None = None) -> torch.Tensor:
    """:func:`find_logits`, raising TargetError when the output holds no logits."""
    found = find_logits(output, pick, num_classes)
    if found is None:
        raise TargetError(
            f"cannot find logits in the model output of type {type(output).__name__}. Expected a tensor, a tuple whose "
            "first item is a tensor, a dict with 'logits' or 'out', or an object with .logits. Fix: pass output=... "
            "(an index, key or callable) to pick the logits, or target as a callable that takes the model output for "
            "one image and returns the scalar score to explain"
        )
    return found


@dataclass(frozen=True)
class Reader:
    """How this call reads logits from a model output: ``pick`` (compute_cam's ``output=``) and the number of
    class names known, which settles a tuple with several candidate tensors."""

    pick: Pick = None
    num_classes: int | None = None

    def find(self, output: Any) -> torch.Tensor | None:
        """:func:`find_logits` for this call: the logits, or None when the output holds none."""
        return find_logits(output, self.pick, self.num_classes)

    def require(self, output: Any) -> torch.Tensor:
        """:func:`logits_of` for this call: the logits, or a TargetError naming the fix."""
        return logits_of(output, self.pick, self.num_classes)


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
        return Scorer(index_of_name(target, categories, n))
    raise TargetError(
        f"target of type {type(target).__name__} is not understood; pass a class index, a class name, None (top-1) "
        "or a callable on the model output"
    )


def index_of_name(name: str, categories: Sequence[str] | None, n: int) -> int:
    """The index of class ``name`` among ``categories`` (the model's ``n`` classes): the exact name, else the
    one name equal to it ignoring case; a TargetError naming the fix when there is none, or more than one.

    Example:
        >>> index_of_name("Dog", ["cat", "dog"], 2)
        1
    """
    if not categories:
        raise TargetError(
            f"target {name!r} is a class name, but no class names are known for this model. Fix: pass "
            "categories=[...] (for torchvision: ResNet18_Weights.DEFAULT.meta['categories']), load the model with "
            "the camcheck_model fixture, or pass the class index"
        )
    check_class_count(categories, n)
    exact = [i for i, c in enumerate(categories) if c == name]
    if len(exact) > 1:
        raise TargetError(
            f"class name {name!r} is given {len(exact)} times in the categories (indices "
            f"{', '.join(map(str, exact))}), so it cannot tell which class it means. Fix: pass the class index, or "
            "make the class names unique"
        )
    if exact:
        return exact[0]
    lowered = [c.lower() for c in categories]
    folded = [i for i, c in enumerate(lowered) if c == name.lower()]
    if len(folded) == 1:
        return folded[0]
    if folded:
        raise TargetError(
            f"class name {name!r} matches {len(folded)} categories when case is ignored "
            f"({', '.join(f'{categories[i]!r} (index {i})' for i in folded)}) and none exactly. Fix: spell it "
            "exactly as one of them, or pass the class index"
        )
    close = difflib.get_close_matches(name.lower(), lowered, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(repr(categories[lowered.index(c)]) for c in close)}" if close else (
        "no close match")
    raise TargetError(f"unknown class name {name!r}; {hint}. Fix: use one of the model's category names or an index")


def check_categories(categories: Any) -> tuple[str, ...] | None:
    """The class names as a tuple, refused (TargetError) when they are not strings: a string itself (each
    letter would be a class) or non-string items. A name given twice is allowed (timm's ImageNet descriptions
    have two 'crane's) but refused when a target asks for it (see :func:`resolve_target`).

    Example:
        >>> check_categories(["cat", "dog"])
        ('cat', 'dog')
        >>> check_categories(None) is None
        True
    """
    if categories is None:
        return None
    if isinstance(categories, (str, bytes)):
        raise TargetError(
            f"categories is a string ({categories[:40]!r}), which would make each character a class name. Fix: pass "
            "a list of class names, one per model output, e.g. categories=['cat', 'dog']"
        )
    try:
        names = tuple(categories)
    except TypeError:
        raise TargetError(
            f"categories of type {type(categories).__name__} is not a sequence of class names. Fix: pass a list of "
            "strings, one per model output"
        ) from None
    try:
        "".join(names)  # a TypeError names a non-string item, at C speed (10 us for 1000 names)
        return names
    except TypeError:
        pass
    bad = [(i, c) for i, c in enumerate(names) if not isinstance(c, str)]
    if bad:
        i, c = bad[0]
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise TargetError(
            f"categories must be strings, but item {i} is {c!r} ({type(c).__name__}){more}. Fix: pass the class "
            "names as strings, e.g. [str(c) for c in categories]"
        )
    return names


def check_class_count(categories: Sequence[str] | None, n: int) -> None:
    """Refuse class names whose count is not the model's ``n`` classes (a replaced head keeps the names of the
    old one): each result would carry another class's name.

    Example:
        >>> check_class_count(("cat", "dog"), 2)
        >>> check_class_count(("cat", "dog", "cow"), 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pytest_camcheck.errors.TargetError: 3 class names are known but the model has 2 outputs, ...
    """
    if categories and len(categories) != n:
        raise TargetError(
            f"{len(categories)} class names are known but the model has {n} outputs, so its classes cannot be "
            "named (the names may belong to a head that was replaced, or to the model's metadata). Fix: pass "
            f"categories= with {n} names, one per output, or categories=[] to explain the model without names"
        )


def label_of(index: int, categories: Sequence[str] | None) -> str | None:
    if categories and 0 <= index < len(categories):
        return str(categories[index])
    return None


def _is_callable(target: Target) -> bool:
    return callable(target) and not isinstance(target, str)


def class_logits(output: Any, jobs: Sequence[Job], reader: Reader) -> torch.Tensor | None:
    """The (N, classes) logits the class targets are read from, detached and checked; None when every target
    is a callable (and no ``output=`` was given) and the output has no such logits. A class target on an
    output without them is a TargetError naming the fix."""
    callables = all(_is_callable(job.target) for job in jobs)
    if not callables or reader.pick is not None:
        logits = reader.require(output)
    else:
        try:
            logits = reader.find(output)
        except TargetError:  # several tensors could be the logits: the callables read the output themselves
            return None
        if logits is None:
            return None
    if logits.dim() == 2:
        check_logits(logits)
        return logits.detach()
    if not callables:
        check_logits(logits)
    return None


def make_scorers(jobs: Sequence[Job], logits: torch.Tensor | None,
                 categories: Sequence[str] | None) -> list[Scorer]:
    """One scorer per job. A class index or name is resolved once however many images share it, and the
    top-1 classes of all images come from one argmax. Class names whose count is not the logits' are refused
    (:func:`check_class_count`), whatever the target: the results' labels and top-5 would be wrong."""
    if logits is None:
        return [Scorer(-1, job.target) for job in jobs]
    check_class_count(categories, class_count(logits))
    resolved: dict[tuple[type, Any], Scorer] = {}
    top: list[int] | None = None
    out = []
    for job in jobs:
        t = job.target
        if t is None:
            if top is None:
                top = top_classes(logits)
            out.append(Scorer(top[job.image]))
        elif type(t) in (int, str):
            key = (type(t), t)
            if key not in resolved:
                resolved[key] = resolve_target(t, logits[job.image], categories)
            out.append(resolved[key])
        else:
            out.append(resolve_target(t, logits[job.image], categories))
    return out


def job_scores(scorers: Sequence[Scorer], jobs: Sequence[Job], output: Any, logits: torch.Tensor | None,
               reader: Reader) -> tuple[torch.Tensor, bool]:
    """The score of every job, shape (jobs,), and whether autograd recorded every one of them. Class scores on
    (N, classes) logits are gathered by one indexing operation (one autograd node, however large the batch);
    callable targets are called per image."""
    if logits is not None and logits.shape[1] > 1 and all(s.fn is None for s in scorers):
        parts = [reader.require(output)[images_of(jobs), [s.index for s in scorers]]]
    else:
        parts = [scorer.score(*seen_by_target(output, job.image, reader)) for scorer, job in zip(scorers, jobs)]
    tracked = all(p.requires_grad for p in parts)
    if len(parts) == 1 and parts[0].dim() == 1:
        return parts[0], tracked
    # a callable may return a plain number, which becomes a CPU tensor next to CUDA logits
    return torch.stack([p.to(parts[0].device) for p in parts]), tracked


def seen_by_target(output: Any, i: int, reader: Reader) -> tuple[torch.Tensor | None, Any]:
    """(logits row or None, what a callable target gets) for image ``i``: the logits row when the output has
    logits, else image ``i``'s part of the raw output."""
    try:
        logits = reader.find(output)
    except TargetError:  # several tensors could be the logits: a callable target gets its part of the output
        logits = None
    if logits is None:
        return None, _row(output, i)
    return (logits[i] if logits.dim() == 2 else None), logits[i]


def score_matrix(scorers: Sequence[Scorer], output: Any, n: int, reader: Reader) -> torch.Tensor:
    """Scores (len(scorers), n) of every scorer on each of the ``n`` images of ``output``."""
    seen = [seen_by_target(output, b, reader) for b in range(n)]
    return torch.stack([torch.stack([s.score(*v).float() for v in seen]) for s in scorers])


def _row(output: Any, i: int) -> Any:
    if isinstance(output, torch.Tensor):
        return output[i]
    if isinstance(output, dict):
        return {k: _row(v, i) for k, v in output.items()}
    if isinstance(output, list) and output and not isinstance(output[0], torch.Tensor):
        return output[i]
    if isinstance(output, (tuple, list)):
        return type(output)(_row(v, i) for v in output)
    if hasattr(output, "logits"):
        return output.logits[i]
    return output
