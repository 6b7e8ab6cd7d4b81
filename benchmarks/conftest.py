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


@functools.lru_cache(maxsize=None)
def model(name: str, device: str = "cpu") -> torch.nn.Module:
    """A model built once per run, eval mode, random weights with a fixed seed (no download)."""
    torch.manual_seed(0)
    if name.startswith("camcheck-"):
        from pytest_camcheck.bundled import load_bundled

        return load_bundled(name, device=device)
    return getattr(torchvision.models, name)().eval().to(device)


def size_of(name: str) -> int:
    return 128 if name.startswith("camcheck-") else 224


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
