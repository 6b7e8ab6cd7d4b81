"""Lean pytester sessions, shared by the tests that start pytest (also offered as the ``lean_run`` fixture)."""

from __future__ import annotations

import pytest

# hypothesis costs about a second per session, and so do unraisableexception's five gc.collect() passes per
# in-process run; pytest-benchmark and pytest-html add hooks these tests do not use
LEAN = ("-p", "no:hypothesispytest", "-p", "no:unraisableexception", "-p", "no:benchmark", "-p", "no:html",
        "-p", "no:cacheprovider")


def lean_run(pytester: pytest.Pytester, *args: str, subprocess: bool = False) -> pytest.RunResult:
    """A session in ``pytester``'s folder without the plugins above; ``subprocess`` runs it in a new process."""
    run = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    return run(*LEAN, *args)
