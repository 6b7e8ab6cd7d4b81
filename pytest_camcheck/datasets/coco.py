"""COCO instances JSON: ``images`` (id, file_name, width, height), ``categories`` (id, name) and
``annotations`` (image_id, category_id, ``bbox`` = [x, y, width, height] in pixels, ``segmentation`` as
polygons [[x1, y1, x2, y2, ...], ...] or RLE, ``iscrowd``).

An object's region is its segmentation when it has one (polygons rasterised with scikit-image, RLE decoded by
pycocotools, an optional extra), else its box; a segmentation whose extent disagrees with the object's own bbox
(their boxes overlap less than half, IoU < 0.5) is refused, since one of them is on the wrong pixels. ``iscrowd``
objects are flagged ``difficult``. Image files are looked up in ``images`` when given, else beside the JSON, in
``images/`` beside it, and in ``../images``.

Ids are integers or strings; a category id or name, or an image id, given twice is refused (a label must name
one category); so is an image file listed twice, or two files of one name (``load_dataset``). An RLE's counts are checked when the file is read: they must
cover the image's height x width pixels exactly, since pycocotools decodes shorter counts into arbitrary pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .core import (PYCOCOTOOLS_EXTRA, Entry, ObjectSpec, Shape, annotation_error, check_declared, image_size,
                   make_box, make_polygon, number, read_text, rle_encoded)

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


def _key(value: Any, file: Path, entry: str, what: str) -> int | str:
    """An id as COCO writes them: an integer or a string (never a bool, which JSON would match with 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise annotation_error(file, entry, f"{what} is {str(value)[:60]!r}, not an id", f"give {what} as an integer")
    return value


def _rle(seg: dict, size: tuple[int, int], file: Path, entry: str) -> Shape:
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        raise annotation_error(file, entry, "the segmentation is run-length encoded (RLE), which needs pycocotools",
                               PYCOCOTOOLS_EXTRA) from None
    given = seg.get("size")
    if not isinstance(given, list) or given != list(size) or "counts" not in seg:
        raise annotation_error(file, entry, f"the RLE segmentation has size {given!r} (and counts: "
                               f"{'counts' in seg}); the image is {list(size)} (height, width)",
                               "give the RLE of this image, {\"size\": [height, width], \"counts\": ...}")
    counts = seg["counts"]
    runs = _runs(counts, file, entry)
    if any(r < 0 for r in runs) or sum(runs) != size[0] * size[1]:
        problem = "has a negative run" if any(r < 0 for r in runs) else \
            f"covers {sum(runs)} pixels, but the image has {size[0]} x {size[1]} = {size[0] * size[1]}"
        raise annotation_error(file, entry, f"the RLE's counts {problem}",
                               "give the RLE pycocotools.mask.encode made of this image's mask")
    return Shape("rle", {"counts": counts})


def _runs(counts: Any, file: Path, entry: str) -> list[int]:
    """The run lengths of an RLE's counts: a list of integers as given, or decoded from COCO's compressed string.
    pycocotools decodes a mask from any counts without checking them (runs short of the image leave pixels of
    arbitrary memory), and has no call that returns the runs, so the string is read here as its maskApi.c
    ``rleFrString`` reads it: 6-bit characters from '0', 5 bits of value each, 0x20 = more to come, 0x10 = sign;
    from the third run on, each is a difference to the run two before."""
    if isinstance(counts, list):
        if any(isinstance(c, bool) or not isinstance(c, int) for c in counts):
            raise annotation_error(file, entry, "the RLE's counts are not all integers",
                                   "give counts as a list of run lengths, or COCO's compressed string")
        return counts
    if not isinstance(counts, str):
        raise annotation_error(file, entry, f"the RLE's counts are {type(counts).__name__}",
                               "give counts as a list of run lengths, or COCO's compressed string")
    codes = [ord(ch) - 48 for ch in counts]
    if any(not 0 <= c < 64 for c in codes):
        raise annotation_error(file, entry, "the RLE's counts string has characters outside COCO's encoding",
                               "give the string pycocotools.mask.encode made (its 'counts', decoded as ASCII)")
    runs: list[int] = []
    i = 0
    while i < len(codes):
        value, shift, more = 0, 0, True
        while more:
            if i == len(codes):
                raise annotation_error(file, entry, "the RLE's counts string ends inside a number",
                                       "give the whole string pycocotools.mask.encode made")
            c = codes[i]
            value |= (c & 0x1F) << shift
            more, i, shift = bool(c & 0x20), i + 1, shift + 5
            if not more and c & 0x10:
                value -= 1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def _extent(shape: Shape, size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) of a segmentation (an RLE's through pycocotools), None for an empty one."""
    if shape.kind == "polygon":
        xy = np.concatenate(shape.data)
        return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())
    from pycocotools import mask as coco_mask

    x, y, bw, bh = (float(v) for v in coco_mask.toBbox(rle_encoded(shape.data, size)))
    return None if bw <= 0 or bh <= 0 else (x, y, x + bw, y + bh)


def _agrees(shape: Shape, bbox: Any, size: tuple[int, int], file: Path, entry: str) -> None:
    """Refuse a segmentation whose extent overlaps the annotation's own bbox by less than half (IoU < 0.5)."""
    if not isinstance(bbox, list) or len(bbox) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                           for v in bbox):
        return  # no usable bbox beside the segmentation: nothing to compare (the segmentation is the region)
    a = _extent(shape, size)
    if a is None:
        return
    x, y, bw, bh = (float(v) for v in bbox)
    b = (x, y, x + bw, y + bh)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + max(bw, 0.0) * max(bh, 0.0) - inter
    if union > 0 and inter / union < 0.5:
        raise annotation_error(file, entry, f"the segmentation spans ({a[0]:g}, {a[1]:g})-({a[2]:g}, {a[3]:g}) but "
                               f"the bbox is ({b[0]:g}, {b[1]:g})-({b[2]:g}, {b[3]:g}): they overlap too little to be "
                               "one object", "correct the segmentation or the bbox (one of them is on other pixels)")


def _shape(ann: dict, size: tuple[int, int], file: Path, entry: str) -> Shape:
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        shape = _rle(seg, size, file, entry)
    elif isinstance(seg, list) and seg:
        parts = seg if isinstance(seg[0], list) else [seg]
        shape = Shape("polygon", tuple(make_polygon(p, size, file, entry) for p in parts))
    elif seg is not None and seg != []:
        raise annotation_error(file, entry, f"segmentation is {str(seg)[:60]!r}",
                               "give polygons [[x1, y1, x2, y2, ...]], an RLE {\"size\": ..., \"counts\": ...}, "
                               "or leave segmentation out to use the bbox")
    else:
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise annotation_error(file, entry, f"bbox is {bbox!r}", f"give bbox as {_LAYOUT}")
        x, y, w, h = (number(v, file, entry, n)
                      for v, n in zip(bbox, ("bbox x", "bbox y", "bbox width", "bbox height")))
        return Shape("box", make_box((x, y, x + w, y + h), size, file, entry, _LAYOUT))
    _agrees(shape, ann.get("bbox"), size, file, entry)
    return shape


def read_coco(file: Path, spec: dict, images: Path | None) -> list[Entry]:
    """The entries of a COCO instances document ``spec`` read from ``file``."""
    categories: dict[int | str, str] = {}
    for i, cat in enumerate(_list(spec, "categories", file)):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str) \
                or not cat["name"].strip():
            raise annotation_error(file, f"category {i}", f"is {cat!r}", 'give {"id": 1, "name": "dog"}')
        key = _key(cat["id"], file, f"category {i}", "id")
        if key in categories:
            raise annotation_error(file, f"category {i}", f"id {key!r} is given twice ({categories[key]!r} and "
                                   f"{cat['name']!r})", "give every category its own id")
        if cat["name"] in categories.values():
            other = next(k for k, v in categories.items() if v == cat["name"])
            raise annotation_error(file, f"category {i}", f"the name {cat['name']!r} is given to ids {other!r} and "
                                   f"{key!r}, so the label would stand for two categories",
                                   "give every category its own name (e.g. add the supercategory to it)")
        categories[key] = cat["name"]
    found: dict[Any, tuple[dict, Path, tuple[int, int, int]]] = {}
    for i, img in enumerate(_list(spec, "images", file)):
        entry = f"image {i}"
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise annotation_error(file, entry, f"is {str(img)[:80]!r}",
                                   'give {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}')
        key = _key(img["id"], file, entry, "id")
        entry = f"image id {key} ({img['file_name']})"
        if key in found:
            raise annotation_error(file, entry, "this image id appears twice", "give every image its own id")
        path = _find(img["file_name"], file, images, entry)
        size = image_size(path, f"{file}, {entry}")
        if "width" in img or "height" in img:
            check_declared(img.get("width"), img.get("height"), size, file, entry, path)
        found[key] = (img, path, size)
    objects: dict[Any, list[ObjectSpec]] = {key: [] for key in found}
    for i, ann in enumerate(_list(spec, "annotations", file)):
        entry = f"annotation {i}" + (f" (id {str(ann['id'])[:20]})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            raise annotation_error(file, entry, f"is {ann!r}", "give an object with image_id, category_id and bbox")
        image_id = _key(ann.get("image_id"), file, entry, "image_id")
        if image_id not in found:
            raise annotation_error(file, entry, f"image_id {image_id!r} is not in \"images\"",
                                   "add the image to \"images\" or correct image_id")
        category_id = _key(ann.get("category_id"), file, entry, "category_id")
        if category_id not in categories:
            raise annotation_error(file, entry, f"category_id {category_id!r} is not in \"categories\" "
                                   f"(ids: {', '.join(map(str, categories)) or 'none'})",
                                   "add the category or correct category_id")
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise annotation_error(file, entry, f"iscrowd is {crowd!r}", "write 0 or 1")
        h, w, _ = found[image_id][2]
        shape = _shape(ann, (h, w), file, entry)
        extra = {k: v for k, v in ann.items() if k not in _OBJECT_KEYS}
        objects[image_id].append(ObjectSpec(categories[category_id], shape, bool(crowd), extra))
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
        return json.loads(read_text(file))
    except json.JSONDecodeError as err:
        raise annotation_error(file, f"line {err.lineno}, column {err.colno}", f"is not valid JSON ({err.msg})",
                               "repair the file (a JSON linter shows the spot)") from err
