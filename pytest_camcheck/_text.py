"""Texts written once and used by every message and file name: a target as a person reads it, and file-safe names.

Example:
    >>> safe_name("test_map[resnet18 / cpu]")
    'test_map_resnet18_cpu'
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["safe_name", "target_text"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str, fallback: str = "x") -> str:
    """``text`` with every run of characters other than letters, digits, ``_ . -`` replaced by ``_``, and no
    leading or trailing ``_`` or ``.`` (so never a hidden file or a path); ``fallback`` when nothing is left.

    Example:
        >>> safe_name("../etc"), safe_name("???", "check")
        ('etc', 'check')
    """
    return _UNSAFE.sub("_", text).strip("_.") or fallback


def target_text(result: Any) -> str:
    """What a check explained, from a :class:`~pytest_camcheck.CamResult` (``target``, ``label``, ``score``,
    ``probability``): ``class 3 'cat' (score 2.5, p=0.910)``, or ``callable target (score ...)``.

    Example:
        >>> from types import SimpleNamespace
        >>> target_text(SimpleNamespace(target=3, label="cat", score=2.5, probability=0.91))
        "class 3 'cat' (score 2.5, p=0.910)"
    """
    label = f" {result.label!r}" if result.label else ""
    prob = f", p={result.probability:.3f}" if result.probability is not None else ""
    what = "callable target" if result.target < 0 else f"class {result.target}{label}"
    return f"{what} (score {result.score:.4g}{prob})"
