"""Shared helpers of the whole repository: the tests, the examples and the package's doctests.

- ``doctest_namespace``: what the ``>>>`` examples of ``pytest_camcheck`` use without importing it (``torch``,
  ``np``, ``Path``, ``Image``, ``Box``, ``make_scene``, ``HELD_OUT``, ``shapes_model``: the bundled
  ``camcheck-shapes`` model, ``model`` and ``image``: a tiny classifier and a 32 x 32 image).
- ``lean_run(pytester, *args, subprocess=False)``: a pytest session without the plugins these tests do not need
  (:mod:`tests.sessions`).
- ``project``: a pytester folder with ``tests/models.py`` copied in as ``tests_models`` (the tiny classifier
  and the hand-computable models), for test files and conftests written by the tests.

torch and torchvision are imported here, before any test runs: pytester's in-process sessions unload every
module first imported inside them, and torch's compiled operator libraries cannot be loaded twice in one
process. (The plugin itself imports neither, so a session that uses no camcheck fixture does not pay for them.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (see the module doc)

ROOT = Path(__file__).resolve().parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on two cores: one torch thread per worker instead of two fighting for each core
    torch.set_num_threads(1)


_XDIST_IDENTITY = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``pytest -n 2`` each test runs in a worker whose environment says so; the pytest sessions and
    command-line runs the tests start themselves are not workers and must not inherit that (pytest-benchmark
    and the progress line turn themselves off on workers)."""
    for name in _XDIST_IDENTITY:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def one_torch_thread() -> Any:
    """One torch intra-op thread for a module of many small-model calls (faster than two threads contending),
    restored afterwards: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def lean_run() -> Callable[..., pytest.RunResult]:
    """``lean_run(pytester, *args, subprocess=False)``: :func:`tests.sessions.lean_run`."""
    from tests.sessions import lean_run

    return lean_run


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder whose test files can ``from tests_models import TinyClassifier, KnownGradient, ...``."""
    shutil.copy(ROOT / "tests" / "models.py", pytester.path / "tests_models.py")
    return pytester


@pytest.fixture(scope="session")
def _doctest_objects() -> dict[str, Any]:
    from PIL import Image

    from pytest_camcheck import Box
    from pytest_camcheck.bundled import load_bundled
    from pytest_camcheck.scenes import HELD_OUT, make_scene
    from tests.models import TinyClassifier

    return {"torch": torch, "np": np, "Path": Path, "Image": Image, "Box": Box, "make_scene": make_scene,
            "HELD_OUT": HELD_OUT, "shapes_model": load_bundled("camcheck-shapes"),
            "model": TinyClassifier(seed=0).eval(), "image": torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))}


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest) -> None:
    if isinstance(request.node, pytest.DoctestItem):
        request.getfixturevalue("doctest_namespace").update(request.getfixturevalue("_doctest_objects"))
