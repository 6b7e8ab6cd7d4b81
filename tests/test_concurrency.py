"""Several threads explaining one shared model (test runners, notebooks, serving code) get the maps one thread
alone gets, and the model's modes and buffers never change."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from pytest_camcheck import compute_cam

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


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("method", METHODS)
def test_two_threads_on_one_model_get_the_single_threaded_maps(method: str, train: bool) -> None:
    torch.manual_seed(3)
    model = SmallCNN().train(train)
    images = [torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(k)) for k in range(THREADS)]
    targets = [1, 3]
    expected = [compute_cam(model, images[k], targets[k], method=method, layer="features").heatmap
                for k in range(THREADS)]
    before = snapshot(model)

    def calls(k: int) -> list[np.ndarray]:
        return [compute_cam(model, images[k], targets[k], method=method, layer="features").heatmap
                for _ in range(CALLS)]

    results = _run_together(calls, THREADS)
    for k, maps in enumerate(results):
        assert not isinstance(maps, BaseException), f"thread {k}: {maps!r}"
        wrong = sum(not np.allclose(m, expected[k], atol=1e-6) for m in maps)
        assert wrong == 0, f"thread {k}: {wrong} of {CALLS} maps differ from the single-threaded map"
    assert_same(before, snapshot(model))


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
