"""YOLO (Ultralytics, CVAT and Roboflow exports): a folder with ``images/``, ``labels/`` and class names in
``classes.txt`` (one per line) or ``data.yaml`` (``names:`` as a list, a block list or ``index: name`` lines).

``labels/<same path as the image>.txt`` holds one object per line: ``class cx cy w h`` (box centre and size
as fractions of the image width and height) or ``class x1 y1 x2 y2 ...`` (a polygon, fractions too). An image
without a label file has no objects; a label file without its image is an error, and so are two images that
would share one label file (``a.jpg`` and ``a.png``). Only the image's last suffix is replaced:
``x_jpg.rf.3f2a.jpg`` (Roboflow) has ``x_jpg.rf.3f2a.txt``.

Class names must be unambiguous: no repeated name, no blank line between names, no name that is not text, and
when both ``classes.txt`` and ``data.yaml`` are there they must agree (and ``nc:`` must count the names). Pose
labels (``kpt_shape:`` in data.yaml: a box followed by keypoints) are refused, since their numbers would read as
a polygon.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from .core import Entry, ObjectSpec, Shape, annotation_error, clean, image_size, make_box, make_polygon, read_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_LINE = "class cx cy w h (fractions of the image width and height), or class x1 y1 x2 y2 ... for a polygon"


def is_yolo(folder: Path) -> bool:
    """Whether ``folder`` has the YOLO layout."""
    return (folder / "labels").is_dir() and (folder / "images").is_dir()


def _yaml_spec(file: Path) -> dict:
    """``names``, ``nc`` and ``kpt_shape`` of a data.yaml (``names`` None when missing)."""
    text = read_text(file)
    try:
        import yaml
    except ImportError:
        return {"names": _simple_names(text, file), "nc": _simple_value(text, "nc"),
                "kpt_shape": _simple_value(text, "kpt_shape")}
    try:
        spec = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise annotation_error(file, "", f"is not valid YAML ({err})", "repair the file") from err
    if not isinstance(spec, dict):
        raise annotation_error(file, "", f"is a YAML {type(spec).__name__}, not a mapping",
                               "write names: [cat, dog] (and nc: 2)")
    return spec


def _names_from_yaml(file: Path, spec: dict) -> list[str]:
    names = spec.get("names")
    if isinstance(names, dict):
        keys = list(names)
        if any(isinstance(k, bool) or not isinstance(k, int) for k in keys) or sorted(keys) != list(range(len(keys))):
            raise annotation_error(file, "names", f"has the indices {keys}", "number the classes 0, 1, 2, ...")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise annotation_error(file, "names", "is missing or empty",
                               "list the class names, e.g. names: [cat, dog] or one '- name' line per class")
    return _checked_names(file, "names", names)


def _checked_names(file: Path, entry: str, names: list[Any]) -> list[str]:
    """The names without surrounding spaces, refused when one is not text, is empty or is repeated (after the
    spaces are taken off): a label must name one class index."""
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise annotation_error(file, entry, f"class {i} is named {name!r}",
                                   "give every class a name of text, in index order")
    stripped = [n.strip() for n in names]  # compared as they are used: "cat" and "cat " are one label
    seen: dict[str, int] = {}
    for i, name in enumerate(stripped):
        if name in seen:
            raise annotation_error(file, entry, f"classes {seen[name]} and {i} are both named {name!r}, so the label "
                                   f"{name!r} would stand for two classes", "give every class its own name")
        seen[name] = i
    return stripped


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


def _simple_value(text: str, key: str) -> Any:
    """A top-level ``key: value`` of a data.yaml without a YAML library (None when absent)."""
    for line in text.splitlines():
        match = re.match(rf"^{key}\s*:\s*(.*?)\s*(#.*)?$", line)
        if match:
            try:
                return ast.literal_eval(match[1]) if match[1] else None
            except (ValueError, SyntaxError):
                return match[1]
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
    """The class names of a YOLO folder, from classes.txt and/or data.yaml (which must then agree)."""
    found: list[tuple[Path, list[str]]] = []
    for candidate in (folder / "classes.txt", folder / "labels" / "classes.txt"):
        if candidate.is_file():
            lines = [line.strip() for line in read_text(candidate).splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            if not lines:
                raise annotation_error(candidate, "", "is empty", "write one class name per line, in index order")
            if "" in lines:
                raise annotation_error(candidate, f"line {lines.index('') + 1}", "is blank, so every later line "
                                       "would name a class one index off", "remove the blank line, or name the class")
            found.append((candidate, _checked_names(candidate, "", lines)))
            break
    for candidate in (folder / "data.yaml", folder / "dataset.yaml"):
        if candidate.is_file():
            spec = _yaml_spec(candidate)
            if spec.get("kpt_shape") is not None:
                raise annotation_error(candidate, "kpt_shape", "says the labels are poses (a box and keypoints per "
                                       "line), which camcheck does not read", "use detection or segmentation labels")
            if spec.get("names") is None and found:
                break  # a data.yaml of paths only; the names are in classes.txt
            names = _names_from_yaml(candidate, spec)
            nc = spec.get("nc")
            if nc is not None and nc != len(names):
                raise annotation_error(candidate, "nc", f"is {nc!r} but names lists {len(names)} classes",
                                       "make nc the number of names")
            if found and found[0][1] != names:
                raise annotation_error(candidate, "names", f"is {names} but {found[0][0]} says {found[0][1]}",
                                       "make the two files list the same names in the same order, or delete one")
            found.append((candidate, names))
            break
    if not found:
        raise annotation_error(folder, "", "is a YOLO folder (images/ and labels/) without class names",
                               "add classes.txt (one name per line, in index order) or data.yaml with names:")
    return found[0][1]


def _objects(file: Path, names: list[str], size: tuple[int, int]) -> tuple[ObjectSpec, ...]:
    h, w = size
    out = []
    for n, line in enumerate(read_text(file).splitlines(), start=1):
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
                                          "class cx cy w h, fractions of the image size", pixels=False))
        else:
            pixels = [clean(v * (w if i % 2 == 0 else h)) for i, v in enumerate(values)]
            shape = Shape("polygon", (make_polygon(pixels, size, file, entry, pixels=False),))
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
    owners: dict[str, Path] = {}  # label file key -> its image
    for picture in pictures:
        key = picture.relative_to(image_dir).with_suffix("").as_posix()
        if key in owners and (labels_dir / f"{key}.txt").is_file():
            raise annotation_error(labels_dir / f"{key}.txt", "", f"would be the labels of both {owners[key].name} and "
                                   f"{picture.name}", "rename one of the images (and give it its own label file)")
        owners[key] = picture
    for label in sorted(labels_dir.rglob("*.txt")):
        key = label.relative_to(labels_dir).with_suffix("").as_posix()
        if key != "classes" and key not in owners:
            raise annotation_error(label, "", f"has no image {key}.* in {image_dir}",
                                   "add the image, or delete the label file")
    entries = []
    for picture in pictures:
        label = labels_dir / (picture.relative_to(image_dir).with_suffix("").as_posix() + ".txt")
        size = image_size(picture, str(label if label.is_file() else picture))
        objects = _objects(label, names, size[:2]) if label.is_file() else ()
        entries.append(Entry(picture.relative_to(folder).as_posix() if images is None else
                             picture.relative_to(image_dir).as_posix(), picture, size[:2], objects,
                             str(label if label.is_file() else picture)))
    return entries
