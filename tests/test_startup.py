"""The plugin costs nothing until used: importing it, or running a session that uses no camcheck fixture, loads
neither torch nor torchvision nor scikit-image (nor numpy or Pillow); the public API still imports as before.
(Wall time and memory are measured by benchmarks/startup.py, not here.)"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .sessions import lean_run

HEAVY = ("torch", "torchvision", "skimage", "numpy", "PIL", "timm", "transformers")
ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                          cwd=ROOT).stdout.strip()


def test_importing_the_plugin_loads_no_heavy_module_and_the_public_names_load_on_first_use() -> None:
    out = _python(f"import sys, pytest_camcheck.plugin, pytest_camcheck as p, pytest_camcheck.settings\n"
                  f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
                  "from pytest_camcheck import compute_cam, assert_attends_to, Box, CamCheckError, Rule, METHODS\n"
                  "print('torch' in sys.modules, compute_cam.__module__, 'gradcam' in METHODS, "
                  "set(p.__all__) <= set(dir(p)))")
    assert out.splitlines() == ["[]", "True pytest_camcheck.engine.core True True"]


def test_an_unknown_name_is_an_attribute_error_and_the_version_comes_from_the_metadata() -> None:
    import pytest_camcheck

    with pytest.raises(AttributeError, match="has no attribute 'compute_map'"):
        pytest_camcheck.compute_map  # noqa: B018
    assert pytest_camcheck.__version__ == importlib.metadata.version("pytest-camcheck")


def test_a_session_without_camcheck_fixtures_loads_no_heavy_module(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(f"""
        import sys

        def pytest_sessionfinish(session):
            heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
            with open("loaded.txt", "w") as out:
                out.write(repr(heavy))
    """)
    pytester.makepyfile("def test_addition():\n    assert 1 + 1 == 2\n")
    result = lean_run(pytester, "-p", "no:xdist", subprocess=True)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["camcheck: device auto (chosen when a camcheck fixture first needs it*"])
    assert (pytester.path / "loaded.txt").read_text() == "[]"
