"""Where checks leave their pictures and who hears about them.

Plain module state, set by the pytest plugin (or by hand outside pytest): the artifacts folder, and
listeners that receive one :class:`CheckRecord` per assertion (the plugin turns them into JUnit properties,
HTML report extras and the terminal summary).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ._text import safe_name

__all__ = ["CheckRecord", "add_listener", "describe_image", "artifact_path", "artifacts_dir", "progress", "record",
           "remove_listener", "set_artifacts_dir", "set_progress"]


@dataclass
class CheckRecord:
    """What one attention check measured and decided.

    Example:
        >>> CheckRecord("attends_to", True, "gradcam", "layer4", 3, "cat", 0.9, {"lift": 2.0}, {"min_lift": 1.5}).passed
        True
    """

    check: str
    passed: bool
    method: str
    layer: str
    target: int
    label: str | None
    probability: float | None
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    overlay: Path | None = None
    message: str = ""
    test_id: str = field(default_factory=lambda: current_test_id())
    image: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def describe_image(image: Any) -> str:
    """Which image a check used, for the report: a sample image's name, a file's path, else its kind and size.

    Example:
        >>> describe_image("photos/dog.jpg"), describe_image(None)
        ('photos/dog.jpg', '')
    """
    if image is None:
        return ""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    info = getattr(image, "info", None)
    if isinstance(info, dict) and info.get("camcheck_name"):
        return str(info["camcheck_name"])
    if getattr(image, "filename", ""):
        return str(image.filename)
    if isinstance(image, (list, tuple)):
        return f"{len(image)} images"
    size = getattr(image, "size", None)
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"{type(image).__name__} of shape {tuple(shape)}"
    if isinstance(size, tuple):
        return f"PIL image {size[0]}x{size[1]} px"
    return type(image).__name__


_state: dict[str, Any] = {"artifacts_dir": None}
_listeners: list[Callable[[CheckRecord], None]] = []
_counter = itertools.count()


def current_test_id() -> str:
    """The running pytest test's id, or '' outside a test."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def set_artifacts_dir(path: str | os.PathLike | None) -> None:
    """Folder for overlay pictures; ``None`` goes back to the default (a folder in the system temp dir).

    Example:
        >>> set_artifacts_dir(None)
    """
    _state["artifacts_dir"] = Path(path) if path is not None else None


def artifacts_dir() -> Path:
    """The folder overlay pictures are written to: the one set with :func:`set_artifacts_dir` (under pytest,
    ``--camcheck-artifacts`` or ``<basetemp>/camcheck``), else ``camcheck-artifacts-<uid>`` in the system's
    temporary folder (``camcheck-artifacts`` where the system has no user ids; refused when it is a link or
    another user's, see :func:`artifact_path`).

    Example:
        >>> artifacts_dir().name != ""
        True
    """
    path = _state["artifacts_dir"]
    return path if path is not None else _default_artifacts_dir()


def _default_artifacts_dir() -> Path:
    """Outside pytest: a folder of this user's own in the system's temporary folder (shared by every user)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    return Path(tempfile.gettempdir()) / ("camcheck-artifacts" + (f"-{uid}" if uid is not None else ""))


def _check_default_folder(path: Path) -> None:
    """The default folder lies in a temporary folder every user may write to: another user's folder or a link
    planted at its name would have the pictures written where that user chose, so both are refused. It is made
    here, private to this user, so that nothing can be planted between this check and the writing."""
    from .errors import FileRefused

    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError:
        return  # not writable: the writer reports it with its own message
    if path.is_symlink():
        raise FileRefused(f"{path} is a symbolic link; camcheck writes its pictures only into a real folder. Fix: "
                          "remove the link, or choose a folder with set_artifacts_dir() (--camcheck-artifacts)")
    if hasattr(os, "getuid") and path.exists() and path.stat().st_uid != os.getuid():
        raise FileRefused(f"{path} belongs to another user; camcheck will not write its pictures there. Fix: choose "
                          "a folder with set_artifacts_dir() (--camcheck-artifacts)")


def artifact_path(check: str, suffix: str = ".png") -> Path:
    """A file name for one check's picture that never collides: test id, xdist worker, process, counter.

    Example:
        >>> artifact_path("attends_to").suffix
        '.png'
    """
    test = safe_name(current_test_id().split("/")[-1], "check")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder = artifacts_dir()
    if _state["artifacts_dir"] is None:
        _check_default_folder(folder)
    return folder / f"{test[:120]}-{check}-{worker}-{os.getpid()}-{next(_counter)}{suffix}"


def add_listener(fn: Callable[[CheckRecord], None]) -> None:
    """Call ``fn`` with every :class:`CheckRecord` from now on.

    Example:
        >>> seen = []
        >>> add_listener(seen.append); remove_listener(seen.append)
    """
    _listeners.append(fn)


def remove_listener(fn: Callable[[CheckRecord], None]) -> None:
    """Stop calling ``fn``; a listener not registered is ignored."""
    if fn in _listeners:
        _listeners.remove(fn)


def record(rec: CheckRecord) -> None:
    """Hand ``rec`` to every listener."""
    for fn in list(_listeners):
        fn(rec)


_progress: list[Callable[[str, int, int], None] | None] = [None]


def set_progress(fn: Callable[[str, int, int], None] | None) -> Callable[[str, int, int], None] | None:
    """Where long checks report progress: ``fn(text, done, total)``, a line of text and the units done out of
    ``total``; ``None`` for nowhere. Returns the one set before. The plugin sets pytest's terminal reporter (not under ``-q`` or on pytest-xdist workers), the
    ``camcheck`` command line a progress bar.

    Example:
        >>> before = set_progress(None); _ = set_progress(before)
    """
    before, _progress[0] = _progress[0], fn
    return before


def progress(text: str, done: int, total: int) -> None:
    """Report progress of a long check to whoever :func:`set_progress` named (nobody by default).

    Example:
        >>> progress("camcheck dataset: 10/200 images", 10, 200)
    """
    fn = _progress[0]
    if fn is not None:
        fn(text, done, total)
