"""camcheck JSON: one file per image, ``{"image": "dog.jpg", "regions": {...}, "source": "..."}``, the image
path relative to the JSON file, with the image's optional ``"width"`` and ``"height"`` (checked against the
file, as COCO's and VOC's are). A folder is searched recursively (hidden folders skipped); JSON files without an
``"image"`` entry are not annotations and are left alone.

Each region value is one object or a list of objects of that label; an object is a box ``[x0, y0, x1, y1]``
(pixels, x1/y1 exclusive), ``{"box": [...]}`` or ``{"polygon": [x1, y1, x2, y2, ...]}`` (or ``[[x, y], ...]``),
with optional ``"difficult": true`` and any other fields, kept in ``extra``; the file's other top-level fields
are kept in the image's ``extra``::

    {"image": "street.jpg",
     "regions": {"car": [[10, 40, 90, 80], {"box": [120, 50, 200, 95], "difficult": true}],
                 "sign": {"polygon": [[300, 20], [340, 20], [320, 60]], "reviewed_by": "ana"}},
     "camera": "front-left"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .coco import parse_json
from .core import Entry, ObjectSpec, Shape, annotation_error, check_declared, image_size, make_box, make_polygon

_FORMAT = '{"image": "dog.jpg", "regions": {"dog": [x0, y0, x1, y1]}}'
_OBJECT = '[x0, y0, x1, y1], {"box": [x0, y0, x1, y1]} or {"polygon": [x1, y1, x2, y2, ...]}'
_LAYOUT = "[x0, y0, x1, y1] in pixels, x1/y1 exclusive"
_TOP = {"image", "regions", "source", "width", "height"}


def is_camcheck(spec: Any) -> bool:
    """Whether a parsed JSON document is a camcheck annotation."""
    return isinstance(spec, dict) and "image" in spec


def _flat(points: Any) -> Any:
    if isinstance(points, list) and points and all(isinstance(p, (list, tuple)) for p in points):
        return [v for p in points for v in (p if len(p) == 2 else [None, None, None])]
    return points


def _object(label: str, value: Any, size: tuple[int, int], file: Path, entry: str) -> ObjectSpec:
    if isinstance(value, list):
        if len(value) != 4:
            raise annotation_error(file, entry, f"is {value!r}", f"give each object as {_OBJECT}")
        return ObjectSpec(label, Shape("box", make_box(value, size, file, entry, _LAYOUT)))
    if not isinstance(value, dict) or ("box" in value) == ("polygon" in value):
        raise annotation_error(file, entry, f"is {str(value)[:80]!r}", f"give each object as {_OBJECT}")
    difficult = value.get("difficult", False)
    if not isinstance(difficult, bool):
        raise annotation_error(file, entry, f'"difficult" is {difficult!r}', "write true or false")
    if "box" in value:
        if not isinstance(value["box"], list) or len(value["box"]) != 4:
            raise annotation_error(file, entry, f'"box" is {value["box"]!r}', f"write {_LAYOUT}")
        shape = Shape("box", make_box(value["box"], size, file, entry, _LAYOUT))
    else:
        shape = Shape("polygon", (make_polygon(_flat(value["polygon"]), size, file, entry),))
    extra = {k: v for k, v in value.items() if k not in ("box", "polygon", "difficult")}
    return ObjectSpec(label, shape, difficult, extra)


def read_file(file: Path, spec: Any, root: Path) -> Entry:
    """One camcheck JSON annotation as an entry."""
    if not is_camcheck(spec) or not isinstance(spec["image"], str):
        raise annotation_error(file, '"image"', "is missing or not a file name", f"write {_FORMAT}")
    path = file.parent / spec["image"]
    size = image_size(path, f"{file}, \"image\"")
    if "width" in spec or "height" in spec:
        check_declared(spec.get("width"), spec.get("height"), size, file, '"width", "height"', path)
    regions = spec.get("regions", {})
    if not isinstance(regions, dict):
        raise annotation_error(file, '"regions"', f"is {type(regions).__name__}, not an object", f"write {_FORMAT}")
    objects = []
    for label, value in regions.items():
        several = isinstance(value, list) and bool(value) and isinstance(value[0], (list, dict))
        for i, one in enumerate(value if several else [value]):
            entry = f'region "{label}"' + (f" object {i + 1}" if several else "")
            objects.append(_object(label, one, size[:2], file, entry))
    try:
        name = path.relative_to(root).as_posix()
    except ValueError:
        name = path.name
    extra = {k: v for k, v in spec.items() if k not in _TOP}
    return Entry(name, path, size[:2], tuple(objects), str(spec.get("source", file)), extra)


def load_file(file: Path) -> list[Entry]:
    """One camcheck JSON file."""
    return [read_file(file, parse_json(file), file.parent)]


def load_folder(folder: Path) -> list[Entry]:
    """Every camcheck JSON file under ``folder`` (recursively, hidden folders skipped), in path order."""
    entries = []
    for file in sorted(folder.rglob("*.json")):
        if any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue
        spec = parse_json(file)
        if is_camcheck(spec):
            entries.append(read_file(file, spec, folder))
    return entries
