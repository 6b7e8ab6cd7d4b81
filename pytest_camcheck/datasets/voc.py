"""Pascal VOC XML: a folder with ``Annotations/*.xml`` and ``JPEGImages/``, or one XML file.

Each ``<object>`` has ``<name>``, ``<difficult>`` (0/1, kept) and ``<bndbox>`` with ``xmin ymin xmax ymax`` in
1-based pixel numbers, both ends included: ``xmin=1, xmax=10`` is the first ten columns, Box(0, 0, 10, ...).
Other child elements (``pose``, ``truncated``...) are kept in ``extra``; an outline other tools write into an
object (CVAT's ``<polygon>``, ``<points>``, ``<mask>``...) is refused, since its box would silently stand for it. The image is ``<filename>`` in
``images`` when given, else in ``JPEGImages/`` (folder) or beside the XML (one file; ``../JPEGImages`` too).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .core import Entry, ObjectSpec, Shape, annotation_error, check_declared, image_size, make_box

_LAYOUT = "<xmin> <ymin> <xmax> <ymax>, 1-based pixel numbers with both ends included"
_KNOWN = {"name", "bndbox", "difficult"}
_SHAPES = ("polygon", "polyline", "points", "segmentation", "mask", "segm")  # outlines other tools write


def _text(node: ET.Element, tag: str, file: Path, entry: str) -> str:
    child = node.find(tag)
    if child is None or not (child.text or "").strip():
        raise annotation_error(file, entry, f"<{tag}> is missing or empty", f"add <{tag}> ({_LAYOUT} for bndbox)")
    return child.text.strip()


def _float(text: str, file: Path, entry: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise annotation_error(file, entry, f"<{tag}> is {text!r}, not a number", f"write {_LAYOUT}") from None


def _image(file: Path, filename: str, images: Path | None, folder_layout: bool) -> Path:
    if images is not None:
        tried = [images / filename]
    elif folder_layout:
        tried = [file.parent.parent / "JPEGImages" / filename]
    else:
        tried = [file.parent / filename, file.parent.parent / "JPEGImages" / filename]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise annotation_error(file, "<filename>", f"the image {filename!r} was not found (looked for "
                           f"{', '.join(str(p) for p in tried)})",
                           "pass images=<folder holding the images> to load_dataset, or correct <filename>")


def read_xml(file: Path, images: Path | None, root: Path, folder_layout: bool) -> Entry:
    """One VOC annotation file as an entry."""
    try:
        tree = ET.parse(file).getroot()
    except ET.ParseError as err:
        raise annotation_error(file, f"line {err.position[0]}, column {err.position[1]}",
                               f"is not well-formed XML ({err})", "repair the file") from err
    if tree.tag != "annotation":
        raise annotation_error(file, f"<{tree.tag}>", "is not a Pascal VOC annotation (its root element is not "
                               "<annotation>)", "pass a VOC XML file, or the folder holding Annotations/")
    path = _image(file, _text(tree, "filename", file, "<annotation>"), images, folder_layout)
    size = image_size(path, f"{file}")
    declared = tree.find("size")
    if declared is not None and (declared.find("width") is not None or declared.find("height") is not None):
        check_declared(declared.findtext("width"), declared.findtext("height"), size, file, "<size>", path)
    objects = []
    for i, obj in enumerate(tree.findall("object")):
        entry = f"<object> {i + 1}"
        label = _text(obj, "name", file, entry)
        entry = f"<object> {i + 1} ({label})"
        boxes = obj.findall("bndbox")
        if not boxes:
            raise annotation_error(file, entry, "has no <bndbox>", f"add <bndbox> with {_LAYOUT}")
        if len(boxes) > 1:
            raise annotation_error(file, entry, f"has {len(boxes)} <bndbox> elements, and an object has one box",
                                   "give each box its own <object>")
        shapes = [child.tag for child in obj if child.tag in _SHAPES]
        if shapes:
            raise annotation_error(file, entry, f"has a <{shapes[0]}>, which camcheck does not read: its <bndbox> "
                                   "would silently stand for the shape", "export the dataset as COCO to keep the "
                                   "shapes, or remove the element to use the box")
        box = boxes[0]
        x0, y0, x1, y1 = (_float(_text(box, t, file, entry), file, entry, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        region = make_box((x0 - 1, y0 - 1, x1, y1), size[:2], file, entry, _LAYOUT)
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise annotation_error(file, entry, f"<difficult> is {difficult!r}", "write 0 or 1")
        extra = {child.tag: (child.text or "").strip() for child in obj if child.tag not in _KNOWN}
        objects.append(ObjectSpec(label, Shape("box", region), difficult == "1", extra))
    try:
        name = path.relative_to(root).as_posix()
    except ValueError:
        name = path.name
    return Entry(name, path, size[:2], tuple(objects), str(file))


def load_folder(folder: Path, images: Path | None) -> list[Entry]:
    """Every ``Annotations/*.xml`` of a VOC folder, in file-name order."""
    files = sorted((folder / "Annotations").glob("*.xml"))
    if not files:
        raise annotation_error(folder / "Annotations", "", "holds no .xml file",
                               "put the VOC annotation files (one XML per image) there")
    return [read_xml(f, images, folder, True) for f in files]


def load_file(file: Path, images: Path | None) -> list[Entry]:
    """One VOC XML file."""
    return [read_xml(file, images, file.parent, False)]
