"""Writing files so that nobody ever sees a torn one: every file pytest-camcheck writes (baselines, previews,
overlays, reports, downloaded weights) goes through here.

The bytes go to a temporary file in the target's folder (``.<name>.<random hex>.tmp``), are flushed to disk, and
the file is then published under its name in one step: ``os.replace`` when an existing file may be replaced, a
hard link (which never replaces) otherwise. A failure at any point leaves the target as it was and removes the
temporary file.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "sub" / "out.txt"
    ...     atomic_write(path, b"one"), atomic_write(path, b"two", replace=False), path.read_bytes()
    (True, False, b'one')
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["atomic_file", "atomic_write", "temp_path"]


def temp_path(target: Path) -> Path:
    """The temporary name used while ``target`` is written: hidden, in the same folder (so the final rename
    stays on one file system), unique per call.

    Example:
        >>> temp_path(Path("out/map.png")).name.startswith(".map.png.")
        True
    """
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")


def _publish(temp: Path, target: Path, replace: bool) -> bool:
    if replace:
        os.replace(temp, target)
        return True
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError:  # file systems without hard links: a rename is still atomic, never a torn file
        if target.exists():
            return False
        os.replace(temp, target)
    return True


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, replace: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file to stream ``path``'s bytes into; on a normal exit it is flushed and published
    (see the module doc), on an exception it is removed and ``path`` is untouched. Parent folders are created.
    With ``replace=False`` an existing ``path`` is kept and :class:`FileExistsError` raised after the block.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with atomic_file(Path(tmp) / "big.bin") as out:
        ...         _ = out.write(b"chunk")
        ...     (Path(tmp) / "big.bin").read_bytes()
        b'chunk'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    try:
        with open(temp, "xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if not _publish(temp, target, replace):
            raise FileExistsError(f"{target} exists and was kept")
    finally:
        temp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` atomically, creating parent folders; returns False, writing nothing, when
    ``replace`` is False and ``path`` exists (even if another process creates it at the same moment).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     atomic_write(Path(tmp) / "a.bin", b"\\x00")
        True
    """
    try:
        with atomic_file(path, replace=replace) as out:
            out.write(data)
    except FileExistsError:
        if replace:
            raise
        return False
    return True
