"""Capturing a layer's output, always leaving the user's model exactly as it was found.

One forward hook on the target layer, added and removed inside the one call that needs it. For gradient
methods the part of the network before the layer runs without autograd, and the layer's output becomes a
fresh leaf that requires grad: the backward pass then runs from the score down to that layer only, computes
no parameter gradient, and never touches ``.grad``. In-place operations after the layer (ReLU(inplace=True),
``out += identity``) act on a copy, so they cannot break the capture.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import CamCheckError, InputError


def _package_dir(name: str) -> str | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    return os.path.dirname(spec.origin) + os.sep if spec is not None and spec.origin else None


# operators and library models whose own checks refuse an input (a conv on the wrong channels, ViT's size assert)
_OPERATOR_DIRS = tuple(d for d in map(_package_dir, ("torch", "torchvision", "timm", "transformers")) if d)


def _last_frame(err: BaseException) -> Any:
    tb, last = err.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last


def _in_library(last: Any) -> bool:
    return last is not None and os.path.abspath(last.tb_frame.f_code.co_filename).startswith(_OPERATOR_DIRS)


def raised_by_model(err: BaseException) -> bool:
    """Whether ``err`` was raised by the model's own code (a ``raise`` or ``assert`` in its ``forward``), not by
    torch, torchvision, timm or transformers refusing the input (a shape or dtype mismatch inside ``torch``, a
    ViT's input size assert)."""
    last = _last_frame(err)
    if last is None:
        return False
    if _in_library(last):
        return False
    if isinstance(err, AssertionError):  # an assert of the model's own code, not an operator's
        return True
    filename = last.tb_frame.f_code.co_filename
    # an operator written in C (t.view, t.reshape) leaves no frame of its own: the last frame is then the
    # model's line that called it, which is not a raise statement
    return linecache.getline(filename, last.tb_lineno).lstrip().startswith("raise")


def run_model(model: nn.Module, x: torch.Tensor) -> Any:
    """``model(x)``. A torch operator refusing this input (wrong size, channels, dtype) becomes an InputError
    naming the input; an error the model's own code raises propagates unchanged, as the model's error."""
    try:
        return model(x)
    except CamCheckError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
        if raised_by_model(err):
            raise
        raise InputError(
            f"the model failed on an input of shape {tuple(x.shape)} ({x.dtype}, {x.device}): {str(err).rstrip('.')}. "
            "Fix: check the "
            "image size, channels and preprocessing the model expects"
        ) from err


# id(module) -> (a weak reference to the module, its lock): a plain dict, checked against the reference, is
# twice as fast per module as a WeakKeyDictionary; the reference's callback drops the entry of a dead module
_LOCKS: dict[int, tuple[weakref.ref, threading.RLock]] = {}
_LOCKS_GUARD = threading.Lock()


def _forget(key: int) -> Callable[[weakref.ref], None]:
    def forget(ref: weakref.ref) -> None:  # runs when the module dies, maybe in another thread: no lock taken
        entry = _LOCKS.get(key)
        if entry is not None and entry[0] is ref:
            _LOCKS.pop(key, None)
    return forget


_HELD = threading.local()  # .counts: id(lock) -> how many times this thread holds it through model_lock


class _Locks:
    """The locks of a model's modules, taken together in one order (by id) and released in the reverse order,
    also when taking one fails. A thread that takes them all at once never waits in a cycle with another. A
    nested call (a target callable explaining another model while its caller's locks are held) may need a lock
    that comes before one it holds: it takes such a lock only if it is free, and is refused otherwise, since
    waiting could wait forever for a thread that waits for it."""

    def __init__(self, locks: list[threading.RLock], modules: list[nn.Module]) -> None:
        self.locks = sorted(locks, key=id)
        self.modules = modules  # the modules these locks cover, as all_modules listed them

    def __enter__(self) -> "_Locks":
        counts: dict[int, int] = _HELD.__dict__.setdefault("counts", {})
        top = max(counts, default=-1)
        taken: list[threading.RLock] = []
        try:
            for lock in self.locks:
                if id(lock) in counts or id(lock) > top:  # held already (re-entrant), or in order
                    lock.acquire()
                elif not lock.acquire(blocking=False):
                    raise CamCheckError(
                        "a nested camcheck call (from a target callable) needs a model that another thread is "
                        "explaining, while this thread holds a model that thread may need next; waiting could "
                        "deadlock. Fix: explain the second model outside the target callable"
                    )
                taken.append(lock)
                top = max(top, id(lock))
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        for lock in self.locks:
            counts[id(lock)] = counts.get(id(lock), 0) + 1
        return self

    def __exit__(self, *exc: object) -> None:
        counts: dict[int, int] = _HELD.__dict__.setdefault("counts", {})
        for lock in reversed(self.locks):
            left = counts.get(id(lock), 1) - 1
            if left:
                counts[id(lock)] = left
            else:
                counts.pop(id(lock), None)
            lock.release()


def model_lock(model: nn.Module) -> _Locks:
    """The locks that serialise camcheck's use of ``model`` across threads: hooks and training flags live on
    the modules, so two calls on models that share a module (one model, or two wrappers of one backbone) run one
    after the other, and calls on models that share none run in parallel. Every module gets a lock the first
    time a model holding it is locked (the modules new to camcheck in one call share a new lock, so modules first
    seen together stay serialised together); a model takes the locks of all its modules, in a fixed order.
    Re-entrant, so a target callable may itself call ``compute_cam`` on the same model. The locks are those of
    the modules the model holds when the call starts: a module another thread attaches during the call is not
    covered.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> model_lock(m).locks == model_lock(m).locks
        True
        >>> len(model_lock(nn.Sequential(m)).locks)  # the Sequential's own new lock, and m's
        2
    """
    with _LOCKS_GUARD:
        found: dict[int, threading.RLock] = {}
        new: list[nn.Module] = []
        modules = all_modules(model)
        for module in modules:
            entry = _LOCKS.get(id(module))
            if entry is not None and entry[0]() is module:
                found[id(entry[1])] = entry[1]
            else:
                new.append(module)
        if new:
            fresh = threading.RLock()
            found[id(fresh)] = fresh
            for module in new:
                _LOCKS[id(module)] = (weakref.ref(module, _forget(id(module))), fresh)
        return _Locks(list(found.values()), modules)


_MODULE_LIMIT = 1_000_000


def all_modules(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` (itself included) once, as ``model.modules()`` gives them but in breadth-first
    order, several times faster: no chain of nested generators (about 40 us instead of 300 us for the 256 modules
    of mobilenet_v3_large). A module graph with a cycle falls back to ``model.modules()``."""
    found = [model]
    i = 0
    while i < len(found):
        module = found[i]
        if module is not None:
            found.extend(module._modules.values())
            if len(found) > _MODULE_LIMIT:
                return list(model.modules())
        i += 1
    unique = dict.fromkeys(found)
    unique.pop(None, None)
    return list(unique)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, modules: list[nn.Module] | None = None) -> Iterator[None]:
    """Run ``model`` in eval mode and give each module that was training its flag back afterwards. ``modules``:
    its modules as already listed (a held :func:`model_lock`'s ``modules``), so they are not walked twice."""
    training = [m for m in (all_modules(model) if modules is None else modules) if m.training]
    try:
        for module in training:
            module.training = False
        yield
    finally:
        for module in training:
            module.training = True


@dataclass
class Capture:
    """Activations of one layer (the last call of it in the forward pass)."""

    activations: torch.Tensor | None = None
    calls: int = 0
    replacement: torch.Tensor | None = field(default=None, repr=False)


@contextlib.contextmanager
def capture_layer(module: nn.Module, *, track_grad: bool, replace: torch.Tensor | None = None) -> Iterator[Capture]:
    """Hook ``module`` for the duration of the block.

    ``track_grad``: the forward before the hook runs without autograd; the captured output becomes a leaf
    requiring grad and autograd is switched on for the rest of the forward.
    ``replace``: the layer's output is replaced by this tensor (used to run only the layers after it on a
    batch of modified activations).
    """
    cap = Capture(replacement=replace)
    grad_before = torch.is_grad_enabled()

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            return None
        cap.calls += 1
        if cap.replacement is not None:
            cap.activations = output.detach()
            return cap.replacement
        if track_grad:
            leaf = output.detach().requires_grad_(True)
            cap.activations = leaf
            torch.set_grad_enabled(True)
            return leaf.clone()
        cap.activations = output.detach()
        return None

    handle = module.register_forward_hook(hook)
    try:
        if track_grad:
            torch.set_grad_enabled(False)
        yield cap
    finally:
        handle.remove()
        torch.set_grad_enabled(grad_before)


def structure(model: nn.Module) -> tuple[int, ...]:
    """The identity of every module of ``model``, in order: what a cached choice about the model (its automatic
    layer, a layout told by its flow) was made on, so that a module replaced or moved since asks again.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> before = structure(net); net[1] = nn.GELU(); structure(net) == before
        False
    """
    return tuple(map(id, model.modules()))


@dataclass
class Flow:
    """Which modules handed which tensor to which, from one pass: ``returned[m]``, the modules that returned the
    very tensor ``m`` returned (``m`` itself, an in-place ReLU after it, the containers that passed it on);
    ``fed[m]``, those that returned the tensor ``m`` received first. Where no module made a tensor (an operation
    in ``forward`` code), there is no entry."""

    returned: dict[nn.Module, list[nn.Module]] = field(default_factory=dict)
    fed: dict[nn.Module, list[nn.Module]] = field(default_factory=dict)


@contextlib.contextmanager
def record_outputs(model: nn.Module, keep: Callable[[torch.Tensor], bool]
                   ) -> Iterator[tuple[list[tuple[str, tuple]], Flow]]:
    """Record (module name, output shape) in completion order for every module whose output passes ``keep``
    (a module run twice is recorded twice), and the pass's :class:`Flow`."""
    names = {m: n for n, m in model.named_modules()}
    seen: list[tuple[str, tuple]] = []
    flow = Flow()
    # id(tensor) -> (a weak reference to it, the modules that returned it): the reference tells a live tensor
    # from a freed one whose id was reused
    made: dict[int, tuple[weakref.ref, list[nn.Module]]] = {}

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        first = inputs[0] if inputs else None
        if isinstance(first, torch.Tensor):
            entry = made.get(id(first))
            if entry is not None and entry[0]() is first:
                flow.fed[module] = entry[1]
        if isinstance(output, torch.Tensor):
            if keep(output):
                seen.append((names.get(module, ""), tuple(output.shape)))
            entry = made.get(id(output))
            if entry is None or entry[0]() is not output:
                entry = made[id(output)] = (weakref.ref(output), [])
            entry[1].append(module)
            flow.returned[module] = entry[1]

    handles = [m.register_forward_hook(hook) for m in names if m is not model]
    try:
        yield seen, flow
    finally:
        for h in handles:
            h.remove()


def probe_flow(model: nn.Module, x: torch.Tensor) -> Flow:
    """The :class:`Flow` of one pass of ``model`` on ``x`` without autograd (the model already in eval mode)."""
    with torch.no_grad(), record_outputs(model, lambda t: False) as (_, flow):
        run_model(model, x)
    return flow
