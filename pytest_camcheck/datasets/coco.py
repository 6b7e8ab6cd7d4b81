"""COCO instances JSON: ``images`` (id, file_name, width, height), ``categories`` (id, name) and
``annotations`` (image_id, category_id, ``bbox`` = [x, y, width, height] in pixels, ``segmentation`` as
polygons [[x1, y1, x2, y2, ...], ...] or RLE, ``iscrowd``).

An object's region is its segmentation when it has one (polygons rasterised with scikit-image, RLE decoded by
pycocotools, an optional extra), else its box. ``iscrowd`` objects are flagged ``difficult``. Image files are
looked up in ``images`` when given, else beside the JSON, in ``images/`` beside it, and in ``../images``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .core import (PYCOCOTOOLS_EXTRA, Entry, ObjectSpec, Shape, annotation_error, check_declared, image_size,
                   make_box, make_polygon, number)

_LAYOUT = "[x, y, width, height] in pixels of the displayed image"
_OBJECT_KEYS = {"id", "image_id", "category_id", "bbox", "segmentation", "iscrowd", "area"}
_IMAGE_KEYS = {"id", "file_name", "width", "height"}


def is_coco(spec: Any) -> bool:
    """Whether a parsed JSON document looks like COCO instances."""
    return isinstance(spec, dict) and "images" in spec and "annotations" in spec


def _list(spec: dict, key: str, file: Path) -> list:
    value = spec.get(key)
    if not isinstance(value, list):
        raise annotation_error(file, f'"{key}"', f"is {type(value).__name__}, not a list",
                               f'give "{key}" as a list of objects, as COCO instances files do')
    return value


def _find(file_name: str, file: Path, images: Path | None, entry: str) -> Path:
    tried = [images / file_name] if images is not None else [
        file.parent / file_name, file.parent / "images" / file_name, file.parent.parent / "images" / file_name]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise annotation_error(file, entry, f"the image {file_name!r} was not found (looked for "
                           f"{', '.join(str(p) for p in tried)})",
                           "pass images=<folder holding the images> to load_dataset, or correct file_name")


def _rle(seg: dict, size: tuple[int, int], file: Path, entry: str) -> Shape:
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        raise annotation_error(file, entry, "the segmentation is run-length encoded (RLE), which needs pycocotools",
                               PYCOCOTOOLS_EXTRA) from None
    if list(seg.get("size", [])) != list(size) or "counts" not in seg:
        raise annotation_error(file, entry, f"the RLE segmentation has size {seg.get('size')!r} (and counts: "
                               f"{'counts' in seg}); the image is {list(size)} (height, width)",
                               "give the RLE of this image, {\"size\": [height, width], \"counts\": ...}")
    return Shape("rle", {"counts": seg["counts"]})


def _shape(ann: dict, size: tuple[int, int], file: Path, entry: str) -> Shape:
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        return _rle(seg, size, file, entry)
    if isinstance(seg, list) and seg:
        parts = seg if isinstance(seg[0], list) else [seg]
        return Shape("polygon", tuple(make_polygon(p, size, file, entry) for p in parts))
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise annotation_error(file, entry, f"bbox is {bbox!r}", f"give bbox as {_LAYOUT}")
    x, y, w, h = (number(v, file, entry, n) for v, n in zip(bbox, ("bbox x", "bbox y", "bbox width", "bbox height")))
    return Shape("box", make_box((x, y, x + w, y + h), size, file, entry, _LAYOUT))


def read_coco(file: Path, spec: dict, images: Path | None) -> list[Entry]:
    """The entries of a COCO instances document ``spec`` read from ``file``."""
    categories = {}
    for i, cat in enumerate(_list(spec, "categories", file)):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise annotation_error(file, f"category {i}", f"is {cat!r}", 'give {"id": 1, "name": "dog"}')
        categories[cat["id"]] = cat["name"]
    found: dict[Any, tuple[dict, Path, tuple[int, int, int]]] = {}
    for i, img in enumerate(_list(spec, "images", file)):
        entry = f"image {i}"
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise annotation_error(file, entry, f"is {str(img)[:80]!r}",
                                   'give {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}')
        entry = f"image id {img['id']} ({img['file_name']})"
        if img["id"] in found:
            raise annotation_error(file, entry, "this image id appears twice", "give every image its own id")
        path = _find(img["file_name"], file, images, entry)
        size = image_size(path, f"{file}, {entry}")
        if "width" in img or "height" in img:
            check_declared(img.get("width"), img.get("height"), size, file, entry, path)
        found[img["id"]] = (img, path, size)
    objects: dict[Any, list[ObjectSpec]] = {key: [] for key in found}
    for i, ann in enumerate(_list(spec, "annotations", file)):
        entry = f"annotation {i}" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            raise annotation_error(file, entry, f"is {ann!r}", "give an object with image_id, category_id and bbox")
        if ann.get("image_id") not in found:
            raise annotation_error(file, entry, f"image_id {ann.get('image_id')!r} is not in \"images\"",
                                   "add the image to \"images\" or correct image_id")
        if ann.get("category_id") not in categories:
            raise annotation_error(file, entry, f"category_id {ann.get('category_id')!r} is not in \"categories\" "
                                   f"(ids: {', '.join(map(str, categories)) or 'none'})",
                                   "add the category or correct category_id")
        h, w, _ = found[ann["image_id"]][2]
        shape = _shape(ann, (h, w), file, entry)
        extra = {k: v for k, v in ann.items() if k not in _OBJECT_KEYS}
        objects[ann["image_id"]].append(ObjectSpec(categories[ann["category_id"]], shape, bool(ann.get("iscrowd")),
                                                   extra))
    root = images if images is not None else file.parent
    entries = []
    for key, (img, path, size) in found.items():
        extra = {k: v for k, v in img.items() if k not in _IMAGE_KEYS}
        entries.append(Entry(_name(path, root), path, size[:2], tuple(objects[key]),
                             f"{file}, image id {key} ({img['file_name']})", extra))
    return entries


def _name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def load(file: Path, images: Path | None) -> list[Entry]:
    """Read a COCO instances JSON file."""
    return read_coco(file, parse_json(file), images)


def parse_json(file: Path) -> Any:
    """The parsed JSON of ``file``; malformed JSON names the line and column."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise annotation_error(file, f"line {err.lineno}, column {err.colno}", f"is not valid JSON ({err.msg})",
                               "repair the file (a JSON linter shows the spot)") from err
    except UnicodeDecodeError as err:
        raise annotation_error(file, "", f"is not UTF-8 text ({err})", "save it as UTF-8 JSON") from err
