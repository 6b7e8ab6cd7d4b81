"""Several threads explaining one shared model (test runners, notebooks, serving code) get the maps one thread
alone gets, and the model's modes and buffers never change."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numpy as np
import pytest
import torch

from pytest_camcheck import CamCheckError, compute_cam

from .models import SmallCNN
from .test_engine_safety import assert_same, snapshot

THREADS, CALLS = 2, 50
# one method of each family: gradients, the head's weights, masked inputs, ablated activations, no target
METHODS = ["gradcam", "cam", "scorecam", "ablationcam", "eigencam"]


def _run_together(fn, n: int) -> list:
    barrier = threading.Barrier(n)
    out: list = [None] * n

    def work(k: int) -> None:
        barrier.wait()
        try:
            out[k] = fn(k)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            out[k] = err

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _assert_threads_get_the_single_threaded_maps(models: list, watched: torch.nn.Module, **cam: object) -> None:
    """Thread k explains ``models[k]`` CALLS times; every map must equal that model's map computed alone first,
    and ``watched`` (the shared modules) must keep its modes and buffers."""
    images = [torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(k)) for k in range(THREADS)]
    targets = [1, 3]
    expected = [compute_cam(models[k], images[k], targets[k], **cam).heatmap for k in range(THREADS)]
    before = snapshot(watched)

    def calls(k: int) -> list[np.ndarray]:
        return [compute_cam(models[k], images[k], targets[k], **cam).heatmap for _ in range(CALLS)]

    results = _run_together(calls, THREADS)
    for k, maps in enumerate(results):
        assert not isinstance(maps, BaseException), f"thread {k}: {maps!r}"
        wrong = sum(not np.allclose(m, expected[k], atol=1e-6) for m in maps)
        assert wrong == 0, f"thread {k}: {wrong} of {CALLS} maps differ from the single-threaded map"
    assert_same(before, snapshot(watched))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("method", METHODS)
def test_two_threads_on_one_model_get_the_single_threaded_maps(method: str, train: bool) -> None:
    torch.manual_seed(3)
    model = SmallCNN().train(train)
    _assert_threads_get_the_single_threaded_maps([model] * THREADS, model, method=method, layer="features")


def test_a_target_callable_may_call_compute_cam_on_the_same_model() -> None:
    """The per-model lock is re-entrant: a callable target that explains the same model does not deadlock."""
    torch.manual_seed(4)
    model = SmallCNN().eval()
    x = torch.rand(3, 16, 16)
    inner = []

    def target(logits: torch.Tensor) -> torch.Tensor:
        if not inner:
            inner.append(compute_cam(model, x, 0, layer="features"))
        return logits[0]

    outer = compute_cam(model, x, target, layer="features")
    assert np.allclose(outer.heatmap, inner[0].heatmap, atol=1e-6)


class Scaled(torch.nn.Module):
    """A wrapper around a shared backbone: the same modules reached from another root."""

    def __init__(self, backbone: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.backbone, self.scale = backbone, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) * self.scale


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_two_wrappers_of_one_backbone_in_two_threads_get_the_single_threaded_maps(train: bool) -> None:
    # hooks and training flags live on the shared modules, so a lock per root object would let the two calls
    # mix their captures or flip each other's modes
    torch.manual_seed(5)
    backbone = SmallCNN().train(train)
    models = [Scaled(backbone, 1.0), Scaled(backbone, 2.0)]
    _assert_threads_get_the_single_threaded_maps(models, backbone, layer="backbone.features")


@contextlib.contextmanager
def _held_by_another_thread(model: torch.nn.Module) -> Iterator[None]:
    """Another thread holds ``model``'s locks while the body runs."""
    from pytest_camcheck.engine.capture import model_lock

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with model_lock(model):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join()


def _free_locks(model: torch.nn.Module) -> tuple[int, int]:
    """(how many of ``model``'s locks this thread could take now, how many it has); none is kept."""
    from pytest_camcheck.engine.capture import model_lock

    parts = model_lock(model).locks
    got = [part for part in parts if part.acquire(blocking=False)]
    for part in got:
        part.release()
    return len(got), len(parts)


def test_models_that_share_modules_share_a_lock_and_others_do_not() -> None:
    from pytest_camcheck.engine.capture import model_lock

    backbone, other = SmallCNN(), SmallCNN()
    first, second = Scaled(backbone, 1.0), Scaled(backbone, 2.0)
    shared = set(model_lock(first).locks) & set(model_lock(second).locks)
    assert shared and shared == set(model_lock(backbone).locks) == set(model_lock(backbone.features).locks)
    assert not set(model_lock(other).locks) & set(model_lock(backbone).locks)
    head = torch.nn.Linear(2, 2)  # a module first seen beside a known backbone gets its own lock
    assert len(model_lock(torch.nn.ModuleList([backbone, head])).locks) == 2
    assert not set(model_lock(head).locks) & set(model_lock(backbone).locks)
    # an ensemble of two models locked before takes both locks, and nothing else can take either meanwhile
    both = torch.nn.ModuleList([first, other])
    with _held_by_another_thread(both):
        for m in (second, other, both):  # each needs a lock the ensemble holds
            free, needed = _free_locks(m)
            assert free < needed, f"{m.__class__.__name__} could be locked while the ensemble was"
    with model_lock(both):  # free again, and re-entrant in one thread
        with model_lock(both):
            pass


def test_a_nested_call_that_could_deadlock_is_refused_not_left_waiting() -> None:
    # thread 1 holds the model whose lock sorts last and, from a target callable, wants an ensemble that also
    # needs the first lock, which thread 2 holds (and thread 2 could be waiting for thread 1's next): refused
    from pytest_camcheck.engine.capture import model_lock

    a, b = SmallCNN(), SmallCNN()
    (low, _), (high, _) = sorted(((m, model_lock(m).locks[0]) for m in (a, b)), key=lambda pair: id(pair[1]))
    ensemble = torch.nn.ModuleList([a, b])
    model_lock(ensemble)
    with _held_by_another_thread(low):
        with model_lock(high):
            with pytest.raises(CamCheckError, match="could deadlock"):
                with model_lock(ensemble):
                    pass
    with model_lock(high):  # with the first lock free, the same nested call goes through
        with model_lock(ensemble):
            pass
    free, needed = _free_locks(ensemble)
    assert free == needed  # nothing left held


def test_the_locks_of_a_dead_model_are_dropped() -> None:
    import gc

    from pytest_camcheck.engine import capture

    gc.collect()
    before = len(capture._LOCKS)
    model = SmallCNN()
    capture.model_lock(model)
    assert len(capture._LOCKS) == before + len(list(model.modules()))
    del model
    gc.collect()
    assert len(capture._LOCKS) == before
