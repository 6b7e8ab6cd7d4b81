"""Timing map computation with pytest-benchmark, next to a bare forward pass of the same model.

The ``cam_benchmark`` fixture wraps pytest-benchmark's ``benchmark``: it times ``compute_cam`` exactly as the test
calls it, times a no-grad forward of the same model on the same (preprocessed) input before each of those rounds
(interleaved, so load changes during the test hit both alike), and puts
method, layer, batch, device, dtype, the forward's median and the ratio into ``extra_info`` (so they reach
``--benchmark-json`` / ``--benchmark-save`` and ``--benchmark-compare``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from typing import Any, Callable, Iterator

import pytest
import torch

from .engine import CamResult, compute_cam
from .engine.capture import evaluation_mode
from .engine.core import device_of, dtype_of
from .engine.inputs import prepare
from .errors import CamCheckError
from .zoo import model_info

__all__ = ["CamBenchmark", "time_forward"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def time_forward(model: torch.nn.Module, x: torch.Tensor, *, rounds: int = 10, warmup: int = 1,
                 autocast: torch.dtype | None = None) -> float:
    """Median seconds of ``model(x)`` under ``torch.no_grad()`` (CUDA synchronised), in eval mode.

    Example:
        >>> import torchvision
        >>> t = time_forward(torchvision.models.resnet18(num_classes=2).eval(), torch.rand(1, 3, 32, 32), rounds=2)
        >>> t > 0
        True
    """
    device = x.device
    times = []
    with evaluation_mode(model), torch.no_grad(), _autocast(device, autocast):
        for i in range(warmup + rounds):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


class CamBenchmark:
    """What the ``cam_benchmark`` fixture returns: call it like :func:`compute_cam`.

    ``benchmark`` is pytest-benchmark's fixture value. ``rounds`` timed calls after ``warmup`` untimed ones;
    ``autocast`` (e.g. ``torch.bfloat16``) runs both the map and the forward under ``torch.autocast``.

    Example:
        >>> def test_cost(cam_benchmark, camcheck_model):  # doctest: +SKIP
        ...     result = cam_benchmark(camcheck_model("camcheck-shapes"), image, "circle", method="gradcam")
    """

    def __init__(self, benchmark: Any, *, xdist: bool = False) -> None:
        self.benchmark, self.xdist = benchmark, xdist

    def __call__(self, model: torch.nn.Module, image: Any, target: Any = None, *, method: str = "gradcam",
                 layer: Any = None, preprocess: Callable | None = None, rounds: int = 10, warmup: int = 1,
                 autocast: torch.dtype | None = None, **cam_kwargs: Any) -> CamResult | list[CamResult]:
        __tracebackhide__ = True
        if not isinstance(rounds, int) or rounds < 1 or not isinstance(warmup, int) or warmup < 0:
            raise CamCheckError(f"rounds={rounds!r}, warmup={warmup!r}: pass rounds >= 1 and warmup >= 0 (ints)")
        device = device_of(model)
        info = model_info(model)
        prep = preprocess if preprocess is not None else (info.preprocess if info is not None else None)
        x = prepare(image, prep, explicit_preprocess=preprocess is not None, device=device,
                    dtype=dtype_of(model)).x

        def run() -> CamResult | list[CamResult]:
            with _autocast(device, autocast):
                out = compute_cam(model, image, target, method=method, layer=layer, preprocess=preprocess,
                                  **cam_kwargs)
            _sync(device)
            return out

        result = run()
        first = result[0] if isinstance(result, list) else result
        extra = self.benchmark.extra_info
        extra.update(method=first.method, layer=first.layer, batch=int(x.shape[0]), device=str(device),
                     dtype=str(autocast or dtype_of(model)).replace("torch.", ""))
        if self.xdist or getattr(self.benchmark, "disabled", False):
            warnings.warn(pytest.PytestWarning(
                "cam_benchmark: no timing was taken because pytest-benchmark is disabled (it turns itself off under "
                "pytest-xdist, and with --benchmark-disable). The map was computed once. Run benchmarks with "
                "-p no:xdist (or -n 0) to time them"), stacklevel=2)
            return result
        forward_times: list[float] = []

        def time_one_forward() -> None:  # pytest-benchmark runs this untimed before each round of ours
            forward_times.append(time_forward(model, x, rounds=1, warmup=0, autocast=autocast))

        result = self.benchmark.pedantic(run, setup=time_one_forward, rounds=rounds, iterations=1,
                                         warmup_rounds=warmup)
        median = self.benchmark.stats.stats.median
        forward = statistics.median(forward_times[warmup:])
        extra.update(forward_median_s=forward, ratio_to_forward=median / forward)
        return result
