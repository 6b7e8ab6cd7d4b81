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

import re

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import CamCheckError, InputError, RegionError
from .regions import Box, to_mask

_CATALOGUE = Path(__file__).parent / "data" / "sample_images.json"
_FORMAT = '{"image": "dog.jpg", "regions": {"dog": [x0, y0, x1, y1]}}'
_EXPECTED = "an HxWx3 RGB array (uint8, or float in [0, 1]), HxWx4 RGBA or HxW grey"

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]
SearchDirs = Union[Iterable[Union[str, os.PathLike]], str, os.PathLike]


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_bit(a: np.ndarray) -> np.ndarray:
    low, high = int(a.min()), int(a.max())
    if low < 0 or high > 65535:
        raise InputError(
            f"the 32-bit integer image has values from {low} to {high}; it is read as 16-bit (0..65535). Fix: scale "
            "it to 0..255 and pass a uint8 array"
        )
    return a.astype(np.uint16)


def _from_pil(img: Image.Image) -> Image.Image:
    if img.width == 0 or img.height == 0:
        raise InputError(f"the image is empty ({img.width}x{img.height} px); pass an image with pixels")
    if img.mode == "I":
        return _from_array(_sixteen_bit(np.asarray(img)))
    if img.mode == "F" or img.mode.startswith("I;16"):
        return _from_array(np.asarray(img))
    if img.has_transparency_data:
        return _on_white(img.convert("RGBA"))
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise InputError(
            f"PIL image mode {img.mode!r} cannot be converted to RGB ({err}). Fix: convert it yourself, "
            "e.g. image.convert('RGB')"
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
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        hint = (
            " It looks channels-first (C, H, W): use np.transpose(a, (1, 2, 0))."
            if a.ndim == 3 and a.shape[0] in (1, 3, 4)
            else ""
        )
        raise InputError(f"the image array has shape {a.shape}; expected {_EXPECTED}.{hint}")
    pixels = _to_uint8(a)
    return _from_pil(Image.fromarray(np.ascontiguousarray(pixels)))


_ORIENTATION = 0x0112  # the EXIF tag


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag of ``img`` (1 to 8; 1 when it has none or an invalid one).

    Example:
        >>> exif_orientation(Image.new("RGB", (2, 1)))
        1
    """
    try:
        value = int(img.getexif().get(_ORIENTATION, 1) or 1)
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return value if 1 <= value <= 8 else 1


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


def _from_path(path: Path) -> tuple[Image.Image, int]:
    where = path.resolve()
    if not path.exists():
        raise InputError(f"image file not found: {where}. Fix the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise InputError(f"{where} is not a file; pass the path of an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as img:
            img.load()
            shown, orientation = _upright(img)
            return _from_pil(shown), orientation
    except UnidentifiedImageError as err:
        raise InputError(f"{where} is not an image Pillow can read; pass a PNG, JPEG, BMP, TIFF or WebP file") from err
    except Image.DecompressionBombError as err:
        raise InputError(too_large(where, err)) from err
    except OSError as err:
        raise InputError(f"could not read the image {where} ({err}); the file may be truncated, replace it") from err


def load_image(obj: ImageLike) -> Image.Image:
    """A new RGB PIL image from a PIL image, a numpy array, or an image file path, in the orientation people see.

    - PIL images of any mode. Transparent images (RGBA, LA, P or L/RGB with a transparency key) are
      composited onto WHITE, as image viewers show them, whatever colour the transparent pixels hide.
      16-bit modes (I;16, I) are read as 0..65535 and scaled to 0..255; mode F like a float array.
    - numpy arrays HxWx3 (RGB), HxWx4 (RGBA, composited onto white), HxW or HxWx1 (grey): uint8,
      other integer types with values in 0..255, uint16 (16-bit, scaled), or float in [0, 1].
    - a path (str or pathlib.Path) to an image file.

    Files and PIL images with an EXIF orientation tag (phone photos) are turned as viewers and browsers show
    them (``PIL.ImageOps.exif_transpose``), so maps and boxes are in the pixels people see; see
    :func:`load_image_oriented` for the orientation applied. The caller's object is never modified and never
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
    where = path.resolve()
    if not path.is_file():
        raise InputError(f"annotation file not found: {where}. Fix the path; expected a JSON file like {_FORMAT}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
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
    return SampleImage(path.stem, image, boxes, str(spec.get("source", picture.resolve())))


def _dirs(search_dirs: SearchDirs) -> list[Path]:
    if isinstance(search_dirs, (str, os.PathLike)):
        search_dirs = [search_dirs]
    return [Path(d).expanduser() for d in search_dirs]


def _is_annotation(candidate: Path) -> bool:
    """Whether the file reads as an annotation file (a JSON object naming an image)."""
    try:
        spec = json.loads(candidate.read_text(encoding="utf-8"))
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
    searched = ", ".join(str(d.resolve()) + ("" if d.is_dir() else " (missing)") for d in dirs) or "none given"
    raise CamCheckError(
        f"no sample image named {name!r}; available: {', '.join(available_images(dirs))}, and synthetic scenes "
        "'shapes-<single|pair|shortcut>-<seed>'. Fix: use one of these, "
        f"or add {name}.json next to your image in a searched folder ({searched}) containing {_FORMAT}"
    )
