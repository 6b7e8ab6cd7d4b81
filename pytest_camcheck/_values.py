"""Validation of the numbers a user hands over as thresholds, written once for the assertions, the regression
checks and the plugin's settings.

Example:
    >>> import numpy as np
    >>> check_threshold("min_lift", np.float32(1.5), low=0.0)
    1.5
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_threshold", "parse_threshold"]


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" between {low:g} and {high:g}"
    if low is not None:
        return f" >= {low:g}"
    return f" <= {high:g}" if high is not None else ""


def _refuse(name: str, value: Any, low: float | None, high: float | None, default: float | None) -> ValueError:
    from .errors import CamCheckError

    hint = f" (default {default:g})" if default is not None else ""
    return CamCheckError(f"{name}={value!r} is not a valid threshold; pass a finite number{_bounds(low, high)}{hint}")


def check_threshold(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                    default: float | None = None) -> float:
    """``value`` as a float when it is a finite real number (any type: int, float, numpy or torch scalar) within
    ``[low, high]``; otherwise a :class:`~pytest_camcheck.errors.CamCheckError` naming ``name``, the bounds and the
    default. Booleans, strings, NaN and infinities are refused.

    Example:
        >>> check_threshold("ssim_min", 0.8, low=-1, high=1)
        0.8
        >>> try:
        ...     check_threshold("ssim_min", "0.8", low=-1, high=1, default=0.95)
        ... except ValueError as err:
        ...     print(err)
        ssim_min='0.8' is not a valid threshold; pass a finite number between -1 and 1 (default 0.95)
    """
    number = value
    if not isinstance(value, numbers.Real) and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        number = value.item()  # a 0-d array or tensor
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise _refuse(name, value, low, high, default)
    number = float(number)
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        raise _refuse(name, value, low, high, default)
    return number


def parse_threshold(name: str, text: str, *, low: float | None = None, high: float | None = None,
                    default: float | None = None) -> float:
    """A threshold written as text (command line, environment, ini file), checked as :func:`check_threshold`.

    Example:
        >>> parse_threshold("--camcheck-min-lift", " 2 ", low=0)
        2.0
    """
    try:
        return check_threshold(name, float(text), low=low, high=high, default=default)
    except ValueError:  # not a number, or CamCheckError: the message quotes the text as written
        raise _refuse(name, text, low, high, default) from None
