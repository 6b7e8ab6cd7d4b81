"""Shared pieces of the benchmark suite: models built once, inputs, and the competing libraries."""

from __future__ import annotations

import functools
import os
import warnings

import pytest
import torch
import torchvision


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(int(os.environ.get("CAMCHECK_BENCH_THREADS", os.cpu_count() or 1)))
    warnings.filterwarnings("ignore", category=UserWarning)
    # numpy's OpenBLAS threads busy-wait after a call (pytorch-grad-cam's EigenCAM runs its SVD in numpy) and
    # then slow torch's own threads down by up to 2.5x for the next call, whichever library that is. One BLAS
    # thread removes that interference; the SVD of one map is faster single-threaded anyway.
    from threadpoolctl import threadpool_limits

    config._camcheck_blas_limit = threadpool_limits(1, user_api="blas")  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=None)
def model(name: str, device: str = "cpu") -> torch.nn.Module:
    """A model built once per run, eval mode, random weights with a fixed seed (no download)."""
    torch.manual_seed(0)
    if name.startswith("camcheck-"):
        from pytest_camcheck.bundled import load_bundled

        return load_bundled(name, device=device)
    return getattr(torchvision.models, name)().eval().to(device)


def size_of(name: str) -> int:
    from pytest_camcheck.bundled import INPUT_SIZE

    return INPUT_SIZE[0] if name.startswith("camcheck-") else 224


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Versions of everything compared, and the thread settings, in the JSON's machine_info."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("pytest-camcheck", "torch", "torchvision", "grad-cam", "torchcam"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    versions["torch threads"] = str(torch.get_num_threads())
    machine_info["camcheck_versions"] = versions
