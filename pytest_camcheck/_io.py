"""Writing files so that nobody ever sees a torn one: every file pytest-camcheck writes (baselines, previews,
overlays, reports, downloaded weights) goes through here.

The bytes go to a temporary file in the target's folder (``.<name>.<random hex>.tmp``), are flushed to disk, and
the file is then published under its name in one step: ``os.replace`` when an existing file may be replaced, a
hard link (which never replaces) otherwise. A failure at any point leaves the target as it was and removes the
temporary file.

Nothing is ever written through a symbolic link: a target path that is a link (working or dangling) is refused
with :class:`~pytest_camcheck.errors.FileRefused` naming it, and the temporary file is opened with ``O_EXCL |
O_NOFOLLOW``. A folder that cannot be created or written is refused the same way. Reading a ``.npz`` archive
(:func:`read_npz`) checks each member's ``.npy`` header (dtype and shape) against a byte limit before anything is
decompressed, so a zip bomb costs a few kilobytes of memory, not gigabytes.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "sub" / "out.txt"
    ...     atomic_write(path, b"one"), atomic_write(path, b"two", replace=False), path.read_bytes()
    (True, False, b'one')
"""

from __future__ import annotations

import errno
import os
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .errors import FileRefused

__all__ = ["atomic_file", "atomic_write", "check_output_file", "refuse_link", "remove_dangling_link", "read_npz",
           "resolve_path", "temp_path"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def refuse_link(path: str | os.PathLike[str], what: str = "file") -> None:
    """Raise FileRefused when ``path`` is a symbolic link (writing there would write to wherever it points).

    Example:
        >>> refuse_link("no/such/file.png")
    """
    if os.path.islink(path):
        points = os.readlink(path)
        state = "a link to" if os.path.exists(path) else "a dangling link to"
        raise FileRefused(
            f"the {what} {path} is {state} {points!r}; pytest-camcheck never writes through symbolic links. Fix: "
            f"remove the link (rm {str(path)!r}) or replace it with a regular file"
        )


def resolve_path(path: str | os.PathLike[str], error: type[Exception], what: str = "the path") -> Path:
    """``path`` made absolute with its links followed (``Path.resolve``); a symbolic-link loop, where following the
    links leads back to a link already followed, raises ``error`` naming the loop and the fix instead of the
    ``RuntimeError`` (``OSError`` from Python 3.13) that ``resolve`` raises.

    Example:
        >>> resolve_path("/no/such/file.png", ValueError).name
        'file.png'
    """
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:
        loop = isinstance(err, RuntimeError) or err.errno == errno.ELOOP
        problem = ("is a symbolic-link loop (following its links leads back to a link already followed), so there "
                   "is no file at its end" if loop else f"cannot be resolved ({err})")
        raise error(f"{what} {path} {problem}. Fix: point the link at the real file (ls -l {str(path)!r} shows "
                    "where it points), or pass the file's own path") from err


def remove_dangling_link(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` when it is a symbolic link to nothing (what ``--camcheck-update`` may repair); True when
    one was removed.

    Example:
        >>> remove_dangling_link("no/such/file.npz")
        False
    """
    if os.path.islink(path) and not os.path.exists(path):
        os.unlink(path)
        return True
    return False


def check_output_file(path: Path, asked_by: str, *, replaceable: Callable[[Path], bool] | None = None,
                      what: str = "an earlier camcheck report") -> Path:
    """Check, before a run, that ``path`` can be written at its end: not a folder, not a symbolic link, under a
    folder that exists (or can be created) and is writable, and not an existing file unless ``replaceable(path)``
    says it is ``what`` the run writes (an earlier report): a user's file is never replaced. Raises FileRefused
    naming the setting, the path and the fix; returns ``path``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     check_output_file(Path(tmp) / "new" / "report.html", "--camcheck-report").name
        'report.html'
    """
    def refuse(problem: str, fix: str) -> FileRefused:
        return FileRefused(f"{asked_by}={path}: {problem}. Fix: {fix}")

    if os.path.islink(path):
        raise refuse("the path is a symbolic link, and pytest-camcheck never writes through links",
                     "give the link's target itself, or another path")
    if path.is_dir():
        raise refuse("it is a folder", f"give a file name, e.g. {path / 'camcheck-report'}")
    if path.exists() and not (replaceable is not None and replaceable(path)):
        raise refuse(f"the file exists and is not {what}, so it is not replaced",
                     f"give another path, or delete the file (rm {str(path)!r}) if it is yours to lose")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        if os.path.islink(folder):
            raise refuse(f"{folder} is a dangling symbolic link", "remove the link or give another path")
        folder = folder.parent
    if not folder.is_dir():
        raise refuse(f"{folder} is a file, not a folder", "give a path inside a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise refuse(f"folder {folder} is not writable", f"make it writable (chmod u+w {str(folder)!r}) or write "
                     "the report elsewhere")
    return path


def _refused(err: OSError, target: Path) -> FileRefused:
    folder = target.parent
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make the folder writable (chmod u+w {str(folder)!r}) or point the path elsewhere"
        problem = f"folder {folder} is not writable"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST) and not folder.is_dir():
        fix = "remove or rename the file that stands where a folder is needed, or choose another path"
        problem = f"{folder} (or a folder above it) is not a folder"
    elif err.errno == errno.EISDIR or target.is_dir():
        fix = "remove the folder or choose a file name"
        problem = f"{target} is a folder"
    else:
        fix = "check the path and the disk"
        problem = f"{type(err).__name__}: {err.strerror or err}"
    return FileRefused(f"cannot write {target}: {problem}. Fix: {fix}")


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
    refuse_link(target)
    if target.is_dir():
        raise FileRefused(f"cannot write {target}: it is a folder. Fix: remove the folder or choose a file name")
    temp = temp_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
    except FileRefused:
        raise
    except OSError as err:
        raise _refused(err, target) from err
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        refuse_link(target)  # planted while the bytes were written; a rename would only replace the link itself
        if not _publish(temp, target, replace):
            raise FileExistsError(f"{target} exists and was kept")
    except (FileExistsError, FileRefused):
        raise
    except PermissionError as err:
        raise _refused(err, target) from err
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


NPY_HEADER_LIMIT = 4096


def read_npz(path: str | os.PathLike[str], limit: Callable[[str, tuple[int, ...], Any], str | None], *,
             max_members: int = 64) -> dict[str, Any]:
    """The arrays of an ``.npz`` archive, each member's ``.npy`` header read first and passed to
    ``limit(name, shape, dtype)``, which returns why the member is refused (or None); nothing is decompressed
    beyond the header of a refused member. Pickled (object) arrays are refused. Raises ValueError saying what
    is wrong; the caller names the file and the fix.

    Example:
        >>> import io, numpy as np, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     np.savez(f"{tmp}/a.npz", x=np.zeros(3))
        ...     read_npz(f"{tmp}/a.npz", lambda name, shape, dtype: None)["x"].shape
        (3,)
    """
    import numpy as np

    fmt = np.lib.format
    out: dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if len(members) > max_members:
            raise ValueError(f"the archive has {len(members)} members, more than a baseline ever holds")
        for info in members:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with archive.open(info) as member:
                version = fmt.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(member, max_header_size=NPY_HEADER_LIMIT)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(member, max_header_size=NPY_HEADER_LIMIT)
                else:
                    raise ValueError(f"member {name!r} has .npy format version {version}, not 1.0 or 2.0")
                if dtype.hasobject:
                    raise ValueError(f"member {name!r} holds Python objects (pickled data), which are never loaded")
                why = limit(name, tuple(shape), dtype)
                if why:
                    raise ValueError(f"member {name!r} ({dtype}, shape {tuple(shape)}) {why}")
                size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                data = member.read(size)
                if len(data) != size:
                    raise ValueError(f"member {name!r} is truncated ({len(data)} of {size} bytes)")
            array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
            out[name] = array.copy() if not array.flags.writeable else array
    return out
