"""What every reader builds: a :class:`Dataset` of images with annotated objects, read lazily.

A reader (COCO, VOC, YOLO, camcheck JSON) checks every annotation when the dataset is loaded, reading only
image headers (size and EXIF orientation), and records each object's shape; the pixels are decoded, and
polygons and RLE masks rasterised, only when an image is taken from the dataset. So a dataset of thousands of
images costs a few hundred bytes per object until it is used, and one image at a time after.

Coordinates are those of the DISPLAYED image: the stored pixels turned by their EXIF orientation, as viewers
and annotation tools show them; a pixel (column i, row j) covers [i, i+1) x [j, j+1) (see
:mod:`pytest_camcheck.regions`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, overload

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import AnnotationError, CamCheckError
from ..regions import Box

__all__ = ["AnnotatedObject", "Dataset", "Entry", "Shape", "annotation_error", "image_size"]

_SWAPS = (5, 6, 7, 8)
PYCOCOTOOLS_EXTRA = 'pip install "pytest-camcheck[coco]" (or pip install pycocotools)'


def annotation_error(file: Path | str, entry: str, problem: str, fix: str) -> AnnotationError:
    """The one shape of every reader's error: the file, the entry in it, what is wrong, and the fix.

    Example:
        >>> print(annotation_error("val.json", "annotation 3", "bbox has 3 values", "give [x, y, width, height]"))
        val.json, annotation 3: bbox has 3 values. Fix: give [x, y, width, height]
    """
    where = f"{file}, {entry}" if entry else f"{file}"
    return AnnotationError(f"{where}: {problem}. Fix: {fix}")


def read_text(file: Path) -> str:
    """The text of an annotation file, which must be UTF-8 (else the reader's error, naming the file); a UTF-8
    byte-order mark at its start (Windows Notepad's "UTF-8 with BOM") is dropped, so it never joins the first
    class name or breaks JSON.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     file = Path(tmp) / "classes.txt"
        ...     _ = file.write_bytes(b"\\xef\\xbb\\xbfcat\\ndog\\n")
        ...     read_text(file).splitlines()
        ['cat', 'dog']
    """
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise annotation_error(file, "", f"is not UTF-8 text ({err})", "save it as UTF-8") from err


def _too_large(where: str, path: Path, err: Exception) -> AnnotationError:
    from ..images import too_large

    return AnnotationError(f"{where}: {too_large(path, err)}")


def image_size(path: Path, where: str) -> tuple[int, int, int]:
    """(height, width, EXIF orientation) of the image at ``path`` as displayed, from its header only; the
    orientation is read as ``PIL.ImageOps.exif_transpose`` reads it (:func:`pytest_camcheck.images.exif_orientation`),
    so the size is the one decoding gives. A file of several frames (an animated GIF, a multi-page TIFF) is refused:
    which frame the annotations are for cannot be known.

    Example:
        >>> image_size(Path("fixtures/disc_and_square.png"), "here")
        (120, 160, 1)
    """
    from .._io import resolve_path
    from ..images import exif_orientation, multiframe_problem

    resolve_path(path, AnnotationError, f"{where}: the image")
    if not path.is_file():
        raise AnnotationError(f"{where}: the image {path} does not exist. Fix: correct the file name in the "
                              "annotation, or pass images=<folder holding the images> to load_dataset")
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = exif_orientation(img)
            problem = multiframe_problem(path, img)
    except Image.DecompressionBombError as err:
        raise _too_large(where, path, err) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise AnnotationError(f"{where}: {path} is not an image Pillow can read ({err}). Fix: replace it with a "
                              "PNG, JPEG, BMP, TIFF or WebP file") from err
    if problem:
        raise AnnotationError(f"{where}: {problem}. Fix: save the frame the annotations are for as an image file of "
                              "its own (Pillow: img.seek(k); img.save('frame.png')) and point the annotation at it")
    if orientation in _SWAPS:
        w, h = h, w
    return h, w, orientation


def check_declared(declared_w: Any, declared_h: Any, size: tuple[int, int, int], file: Path, entry: str,
                   path: Path) -> None:
    """Refuse an annotation whose recorded image size is not the displayed size of the image file: its boxes
    would be placed on other pixels. The stored (un-rotated) size means the tool annotated the pixels before the
    EXIF orientation was applied."""
    h, w, orientation = size
    dw, dh = _whole(declared_w), _whole(declared_h)
    if dw is None or dh is None:
        raise annotation_error(file, entry, f"the image size is given as width={declared_w!r}, "
                               f"height={declared_h!r}", "give both as whole numbers of pixels, or leave the size out")
    if (dw, dh) == (w, h):
        return
    if orientation in _SWAPS and (dw, dh) == (h, w):
        raise annotation_error(
            file, entry,
            f"the annotation is for a {dw}x{dh} px image, the stored pixels of {path.name}, but the image is shown "
            f"{w}x{h} px after its EXIF orientation ({orientation}); its boxes would land on the wrong pixels",
            "annotate the image as displayed (re-export from the tool with EXIF orientation applied), or save the "
            "image with its pixels rotated and no orientation tag")
    raise annotation_error(file, entry, f"the annotation is for a {dw}x{dh} px image but {path} is {w}x{h} px "
                           "(width x height, as displayed)", "point the annotation at the image it was made on")


def _whole(value: Any) -> int | None:
    """A whole number of pixels as a file writes it (640, 640.0, or the text "640" of XML), else None."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or float(value) != int(value):
        return None
    return int(value)


def number(value: Any, file: Path, entry: str, what: str) -> float:
    """A finite real number, else the reader's error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise annotation_error(file, entry, f"{what} is {value!r}, not a finite number", f"write {what} as a number")
    return float(value)


def clean(value: float) -> float | int:
    """Rounding noise of normalised coordinates removed (1e-6 px), integers as int."""
    value = round(float(value), 6) + 0.0
    return int(value) if value.is_integer() else value


@dataclass(frozen=True)
class Shape:
    """An object's outline as the file gives it: ``"box"`` (a :class:`Box`), ``"polygon"`` (a tuple of (N, 2)
    float arrays of (x, y) vertices, one per part) or ``"rle"`` (a COCO run-length dict)."""

    kind: str
    data: Any

    def region(self, size: tuple[int, int]) -> Box | np.ndarray:
        """The region in an image of ``size`` (height, width): the Box itself, or the boolean mask."""
        if self.kind == "box":
            return self.data
        if self.kind == "polygon":
            return polygon_mask(self.data, size)
        return rle_mask(self.data, size)


def polygon_mask(parts: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside any of the polygons (scikit-image's drawing); a polygon thinner than a
    pixel keeps the pixel under its centroid, as a thin box does.

    Example:
        >>> polygon_mask([np.array([[1, 0], [3, 0], [3, 2], [1, 2]], float)], (3, 4)).astype(int)
        array([[0, 1, 1, 0],
               [0, 1, 1, 0],
               [0, 0, 0, 0]])
    """
    from skimage.draw import polygon

    h, w = size
    mask = np.zeros((h, w), dtype=bool)
    for xy in parts:
        before = mask.sum()
        rows, cols = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=(h, w))
        mask[rows, cols] = True
        if mask.sum() == before and not len(rows):
            cx, cy = xy.mean(axis=0)
            mask[min(max(int(cy), 0), h - 1), min(max(int(cx), 0), w - 1)] = True
    return mask


def rle_encoded(rle: Mapping[str, Any], size: tuple[int, int]) -> Any:
    """A COCO RLE (compressed or counts list) as pycocotools' own RLE object, for its mask functions."""
    from pycocotools import mask as coco_mask

    counts = rle["counts"]
    h, w = size
    if isinstance(counts, list):
        return coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}


def rle_mask(rle: Mapping[str, Any], size: tuple[int, int]) -> np.ndarray:
    """A COCO RLE (compressed or counts list) decoded by pycocotools."""
    from pycocotools import mask as coco_mask

    encoded = rle_encoded(rle, size)
    with warnings.catch_warnings():  # pycocotools' own numpy 2 deprecation, not the user's business
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(encoded).astype(bool)


@dataclass(frozen=True, eq=False)
class AnnotatedObject:
    """One annotated object: ``label`` (the class name in the file), ``region`` (a :class:`Box`, or a boolean
    mask of the image's shape for polygons and RLE), ``difficult`` (Pascal VOC's flag, also read from COCO's
    ``iscrowd`` and camcheck JSON) and ``extra`` (the file's other fields for this object).

    Example:
        >>> AnnotatedObject("dog", Box(1, 2, 30, 40)) == AnnotatedObject("dog", Box(1, 2, 30, 40))
        True
    """

    label: str
    region: Box | np.ndarray
    difficult: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnnotatedObject):
            return NotImplemented
        a, b = self.region, other.region
        same = (np.array_equal(a, b) if isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                else (not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray) and a == b))
        return same and (self.label, self.difficult, dict(self.extra)) == (other.label, other.difficult,
                                                                           dict(other.extra))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        from ..regions import describe

        flag = ", difficult" if self.difficult else ""
        return f"AnnotatedObject({self.label!r}, {describe(self.region)}{flag})"


@dataclass(frozen=True)
class ObjectSpec:
    """What a reader records for one object: its label, outline, flag and other fields."""

    label: str
    shape: Shape
    difficult: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One image of a dataset before decoding: its name (path relative to the dataset's root), file, displayed
    size (height, width), objects, where the annotation is, and the annotation's other fields."""

    name: str
    path: Path
    size: tuple[int, int]
    objects: tuple[ObjectSpec, ...]
    source: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The labels present, each once, in the order of the file."""
        return list(dict.fromkeys(o.label for o in self.objects))


def decode(path: Path, size: tuple[int, int], where: str) -> Image.Image:
    """The image as displayed (EXIF orientation applied), RGB; a file that changed size since it was loaded is
    refused."""
    from ..images import load_image

    try:
        with Image.open(path) as img:
            picture = load_image(img)  # turned by its EXIF orientation, read as everywhere else
    except Image.DecompressionBombError as err:
        raise _too_large(where, path, err) from err
    except (OSError, ValueError) as err:
        if isinstance(err, CamCheckError):
            raise AnnotationError(f"{where}: {err}") from err
        raise AnnotationError(f"{where}: could not read {path} ({err}). Fix: replace the file") from err
    if (picture.height, picture.width) != tuple(size):
        raise AnnotationError(f"{where}: {path} is now {picture.width}x{picture.height} px but was "
                              f"{size[1]}x{size[0]} px when the dataset was loaded. Fix: load the dataset again")
    return picture


class Dataset(Sequence):
    """Annotated images: ``dataset[i]`` is a :class:`~pytest_camcheck.images.SampleImage` (decoded when taken)
    whose ``objects`` are :class:`AnnotatedObject` and whose ``regions`` map each label to the union of its
    objects. ``format`` is the reader ("coco", "voc", "yolo" or "camcheck"), ``root`` the path loaded.

    Example:
        >>> from pytest_camcheck import load_dataset
        >>> ds = load_dataset("fixtures/shapes-coco/instances.json")
        >>> len(ds) > 0, ds.format, ds[0].objects[0].label in ds.labels
        (True, 'coco', True)
    """

    def __init__(self, entries: Sequence[Entry], *, format: str, root: Path) -> None:
        self._entries = tuple(entries)
        self.format, self.root = format, root

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> Dataset: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Dataset(self._entries[index], format=self.format, root=self.root)
        return self.sample(self._entries[index])

    def __iter__(self) -> Iterator[Any]:
        for entry in self._entries:
            yield self.sample(entry)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The images' annotations, without decoding any image."""
        return self._entries

    @property
    def labels(self) -> list[str]:
        """Every label of the dataset, sorted."""
        return sorted({o.label for e in self._entries for o in e.objects})

    @staticmethod
    def sample(entry: Entry) -> Any:
        """Decode one entry into a SampleImage with its objects."""
        from ..images import Regions, SampleImage

        picture = decode(entry.path, entry.size, entry.source)
        objects = tuple(AnnotatedObject(o.label, o.shape.region(entry.size), o.difficult, dict(o.extra))
                        for o in entry.objects)
        return SampleImage(entry.name, picture, Regions(union_regions(objects, entry.size), owner=entry.name),
                           entry.source, objects, dict(entry.extra))

    def __repr__(self) -> str:
        n_objects = sum(len(e.objects) for e in self._entries)
        labels = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
        return f"Dataset({self.format}, {len(self)} images, {n_objects} objects, labels: {labels}; {self.root})"


def union_regions(objects: Sequence[AnnotatedObject], size: tuple[int, int]) -> dict[str, Box | np.ndarray]:
    """Each label's region: its one box as it is, or the union mask of its objects.

    Example:
        >>> objs = [AnnotatedObject("a", Box(0, 0, 2, 2)), AnnotatedObject("a", Box(3, 0, 4, 1))]
        >>> int(union_regions(objs, (4, 4))["a"].sum())
        5
    """
    from ..regions import to_mask

    grouped: dict[str, list[AnnotatedObject]] = {}
    for obj in objects:
        grouped.setdefault(obj.label, []).append(obj)
    out: dict[str, Box | np.ndarray] = {}
    for label, group in grouped.items():
        if len(group) == 1 and isinstance(group[0].region, Box):
            out[label] = group[0].region
            continue
        mask = np.zeros(size, dtype=bool)
        for obj in group:
            mask |= obj.region if isinstance(obj.region, np.ndarray) else _box_pixels(obj.region, size, to_mask)
        out[label] = mask
    return out


def _box_pixels(box: Box, size: tuple[int, int], to_mask: Any) -> np.ndarray:
    try:
        return to_mask(box, size)
    except CamCheckError:  # a box covering the whole image: its pixels are still the object's
        return np.ones(size, dtype=bool)


_SLACK = 1.0


def _fractions(values: Sequence[float], size: tuple[int, int], file: Path, entry: str, what: str) -> None:
    """Refuse pixel coordinates that all lie in [0, 1], one of them not whole, on an image larger than 2 x 2 px:
    fractions of the image size given where the format wants pixels, which would make a sub-pixel region in the
    top-left corner."""
    if min(size) > 2 and all(0 <= v <= 1 for v in values) and any(not float(v).is_integer() for v in values):
        raise annotation_error(file, entry, f"{what} {tuple(clean(v) for v in values)} lies within the first pixel: "
                               "these look like fractions of the image size, not pixels",
                               f"give pixels of the {size[1]}x{size[0]} px image (fraction x width or height)")


def make_box(coords: Sequence[Any], size: tuple[int, int], file: Path, entry: str, layout: str, *,
             pixels: bool = True) -> Box:
    """A Box from (x0, y0, x1, y1) in displayed pixels, inside the image of ``size`` (height, width); edges up to
    one pixel outside (rounding of annotation tools) are moved onto the border, anything more is refused.
    ``layout`` names the file's own convention for the message. ``pixels``: the file itself gives pixels (not
    fractions scaled by the reader), so coordinates that look like fractions are refused."""
    x0, y0, x1, y1 = (number(v, file, entry, name) for v, name in zip(coords, ("x0", "y0", "x1", "y1")))
    h, w = size
    if pixels:
        _fractions((x0, y0, x1, y1), size, file, entry, "the box")
    if x1 <= x0 or y1 <= y0:
        raise annotation_error(file, entry, f"the box ({clean(x0)}, {clean(y0)})-({clean(x1)}, {clean(y1)}) is "
                               "empty or inverted", f"write it as {layout}")
    if x0 < -_SLACK or y0 < -_SLACK or x1 > w + _SLACK or y1 > h + _SLACK:
        raise annotation_error(file, entry, f"the box ({clean(x0)}, {clean(y0)})-({clean(x1)}, {clean(y1)}) "
                               f"reaches outside the {w}x{h} px image (width x height, as displayed)",
                               f"correct the box ({layout}), or check that it belongs to this image")
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    if x1 <= x0 or y1 <= y0:
        raise annotation_error(file, entry, "the box lies on the image's border and covers no pixel",
                               f"correct the box ({layout})")
    return Box(clean(x0), clean(y0), clean(x1), clean(y1))


def make_polygon(flat: Sequence[Any], size: tuple[int, int], file: Path, entry: str, *,
                 pixels: bool = True) -> np.ndarray:
    """An (N, 2) array of (x, y) vertices from [x1, y1, x2, y2, ...] in displayed pixels, inside the image and
    enclosing some area (points on one line are refused, as an empty box is). ``pixels`` as for
    :func:`make_box`."""
    if not isinstance(flat, (list, tuple)) or len(flat) < 6 or len(flat) % 2:
        n = len(flat) if isinstance(flat, (list, tuple)) else type(flat).__name__
        raise annotation_error(file, entry, f"a polygon has {n} coordinates", "give at least 3 points as "
                               "[x1, y1, x2, y2, x3, y3, ...] (an even number of values)")
    xy = np.array([number(v, file, entry, "a polygon coordinate") for v in flat], dtype=np.float64).reshape(-1, 2)
    h, w = size
    if xy[:, 0].min() < -_SLACK or xy[:, 1].min() < -_SLACK or xy[:, 0].max() > w + _SLACK \
            or xy[:, 1].max() > h + _SLACK:
        raise annotation_error(file, entry, f"a polygon reaches outside the {w}x{h} px image (x from "
                               f"{xy[:, 0].min():g} to {xy[:, 0].max():g}, y from {xy[:, 1].min():g} to "
                               f"{xy[:, 1].max():g})", "give its points in the displayed image's pixels")
    if pixels:
        _fractions(xy.ravel().tolist(), size, file, entry, "the polygon")
    x, y = xy[:, 0], xy[:, 1]
    if abs(float((x * np.roll(y, -1) - y * np.roll(x, -1)).sum())) < 1e-9:  # twice the signed area (shoelace)
        raise annotation_error(file, entry, "the polygon's points lie on one line, so it encloses no pixel",
                               "give the object's outline (at least 3 points not on one line)")
    return xy
