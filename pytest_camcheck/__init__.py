"""pytest-camcheck: tests about where a vision model looks.

The public names are loaded on first use, so ``import pytest_camcheck`` (and the pytest plugin) imports
neither torch nor torchvision until a test needs them.

Example:
    >>> from pytest_camcheck import compute_cam, assert_attends_to, Box
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .assertions import assert_attends_more_to, assert_attends_to, assert_not_attends_to
    from .dataset_check import DatasetResult, assert_dataset_attends_to
    from .datasets import Dataset, load_dataset
    from .engine import METHODS, CamResult, compute_cam
    from .errors import CamCheckError
    from .datasets import load_dataset
    from .geometry import geometry_neutral
    from .quality import (FaithfulnessResult, SanityResult, StabilityResult, assert_faithful, assert_sane,
                          assert_stable)
    from .regions import Box
    from .rule import Rule
    from .zoo import load_model, register_model

_WHERE = {
    "Box": "regions",
    "CamCheckError": "errors",
    "CamResult": "engine",
    "FaithfulnessResult": "quality",
    "Dataset": "datasets",
    "DatasetResult": "dataset_check",
    "METHODS": "engine",
    "Rule": "rule",
    "SanityResult": "quality",
    "StabilityResult": "quality",
    "assert_attends_more_to": "assertions",
    "assert_attends_to": "assertions",
    "assert_faithful": "quality",
    "assert_dataset_attends_to": "dataset_check",
    "assert_not_attends_to": "assertions",
    "assert_sane": "quality",
    "assert_stable": "quality",
    "compute_cam": "engine",
    "geometry_neutral": "geometry",
    "load_dataset": "datasets",
    "load_model": "zoo",
    "register_model": "zoo",
}

__all__ = sorted(_WHERE)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pytest-camcheck")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _version()
    elif name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE, "__version__"])
