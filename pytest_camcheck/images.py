"""Image inputs (PIL, arrays, files) and the catalogue of sample images with annotated regions.

Built-in samples are the photographs scikit-image ships (`chelsea`, `coffee`, `astronaut`, ...),
annotated in `data/sample_images.json`. Your own images join the catalogue through a JSON file next
to the image, named after the sample (a name no built-in sample or synthetic scene uses)::

    fixtures/dog.json
    {"image": "dog.jpg", "regions": {"dog": [40, 25, 210, 180], "grass": [0, 190, 320, 240]},
     "source": "own photo"}

"image" is relative to the JSON file; each region is [x0, y0, x1, y1] in pixels of that image (x to
the right, y down, x1/y1 exclusive); "source" is optional.
"""

from __future__ import annotations

import functools
import json
import numbers
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ._io import resolve_path
from .errors import CamCheckError, CamCheckWarning, InputError, RegionError
from .regions import Box, to_mask

_CATALOGUE = Path(__file__).parent / "data" / "sample_images.json"
_FORMAT = '{"image": "dog.jpg", "regions": {"dog": [x0, y0, x1, y1]}}'
_EXPECTED = "an HxWx3 RGB array (uint8, or float in [0, 1]), HxWx4 RGBA or HxW grey"

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]
SearchDirs = Union[Iterable[Union[str, os.PathLike]], str, os.PathLike]


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _not_ambiguous(high: int, what: str, source: str) -> None:
    """Refuse a 16-bit image whose largest value is 1 to 255: 8-bit values in a 16-bit container, or a 16-bit picture
    that is almost black; the two readings give different maps and nothing in the pixels tells which is meant."""
    if 0 < high <= 255:
        raise InputError(
            f"{what} holds values from 0 to {high} only, so it has two readings: 8-bit values in a 16-bit container "
            f"(0..255, shown as they are) or a 16-bit picture (0..65535) that is almost black ({high} is "
            f"{high / 65535:.2%} of full scale); the maps of the two differ and the pixels cannot tell which is meant. "
            f"Fix: for 8-bit values pass {source}.astype(np.uint8); for a 16-bit picture pass "
            f"np.rint({source} / 257).astype(np.uint8) (or scale it to the full 0..65535 range first)"
        )


def _wide_grey(img: Image.Image, file: Path | None, turned: bool) -> Image.Image:
    """A PIL image of mode I (32-bit) or I;16* (16-bit) by the rule of integer arrays (:func:`load_image`), its
    transparency key (a PNG's tRNS) composited onto white as for 8-bit images; ``file``: where it was read from,
    ``turned``: whether its EXIF orientation turned it (so the fix keeps the turn)."""
    a = np.asarray(img).astype(np.int64)
    visible = None
    if img.has_transparency_data:
        key = img.info.get("transparency")
        if isinstance(key, bool) or not isinstance(key, numbers.Integral):
            raise InputError(
                f"the PIL image (mode {img.mode}) has a transparency entry {key!r} that is not one grey value, so "
                "which pixels are transparent cannot be known. Fix: composite it yourself and pass an RGB image"
            )
        visible = a != int(key)
    shown = a[visible] if visible is not None and visible.any() else a
    low, high = int(shown.min()), int(shown.max())
    what = f"the PIL image of mode {img.mode}" if file is None else f"{file} (PIL mode {img.mode})"
    opened = f"PIL.Image.open({str(file)!r})"
    source = "np.asarray(image)" if file is None else (
        f"np.asarray(PIL.ImageOps.exif_transpose({opened}))" if turned else f"np.asarray({opened})")
    if img.mode == "I" and low >= 0 and high <= 255:  # as an int32 array of the same values: 8-bit
        grey = np.clip(a, 0, 255).astype(np.uint8)
    else:
        if low < 0 or high > 65535:
            raise InputError(
                f"{what} has values from {low} to {high}; it is read as 16-bit (0..65535). Fix: scale it to "
                "0..255 and pass a uint8 array"
            )
        if img.mode != "I":
            _not_ambiguous(high, what, source)
        grey = np.rint(np.clip(a, 0, 65535) / 257).astype(np.uint8)
    if visible is None:
        return Image.fromarray(grey).convert("RGB")
    alpha = np.where(visible, 255, 0).astype(np.uint8)
    return _on_white(Image.fromarray(np.dstack([grey, grey, grey, alpha])))


def _from_pil(img: Image.Image, file: Path | None = None, turned: bool = False) -> Image.Image:
    if img.width == 0 or img.height == 0:
        raise InputError(f"the image is empty ({img.width}x{img.height} px); pass an image with pixels")
    if img.mode == "I" or img.mode.startswith("I;16"):
        return _wide_grey(img, file, turned)
    if img.mode == "F":
        return _from_array(np.asarray(img))
    try:
        if img.mode == "La":  # premultiplied grey + alpha: Pillow undoes the premultiplication only towards LA
            img = img.convert("LA")
        if img.has_transparency_data:
            return _on_white(img.convert("RGBA"))
        return img.convert("RGB")
    except ValueError as err:
        raise InputError(
            f"PIL image mode {img.mode!r} cannot be converted to RGB by Pillow ({err}). Fix: convert its pixels "
            "to RGB yourself (e.g. from np.asarray(image)) and pass an RGB PIL image or an HxWx3 uint8 array"
        ) from err


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError("the image has NaN or infinite pixel values; fix the image before explaining it")
        low, high = float(a.min()), float(a.max())
        if low < 0 or high > 1:
            raise InputError(
                f"float image values range from {low:g} to {high:g}; expected [0, 1]. Fix: for 0..255 values pass "
                "np.rint(a).astype(np.uint8); for a normalised (mean/std) image pass the original image and let "
                "preprocess normalise it"
            )
        return np.rint(a * 255).astype(np.uint8)
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:
        _not_ambiguous(int(a.max()), f"the {a.dtype} array", "a")
        return np.rint(a / 257).astype(np.uint8)
    low, high = int(a.min()), int(a.max())
    if low < 0 or high > 255:
        raise InputError(
            f"integer image values range from {low} to {high}; expected 0..255. Fix: scale the image to 0..255 and "
            "pass it as uint8 (16-bit data: pass a uint16 array)"
        )
    return a.astype(np.uint8, copy=True)


def _from_array(a: np.ndarray) -> Image.Image:
    if a.dtype == np.bool_:
        raise InputError(
            "the image is a boolean array (a mask?). Fix: pass the picture itself, or convert a binary image with "
            "(a * 255).astype(np.uint8)"
        )
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"the image array has dtype {a.dtype}; pass {_EXPECTED}")
    if a.size == 0:
        raise InputError(f"the image is empty (shape {a.shape}, 0 px); pass an image with pixels")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] in (3, 4):
        rows, cols, channels = a.shape
        warnings.warn(CamCheckWarning(
            f"the image array of shape {a.shape} is read as arrays always are, (H, W, C): {rows} rows x {cols} "
            f"columns with {channels} channels. If it is channels first (C, H, W), {rows} channels of {cols} rows "
            f"x {channels} columns, that is another picture and the map is wrong. Fix: pass "
            "Image.fromarray(np.ascontiguousarray(np.moveaxis(a, 0, -1))) for (C, H, W), or Image.fromarray(a) for "
            "(H, W, C), to say which (a float array in [0, 1]: first a = np.rint(a * 255).astype(np.uint8))"),
            stacklevel=4)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        hint = (
            " It looks channels-first (C, H, W): use np.transpose(a, (1, 2, 0))."
            if a.ndim == 3 and a.shape[0] in (1, 3, 4)
            else ""
        )
        raise InputError(f"the image array has shape {a.shape}; expected {_EXPECTED}.{hint}")
    pixels = _to_uint8(a)
    return _from_pil(Image.fromarray(np.ascontiguousarray(pixels)))


_TURNS = {k: k for k in range(2, 9)}  # the orientations ImageOps.exif_transpose acts on, looked up as it does


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation of ``img`` exactly as ``PIL.ImageOps.exif_transpose`` reads it: 2 to 8 when it turns or
    flips the pixels, else 1 (no tag, or a value it ignores: 0, -1, the text "6", ...; also an EXIF block Pillow
    cannot parse). The one reading of the tag everywhere in pytest-camcheck (maps, ``CamResult.orientation``,
    dataset sizes), so what is reported is what was applied.

    Example:
        >>> exif_orientation(Image.new("RGB", (2, 1)))
        1
    """
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
        return _TURNS.get(value, 1)
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1


def _upright(img: Image.Image) -> tuple[Image.Image, int]:
    """``img`` as viewers show it (its EXIF orientation applied, as ``ImageOps.exif_transpose`` does) and the
    orientation that was applied; an image without one is returned as it is, not copied."""
    orientation = exif_orientation(img)
    if orientation == 1:
        return img, 1
    return ImageOps.exif_transpose(img), orientation


def too_large(path: Path | str, err: Exception) -> str:
    """The problem and the fix for an image over Pillow's decompression-bomb limit.

    Example:
        >>> too_large("big.png", ValueError("200000000 pixels")).split(". Fix")[0]
        'big.png is larger than Pillow opens by default (200000000 pixels)'
    """
    return (f"{path} is larger than Pillow opens by default ({err}). Fix: downscale the image, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file")


def frames(img: Image.Image) -> int:
    """How many frames (pages, animation frames) the opened image file has that a viewer would show, 1 for a
    still image. An MPO (a camera JPEG with preview or depth pictures after it), and a TIFF whose later pages are
    all marked as reduced-resolution previews, count as one: the first picture is the photo itself.

    Example:
        >>> frames(Image.new("RGB", (2, 2)))
        1
    """
    if img.format == "MPO" or not getattr(img, "is_animated", False):
        return 1
    n = int(getattr(img, "n_frames", 2))
    if img.format == "TIFF" and _tiff_previews_only(img, n):
        return 1
    return n


_REDUCED = 1  # TIFF NewSubfileType bit 0: a reduced-resolution version of another page (a preview)


def _tiff_previews_only(img: Image.Image, n: int) -> bool:
    """Whether every TIFF page after the first is marked as a reduced-resolution version of another
    (NewSubfileType, tag 254, bit 0: the previews cameras and scanners add), so the first page is the one picture."""
    here = img.tell()
    try:
        for k in range(1, n):
            img.seek(k)
            kind = img.tag_v2.get(254, 0)
            if not isinstance(kind, int) or not kind & _REDUCED:
                return False
        return True
    except (EOFError, OSError, ValueError, AttributeError):
        return False
    finally:
        try:
            img.seek(here)
        except (EOFError, OSError, ValueError):
            pass


def multiframe_problem(path: Path | str, img: Image.Image) -> str | None:
    """What is wrong with using ``img``, opened from ``path``, as one picture when it has several frames (None when
    it has one): which frame is meant cannot be known.

    Example:
        >>> multiframe_problem("one.png", Image.new("RGB", (2, 2))) is None
        True
    """
    n = frames(img)
    if n == 1:
        return None
    return (f"{path} holds {n} frames (an animation or pages, {img.format}), so which one is meant cannot be known: "
            "the first is not always the picture people look at")


def _from_path(path: Path) -> tuple[Image.Image, int]:
    where = resolve_path(path, InputError, "the image path")
    if not path.exists():
        raise InputError(f"image file not found: {where}. Fix the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise InputError(f"{where} is not a file; pass the path of an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as img:
            problem = multiframe_problem(where, img)
            if problem:
                raise InputError(
                    f"{problem}. Fix: open it with Pillow, choose the frame and pass the PIL image: "
                    f"img = PIL.Image.open({str(path)!r}); img.seek(k) (0 <= k < {frames(img)}); then pass img "
                    "(a PIL image is used at its current frame)"
                )
            img.load()
            shown, orientation = _upright(img)
            return _from_pil(shown, where, orientation != 1), orientation
    except UnidentifiedImageError as err:
        raise InputError(f"{where} is not an image Pillow can read; pass a PNG, JPEG, BMP, TIFF or WebP file") from err
    except Image.DecompressionBombError as err:
        raise InputError(too_large(where, err)) from err
    except OSError as err:
        raise InputError(f"could not read the image {where} ({err}); the file may be truncated, replace it") from err


def load_image(obj: ImageLike) -> Image.Image:
    """A new RGB PIL image from a PIL image, a numpy array, or an image file path, in the orientation people see.

    - PIL images of any mode. Transparent images (RGBA, LA, P or L/RGB with a transparency key) are
      composited onto WHITE, as image viewers show them, whatever colour the transparent pixels hide (16-bit
      greyscale with a transparency key too); premultiplied modes (La, RGBa) are un-premultiplied by Pillow.
      Mode F is read like a float array, integer modes by the rule below.
    - numpy arrays HxWx3 (RGB), HxWx4 (RGBA, composited onto white), HxW or HxWx1 (grey): uint8,
      other integer types with values in 0..255, uint16 (16-bit, scaled), or float in [0, 1].
    - a path (str or pathlib.Path) to an image file of one frame; a file of several (an animated GIF, PNG or
      WebP, a multi-page TIFF) is refused, since which frame is meant cannot be known: open it with Pillow,
      ``seek()`` the frame and pass the PIL image, which is used at its current frame.

    Integer pixels follow one rule, whatever holds them: a uint16 array and 16-bit PIL modes (I;16, I;16B, ...)
    are 16-bit (0..65535, scaled to 0..255); other integer arrays (int16, int32, int64 as ``np.array`` makes
    them, ...) and PIL mode I (32-bit) hold 8-bit values 0..255, except that mode I with larger values (up to
    65535) is 16-bit. A 16-bit image whose largest value is 1 to 255 is refused as ambiguous (8-bit values in a
    16-bit container, or an almost black 16-bit picture): convert it to uint8 yourself as the message shows.
    Arrays are always (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), never channels first: a (3, 8, 4) array is 3 rows
    x 8 columns RGBA. A 3-D shape that would also read as channels first (first and last sizes 3 or 4) gives a
    CamCheckWarning saying so; pass a PIL image (``Image.fromarray``) to say which is meant.
    Other channels-first arrays, e.g. (3, H, W) with W > 4, are refused with the np.transpose that fixes them.

    Files and PIL images with an EXIF orientation tag (phone photos) are turned as viewers and browsers show
    them (``PIL.ImageOps.exif_transpose``), so maps and boxes are in the pixels people see (build a mask from
    ``ImageOps.exif_transpose(img)``, not from the stored pixels ``np.asarray(img)``); an orientation value that
    ``exif_transpose`` ignores (0, 9, the text "6") means no turn here too. See :func:`load_image_oriented` for
    the orientation applied. The caller's object is never modified and never
    shared with the result. Raises InputError with the fix.

    Example:
        >>> load_image(np.zeros((2, 3), dtype=np.uint8)).size
        (3, 2)
        >>> load_image(Image.new("RGBA", (1, 1), (0, 0, 0, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    return load_image_oriented(obj)[0]


def load_image_oriented(obj: ImageLike) -> tuple[Image.Image, int]:
    """:func:`load_image` and the EXIF orientation it applied (1: none; 6: the stored pixels were turned 90
    degrees clockwise to show them upright, ...).

    Example:
        >>> load_image_oriented(np.zeros((2, 3), dtype=np.uint8))[1]
        1
    """
    if isinstance(obj, Image.Image):
        _check_open(obj)
        shown, orientation = _upright(obj)
        return _from_pil(shown), orientation
    if isinstance(obj, np.ndarray):
        return _from_array(obj), 1
    if isinstance(obj, (str, os.PathLike)):
        return _from_path(Path(obj).expanduser())
    fix = (
        " For a (3, H, W) tensor in [0, 1]: t.permute(1, 2, 0).cpu().numpy(); compute_cam also takes "
        "preprocessed tensors directly."
        if type(obj).__module__.startswith("torch")
        else ""
    )
    raise InputError(
        f"an image of type {type(obj).__name__} is not understood; pass a PIL image, {_EXPECTED}, "
        f"or an image file path.{fix}"
    )


def _check_open(img: Image.Image) -> None:
    """A PIL image whose file was closed before its pixels were read cannot be used: say so, not 'convert it'."""
    try:
        img.load()
        img.im  # noqa: B018 - raises on a closed image
    except (ValueError, AssertionError) as err:
        if getattr(img, "fp", None) is not None:
            raise InputError(f"the PIL image's pixels cannot be read ({type(err).__name__}: {err}). Fix: pass the "
                             "file path, or a copy made with image.copy()") from err
        raise InputError(
            "the PIL image was closed before its pixels were read (e.g. opened in a `with Image.open(...)` block "
            "and used after it). Fix: call image.load() (or image.convert('RGB')) inside the block, or pass the "
            "file path"
        ) from err
    except OSError as err:
        raise InputError(f"the PIL image's pixels cannot be read ({err}); the file may be truncated, replace it"
                         ) from err


class Regions(dict):
    """Region boxes by name; an unknown name raises CamCheckError listing the names there are.

    Example:
        >>> regions = Regions({"cat": Box(0, 0, 5, 5)}, owner="chelsea")
        >>> try:
        ...     regions["dog"]
        ... except RegionError as err:
        ...     print(str(err).split(". Fix")[0])
        sample image 'chelsea' has no region 'dog'; its regions are: cat
    """

    def __init__(self, boxes: Mapping[str, Box] = (), owner: str = "") -> None:
        super().__init__(boxes)
        self.owner = owner

    def __missing__(self, key: str) -> Box:
        raise RegionError(
            f"sample image {self.owner!r} has no region {key!r}; its regions are: {', '.join(sorted(self)) or 'none'}. "
            "Fix: use one of these names, or add the region to the image's annotation"
        )


@dataclass(frozen=True)
class SampleImage:
    """An image with named regions (boxes in its pixels) and where it comes from.

    Images of a dataset (:func:`pytest_camcheck.load_dataset`) also carry ``objects``, one
    :class:`~pytest_camcheck.datasets.AnnotatedObject` (``.label``, ``.region``, ``.difficult``) per annotated
    object, and ``extra``, the annotation's other fields; ``regions`` then maps each label to the union of its
    objects.

    Example:
        >>> s = sample_image("chelsea")
        >>> s.size, sorted(s.regions)[:2]
        ((300, 451), ['cat', 'eyes'])
    """

    name: str
    image: Image.Image
    regions: Regions = field(default_factory=Regions)
    source: str = ""
    objects: tuple = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", Regions(self.regions, owner=self.name))
        if isinstance(self.image, Image.Image):  # so that reports can say which sample a check used
            self.image.info.setdefault("camcheck_name", self.name)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels, numpy's order."""
        return self.image.height, self.image.width


def _boxes(raw: Any, size: tuple[int, int], where: str) -> dict[str, Box]:
    if not isinstance(raw, dict):
        raise InputError(f'"regions" in {where} is {type(raw).__name__}, not an object. Expected: {_FORMAT}')
    boxes = {}
    for name, value in raw.items():
        if not isinstance(value, list) or len(value) != 4:
            raise RegionError(f"region {name!r} in {where} is {value!r}; expected [x0, y0, x1, y1] in pixels")
        try:
            box = Box(*value)
            to_mask(box, size)
        except RegionError as err:
            raise RegionError(f"region {name!r} in {where}: {err}") from err
        boxes[name] = box
    return boxes


@functools.lru_cache(maxsize=None)
def _catalogue() -> dict[str, dict[str, Any]]:
    return json.loads(_CATALOGUE.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _builtin_pixels(name: str) -> np.ndarray:
    import skimage.data

    entry = _catalogue()[name]
    pixels = getattr(skimage.data, entry["skimage"])()
    if "item" in entry:
        pixels = pixels[entry["item"]]
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    if list(pixels.shape[:2]) != entry["size"]:
        raise CamCheckError(
            f"scikit-image's {entry['skimage']!r} image has size {pixels.shape[:2]} but the sample image {name!r} is "
            f"annotated for {tuple(entry['size'])} (height, width). Fix: install a scikit-image version that ships "
            "the original sample images"
        )
    pixels.setflags(write=False)
    return pixels


def _builtin(name: str) -> SampleImage:
    entry = _catalogue()[name]
    image = load_image(_builtin_pixels(name))
    boxes = _boxes(entry["regions"], (image.height, image.width), f"the built-in sample image {name!r}")
    return SampleImage(name, image, boxes, entry["source"])


def load_annotated(path: str | os.PathLike) -> SampleImage:
    """A sample image from a JSON annotation file; the sample is named after the file (dog.json -> "dog").

    Format: {"image": "dog.jpg", "regions": {"dog": [x0, y0, x1, y1], ...}, "source": "..."}, the
    image path relative to the JSON file, boxes in that image's pixels (x to the right, y down, x1/y1
    exclusive) and inside it; "source" is optional (default: the image path).

    Example:
        >>> s = load_annotated("fixtures/disc_and_square.json")
        >>> s.name, s.regions["disc"]
        ('disc_and_square', Box(x0=15, y0=25, x1=65, y1=75))
    """
    path = Path(path).expanduser()
    where = resolve_path(path, InputError, "the annotation file path")
    if not path.is_file():
        raise InputError(f"annotation file not found: {where}. Fix the path; expected a JSON file like {_FORMAT}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{where} is not valid JSON ({err}). Fix the file; expected: {_FORMAT}") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("image"), str):
        raise InputError(f'{where} has no "image" entry naming the image file. Expected: {_FORMAT}')
    picture = path.parent / spec["image"]
    try:
        image = load_image(picture)
    except InputError as err:
        raise InputError(f"the image named in {where}: {err}") from err
    boxes = _boxes(spec.get("regions", {}), (image.height, image.width), str(where))
    return SampleImage(path.stem, image, boxes, str(spec.get("source", resolve_path(picture, InputError))))


def _dirs(search_dirs: SearchDirs) -> list[Path]:
    if isinstance(search_dirs, (str, os.PathLike)):
        search_dirs = [search_dirs]
    return [Path(d).expanduser() for d in search_dirs]


def _is_annotation(candidate: Path) -> bool:
    """Whether the file reads as an annotation file (a JSON object naming an image)."""
    try:
        spec = json.loads(candidate.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    return isinstance(spec, dict) and "image" in spec


def _annotation_files(search_dirs: SearchDirs) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in _dirs(search_dirs):
        for candidate in sorted(folder.glob("*.json")):
            if _is_annotation(candidate):
                found.setdefault(candidate.stem, candidate)
    return found


def available_images(search_dirs: SearchDirs = ()) -> list[str]:
    """Names of the built-in sample images and of the annotation files (`<name>.json`) in `search_dirs`.

    Example:
        >>> {"chelsea", "coffee", "astronaut"} <= set(available_images())
        True
    """
    return sorted(set(_catalogue()) | set(_annotation_files(search_dirs)))


_SCENE_NAME = re.compile(r"shapes-(?P<kind>single|pair|shortcut)-(?P<seed>\d+)")


def scene_image(seed: int, kind: str = "single") -> SampleImage:
    """A synthetic scene of the bundled models' world as a sample image, named ``shapes-<kind>-<seed>``.

    Regions: each object's tight box under its class name, ``object`` for the scene's labelled object, and
    ``watermark`` on shortcut scenes. Seeds from ``pytest_camcheck.scenes.HELD_OUT`` up were never trained on.

    Example:
        >>> s = scene_image(1_000_000, "pair")
        >>> "object" in s.regions, s.name
        (True, 'shapes-pair-1000000')
    """
    from .scenes import make_scene

    made = make_scene(seed, kind)
    boxes = {obj.name: Box(*obj.box) for obj in made.objects}
    boxes["object"] = Box(*made.objects[0].box)
    if made.watermark_box is not None:
        boxes["watermark"] = Box(*made.watermark_box)
    name = f"shapes-{kind}-{seed}"
    return SampleImage(name=name, image=Image.fromarray(made.image), regions=Regions(boxes, owner=name),
                       source=f"pytest_camcheck.scenes.make_scene({seed}, {kind!r})")


def sample_image(name: str, search_dirs: SearchDirs = ()) -> SampleImage:
    """A sample image by name: a built-in sample (:func:`available_images` without folders), a synthetic scene
    ``shapes-<single|pair|shortcut>-<seed>``, or `<dir>/<name>.json` in the first search dir that has it.

    The built-in and scene names are reserved: when an annotation file in ``search_dirs`` reuses one (your
    ``fixtures/coffee.json``), which image is meant is ambiguous and a CamCheckError says so; rename your file.
    ``sample_image(name)`` with no ``search_dirs`` always gives the built-in.

    Example:
        >>> sample_image("coffee").regions["cup"]
        Box(x0=172, y0=17, x1=410, y1=302)
    """
    dirs = _dirs(search_dirs)
    scene = _SCENE_NAME.fullmatch(name)
    if name in _catalogue() or scene:
        clash = next((f / f"{name}.json" for f in dirs if _is_annotation(f / f"{name}.json")), None)
        if clash is not None:
            what = "a synthetic scene" if scene else "scikit-image's built-in sample image"
            raise CamCheckError(
                f"{name!r} names both {what} and your annotation file {clash.resolve()}, so which image is meant is "
                f"ambiguous. Fix: rename your file (e.g. my-{name}.json) and ask for that name; for "
                f"{'the scene' if scene else 'the built-in'}, call pytest_camcheck.images.sample_image({name!r}) "
                "without search_dirs"
            )
        return scene_image(int(scene["seed"]), scene["kind"]) if scene else _builtin(name)
    for folder in dirs:
        candidate = folder / f"{name}.json"
        if candidate.is_file():
            return load_annotated(candidate)
    searched = ", ".join(str(resolve_path(d, CamCheckError, "the search folder")) + ("" if d.is_dir() else " (missing)")
                         for d in dirs) or "none given"
    raise CamCheckError(
        f"no sample image named {name!r}; available: {', '.join(available_images(dirs))}, and synthetic scenes "
        "'shapes-<single|pair|shortcut>-<seed>'. Fix: use one of these, "
        f"or add {name}.json next to your image in a searched folder ({searched}) containing {_FORMAT}"
    )
