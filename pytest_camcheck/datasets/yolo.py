"""YOLO (Ultralytics, CVAT and Roboflow exports): a folder with ``images/``, ``labels/`` and class names in
``classes.txt`` (one per line) or ``data.yaml`` (``names:`` as a list, a block list or ``index: name`` lines).

``labels/<same path as the image>.txt`` holds one object per line: ``class cx cy w h`` (box centre and size
as fractions of the image width and height) or ``class x1 y1 x2 y2 ...`` (a polygon, fractions too). An image
without a label file has no objects; a label file without its image is an error.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from .core import Entry, ObjectSpec, Shape, annotation_error, clean, image_size, make_box, make_polygon

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_LINE = "class cx cy w h (fractions of the image width and height), or class x1 y1 x2 y2 ... for a polygon"


def is_yolo(folder: Path) -> bool:
    """Whether ``folder`` has the YOLO layout."""
    return (folder / "labels").is_dir() and (folder / "images").is_dir()


def _names_from_yaml(file: Path) -> list[str]:
    text = file.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        names = _simple_names(text, file)
    else:
        try:
            names = (yaml.safe_load(text) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as err:
            raise annotation_error(file, "", f"is not valid YAML ({err})", "repair the file") from err
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise annotation_error(file, "names", f"has the indices {sorted(names)}", "number the classes 0, 1, 2, ...")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise annotation_error(file, "names", "is missing or empty",
                               "list the class names, e.g. names: [cat, dog] or one '- name' line per class")
    return [str(n) for n in names]


def _simple_names(text: str, file: Path) -> Any:
    """``names:`` of a data.yaml without a YAML library: an inline list, a block list or ``index: name`` lines."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^names\s*:\s*(.*?)\s*(#.*)?$", line)
        if not match:
            continue
        inline = match[1]
        if inline.startswith("["):
            items = inline.strip("[]").split(",")
            return [item.strip().strip("'\"") for item in items if item.strip()]
        if inline:
            raise annotation_error(file, "names", f"is {inline!r}", "write names: [a, b] or one '- name' per line")
        block: dict[int, str] | list[str] = []
        for follow in lines[i + 1:]:
            if not follow.strip() or follow.lstrip().startswith("#"):
                continue
            if not follow[:1].isspace():
                break
            item = follow.strip()
            keyed = re.match(r"^(\d+)\s*:\s*(.+)$", item)
            if item.startswith("- "):
                block.append(_unquote(item[2:]))  # type: ignore[union-attr]
            elif keyed:
                block = {} if isinstance(block, list) and not block else block
                block[int(keyed[1])] = _unquote(keyed[2])  # type: ignore[index]
        return block
    return None


def _unquote(text: str) -> str:
    text = text.split(" #")[0].strip()
    if text[:1] in "'\"":
        try:
            return str(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return text.strip("'\"")
    return text


def class_names(folder: Path) -> list[str]:
    """The class names of a YOLO folder."""
    for candidate in (folder / "classes.txt", folder / "labels" / "classes.txt"):
        if candidate.is_file():
            names = [line.strip() for line in candidate.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not names:
                raise annotation_error(candidate, "", "is empty", "write one class name per line, in index order")
            return names
    for candidate in (folder / "data.yaml", folder / "dataset.yaml"):
        if candidate.is_file():
            return _names_from_yaml(candidate)
    raise annotation_error(folder, "", "is a YOLO folder (images/ and labels/) without class names",
                           "add classes.txt (one name per line, in index order) or data.yaml with names:")


def _objects(file: Path, names: list[str], size: tuple[int, int]) -> tuple[ObjectSpec, ...]:
    h, w = size
    out = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        entry = f"line {n}"
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise annotation_error(file, entry, f"{line.strip()!r} is not numbers", f"write {_LINE}") from None
        if not 0 <= cls < len(names):
            raise annotation_error(file, entry, f"class {cls} is not among the {len(names)} class names "
                                   f"(0-{len(names) - 1})", "correct the class index or add its name")
        if len(values) != 4 and (len(values) < 6 or len(values) % 2):
            raise annotation_error(file, entry, f"has {len(fields)} fields", f"write {_LINE}")
        if any(not -1e-6 <= v <= 1 + 1e-6 for v in values):
            raise annotation_error(file, entry, f"has values outside [0, 1] ({line.strip()})",
                                   "give fractions of the image size (pixel coordinates / width or height)")
        if len(values) == 4:
            cx, cy, bw, bh = values
            coords = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            shape = Shape("box", make_box([clean(c) for c in coords], size, file, entry,
                                          "class cx cy w h, fractions of the image size"))
        else:
            pixels = [clean(v * (w if i % 2 == 0 else h)) for i, v in enumerate(values)]
            shape = Shape("polygon", (make_polygon(pixels, size, file, entry),))
        out.append(ObjectSpec(names[cls], shape))
    return tuple(out)


def load(folder: Path, images: Path | None) -> list[Entry]:
    """Every image of a YOLO folder with the objects of its label file."""
    names = class_names(folder)
    image_dir = images if images is not None else folder / "images"
    labels_dir = folder / "labels"
    pictures = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not pictures:
        raise annotation_error(image_dir, "", "holds no image", f"put the images there ({', '.join(IMAGE_SUFFIXES)})")
    stems = {p.relative_to(image_dir).with_suffix("").as_posix() for p in pictures}
    for label in sorted(labels_dir.rglob("*.txt")):
        key = label.relative_to(labels_dir).with_suffix("").as_posix()
        if key != "classes" and key not in stems:
            raise annotation_error(label, "", f"has no image {key}.* in {image_dir}",
                                   "add the image, or delete the label file")
    entries = []
    for picture in pictures:
        key = picture.relative_to(image_dir).with_suffix("")
        label = labels_dir / key.with_suffix(".txt")
        size = image_size(picture, str(label if label.is_file() else picture))
        objects = _objects(label, names, size[:2]) if label.is_file() else ()
        entries.append(Entry(picture.relative_to(folder).as_posix() if images is None else
                             picture.relative_to(image_dir).as_posix(), picture, size[:2], objects,
                             str(label if label.is_file() else picture)))
    return entries
