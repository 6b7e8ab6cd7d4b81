"""pytest-camcheck: tests about where a vision model looks.

Example:
    >>> from pytest_camcheck import compute_cam, assert_attends_to, Box
"""

import pytest

pytest.register_assert_rewrite("pytest_camcheck.assertions")

from .assertions import Rule, assert_attends_more_to, assert_attends_to, assert_not_attends_to  # noqa: E402
from .engine import METHODS, CamResult, compute_cam  # noqa: E402
from .errors import CamCheckError  # noqa: E402
from .geometry import geometry_neutral  # noqa: E402
from .regions import Box  # noqa: E402
from .zoo import load_model, register_model  # noqa: E402

__all__ = [
    "Box",
    "CamCheckError",
    "CamResult",
    "METHODS",
    "Rule",
    "assert_attends_more_to",
    "assert_attends_to",
    "assert_not_attends_to",
    "compute_cam",
    "geometry_neutral",
    "load_model",
    "register_model",
]
__version__ = "0.1.0"
