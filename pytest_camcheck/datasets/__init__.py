"""Annotated datasets from the files teams already have: COCO instances JSON, Pascal VOC XML, YOLO txt and
camcheck JSON (one reader per module), all giving the same :class:`Dataset` of images with objects.

Example:
    >>> ds = load_dataset("fixtures/shapes-coco/instances.json")
    >>> obj = ds[0].objects[0]
    >>> type(obj.label).__name__, obj.difficult
    ('str', False)
"""

from __future__ import annotations

import os
from pathlib import Path

from .._io import resolve_path
from ..errors import AnnotationError
from . import camcheck, coco, voc, yolo
from .core import AnnotatedObject, Dataset, Entry

__all__ = ["AnnotatedObject", "Dataset", "load_dataset"]

_LAYOUTS = ("a COCO instances JSON file, a Pascal VOC folder (Annotations/*.xml + JPEGImages/) or XML file, a YOLO "
            "folder (images/, labels/, classes.txt or data.yaml), or a folder of camcheck JSON files "
            '({"image": "a.jpg", "regions": {"dog": [x0, y0, x1, y1]}})')


def _read(path: Path, images: Path | None) -> tuple[str, list[Entry]]:
    if path.is_file():
        if path.suffix.lower() == ".xml":
            return "voc", voc.load_file(path, images)
        if path.suffix.lower() == ".json":
            spec = coco.parse_json(path)
            if coco.is_coco(spec):
                return "coco", coco.read_coco(path, spec, images)
            if camcheck.is_camcheck(spec):
                return "camcheck", [camcheck.read_file(path, spec, path.parent)]
            keys = ", ".join(list(spec)[:6]) if isinstance(spec, dict) else type(spec).__name__
            raise AnnotationError(f"{path}: this JSON is neither COCO instances (\"images\" and \"annotations\") nor "
                                  f"a camcheck annotation (\"image\"); it has: {keys}. Fix: pass {_LAYOUTS}")
        raise AnnotationError(f"{path}: {path.suffix or 'a file without suffix'} is not an annotation format. "
                              f"Fix: pass {_LAYOUTS}")
    if (path / "Annotations").is_dir():
        return "voc", voc.load_folder(path, images)
    if yolo.is_yolo(path):
        return "yolo", yolo.load(path, images)
    entries = camcheck.load_folder(path)
    if entries:
        return "camcheck", entries
    raise AnnotationError(f"{path}: no annotations found in this folder. Fix: pass {_LAYOUTS}")


def load_dataset(path: str | os.PathLike[str], *, images: str | os.PathLike[str] | None = None) -> Dataset:
    """The annotated images at ``path``: a COCO instances JSON, a Pascal VOC folder or XML file, a YOLO folder,
    or a folder of camcheck JSON files (searched recursively). ``images``: the folder holding the image files
    when they are not where the format puts them.

    Every annotation is checked now (image headers read, nothing decoded or written); a bad file raises
    :class:`~pytest_camcheck.errors.AnnotationError` naming the file, the entry and the fix. Coordinates are in
    the displayed image's pixels (EXIF orientation applied). ``dataset[i]`` decodes one image.

    Example:
        >>> ds = load_dataset("fixtures/shapes-coco/instances.json")
        >>> ds.format, len(ds) == len(ds.entries)
        ('coco', True)
    """
    where = Path(path).expanduser()
    if not where.exists():
        raise AnnotationError(f"{resolve_path(where, AnnotationError, 'the dataset path')}: no such file or folder. "
                              f"Fix: pass {_LAYOUTS}")
    folder = None
    if images is not None:
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise AnnotationError(f"images={str(images)!r}: {resolve_path(folder, AnnotationError, 'the folder')} is "
                                  "not a folder. Fix: pass the folder holding the image files, or leave images out")
    fmt, entries = _read(where, folder)
    if not entries:
        raise AnnotationError(f"{where}: the dataset has no image. Fix: add images and their annotations")
    _unique(entries)
    return Dataset(entries, format=fmt, root=where)


def _unique(entries: list[Entry]) -> None:
    """One entry per image file, and one image per name: checks, reports and baselines are keyed by the name."""
    files: dict[Path, Entry] = {}
    names: dict[str, Entry] = {}
    for entry in entries:
        first = files.setdefault(entry.path.resolve(), entry)
        if first is not entry:
            raise AnnotationError(f"{entry.source}: annotates {entry.path}, which {first.source} annotates too. Fix: "
                                  "annotate every image once")
        first = names.setdefault(entry.name, entry)
        if first is not entry:
            raise AnnotationError(f"{entry.source}: the image {entry.path} and {first.path} would both be named "
                                  f"{entry.name!r} in checks, reports and baselines. Fix: pass images=<the folder "
                                  "holding both> to load_dataset, so that each is named by its path in it")
