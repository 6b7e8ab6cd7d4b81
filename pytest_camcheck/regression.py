"""Map regression checks: compare a model's map with a baseline committed next to the tests.

The convention of pytest-regressions: baselines live in ``<test module dir>/<module stem>/``, one ``.npz`` per
test and check (read with ``allow_pickle=False``) plus a ``.png`` preview to review in a pull request. The first
run writes the baseline and fails ("created, review and commit it"); ``--camcheck-update`` writes what is
missing, unreadable or failing and passes; without it no existing file is ever changed.

A baseline file is keyed by test name, ``basename`` (when given), method, layer and target, plus a counter for
repeated identical checks in one test; the device is NOT part of the key, so a baseline recorded on CPU is
checked on CUDA. It holds the map (float32, original image pixels) and, as metadata arrays, the device, torch
and pytest-camcheck versions, method, layer, target, label, image size and format version.

A test inside a class has its class path in the key (``TestA_test_map-...``); its baselines were once named like a
module-level test's (``test_map-...``, :func:`previous_test_name`). When such a check's baseline is missing and a
file under the former name holds a map of its method, layer, target and image size, no new baseline is written
silently: if the test module has no module-level test of that name (so the file can be no one else's) the check is
refused with the ``git mv`` to make; otherwise, or when the module is not known, the new baseline is created as
usual and the message names the former file, which camcheck cannot tell is this test's. The user's file is never
moved or changed.

A check passes when both the SSIM (scikit-image, data range 1) and the Spearman rank correlation of the
current map with the baseline reach their thresholds. An empty current map against a non-empty baseline fails
(and the other way round); two empty maps pass.

Default thresholds, measured on the bundled ``camcheck-shapes`` with 16 held-out scenes of
:mod:`pytest_camcheck.scenes`: SSIM and Spearman of each changed map against the original one, the lowest over
the images and over gradcam, gradcam++ and layercam, and in brackets the lowest of the three methods' medians:

================================================  ==================  ==================
change                                            SSIM                Spearman
================================================  ==================  ==================
*numeric noise: must pass*
same model, run again                             1.0000              1.0000
torch threads 1 vs 2 (other summation order)      1.0000              1.0000
float64 vs float32 model                          1.0000              1.0000
TF32 / fp16 emulation (weights and every conv     1.0000              1.0000
and linear input rounded to 10 mantissa bits)
tensor resize (as on a GPU) vs PIL resize         0.9991 (0.9999)     0.991 (0.9998)
input +-1 grey level (another JPEG decoder)       0.9974 (0.9998)     0.970 (0.9992)
input +-2 grey levels                             0.9948 (0.9995)     0.971 (0.998)
*retrain-like drift: must fail*
weights x (1 + 0.2 N(0, 1))                       0.36 (0.75)         0.52 (0.82)
fine-tuned 5 SGD steps on shifted labels          0.05 (0.40)         -0.29 (0.32)
fine-tuned 20 SGD steps on shifted labels         0.01 (0.33)         -0.50 (0.37)
last convolutional stage re-initialised           0.02 (0.24)         -0.50 (0.12)
*in between*
weights x (1 + 0.05 N(0, 1))                      0.84 (0.99)         0.76 (0.98)
input re-encoded as JPEG quality 95               0.69 (0.99)         0.66 (0.96)
================================================  ==================  ==================

Spearman's floor under noise (0.97) is lower than SSIM's (0.995): near-zero background pixels swap ranks.
:data:`DEFAULT_SSIM_MIN` = 0.95 and :data:`DEFAULT_SPEARMAN_MIN` = 0.9 leave a margin of 0.045 and 0.07 above
the noise, while every fine-tuned or re-initialised model fails on every image (its best SSIM is 0.85) and a
20% weight perturbation on most. EigenCAM ignores the classifier head and moves less: re-initialising the last
stage gives 0.56 (0.84) and 0.59 (0.89), still failing SSIM on every image (best 0.93).

Example (the ``cam_regression`` fixture does this with the test's own folder and name):
    >>> import tempfile
    >>> scene = make_scene(HELD_OUT + 1, "single")
    >>> folder = Path(tempfile.mkdtemp()) / "test_model"
    >>> CamRegression(folder, "test_looks_at_it").check(shapes_model, scene.image, scene.label)
    Traceback (most recent call last):
    AssertionError: camcheck regression: baseline not found, created: ...test_looks_at_it-gradcam-features-t...npz
    ...
    >>> CamRegression(folder, "test_looks_at_it").check(shapes_model, scene.image, scene.label).layer
    'features'
"""

from __future__ import annotations

import hashlib
import re
import io
import os
import shlex
import sys
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import __version__, context
from ._io import atomic_write, read_npz, refuse_link, remove_dangling_link
from ._text import safe_name, target_text
from ._values import check_threshold as _check_number
from .settings import DEFAULT_SPEARMAN_MIN, DEFAULT_SSIM_MIN
from .engine import CamResult, compute_cam
from .engine.core import device_of
from .errors import CamCheckError, CamCheckWarning, FileRefused
from .metrics import check_heatmap, map_similarity
from .render import overlay, save_png, side_by_side

__all__ = ["DEFAULT_SPEARMAN_MIN", "DEFAULT_SSIM_MIN", "FORMAT_VERSION", "UPDATE_HINT", "Baseline", "CamRegression",
           "baseline_location", "check_threshold", "previous_test_name", "read_baseline", "write_baseline"]

FORMAT_VERSION = 1
UPDATE_HINT = "rerun with --camcheck-update (ini camcheck_update = true)"
PREVIEW_SIDE = 256
_MAX_STEM = 120
_KEYS = ("heatmap", "format_version", "method", "layer", "target", "label", "image_size", "device",
         "torch_version", "camcheck_version")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


_PLAIN = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


def file_stem(parts: list[str], limit: int = 120) -> str:
    """A file name stem for ``parts`` (test id, basename, method, layer, target...) that two different lists never
    share, on any file system: parts made of lower-case letters, digits, ``_`` and inner dots are joined with
    ``-`` as they are; when any part holds anything else (brackets, spaces, slashes, ``-``, upper case, which
    case-insensitive file systems fold, non-ASCII) it is shown with those characters replaced by ``_`` and the
    stem ends with a hash of all the parts as given. Stems longer than ``limit`` are cut and hashed.

    Example:
        >>> file_stem(["test_map", "gradcam", "layer4", "t3"])
        'test_map-gradcam-layer4-t3'
        >>> file_stem(["test_map[a b]", "gradcam"]) != file_stem(["test_map[a_b]", "gradcam"])
        True
    """
    stem = "-".join(safe_name(p) for p in parts)
    if all(_PLAIN.fullmatch(p) and safe_name(p) == p for p in parts) and len(stem) <= limit:
        return stem
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{stem[:limit - 13]}-{digest}"


def baseline_location(module_path: str | os.PathLike[str], test_name: str) -> tuple[Path, str]:
    """(baseline folder, the test's part of its baseline file names) of a test: ``<module dir>/<module stem>/``
    and :func:`file_stem` of the test's name with its parameters, which for a test inside a class starts with the
    class path (``TestA::test_map``: the node id after the module), so that same-named tests of two classes never
    share a baseline.

    Example:
        >>> baseline_location("tests/test_model.py", "test_map[resnet18-cpu]")
        (PosixPath('tests/test_model'), 'test_map_resnet18-cpu-37817b2e5794')
        >>> baseline_location("tests/test_model.py", "TestA::test_map")[1]
        'TestA_test_map-5d4d18ed3684'
    """
    module = Path(module_path)
    return module.parent / module.stem, file_stem([test_name])


def previous_test_name(test_name: str) -> str | None:
    """The test's part of its baseline names before the class path was put in them, for a test inside a class:
    its own name with its parameters (``TestA::test_map[x]`` -> ``test_map[x]``, the name a module-level test
    ``test_map[x]`` still has); None for a module-level test, whose names did not change.

    Example:
        >>> previous_test_name("TestA::TestInner::test_map[a::b]"), previous_test_name("test_map[x]")
        ('test_map[a::b]', None)
    """
    head, bracket, params = test_name.partition("[")
    if "::" not in head:
        return None
    return head.rpartition("::")[2] + bracket + params


def _module_defines(baseline_dir: Path, name: str) -> bool | None:
    """Whether the imported test module whose baselines live in ``baseline_dir`` defines ``name`` at module level
    (so that a module-level test of that name may exist); None when no such module is imported."""
    source = baseline_dir.parent / f"{baseline_dir.name}.py"
    wanted = None
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.basename(file) == source.name:
            wanted = wanted or os.path.realpath(source)
            if os.path.realpath(file) == wanted:
                return name in vars(module)
    return None


def _with_previews(old: Path, new: Path) -> list[tuple[Path, Path]]:
    """The (old, new) pairs of a map baseline and of its ``.png`` preview."""
    return [(old, new), (old.with_suffix(".png"), new.with_suffix(".png"))]


def _shell(command: str, pairs: list[tuple[Path, Path]]) -> str:
    """``command OLD NEW`` for each pair whose first file exists, joined with ``&&``, paths quoted for a shell."""
    return " && ".join(f"{command} {shlex.quote(str(a))} {shlex.quote(str(b))}" for a, b in pairs if a.exists())


@dataclass(frozen=True)
class Baseline:
    """A baseline map and its metadata (``method``, ``layer``, ``target``, ``label``, ``image_size``, ``device``,
    ``torch_version``, ``camcheck_version``, ``format_version``), as :func:`read_baseline` returns it.

    Example:
        >>> Baseline(np.zeros((4, 4), np.float32), {"device": "cpu"}).empty
        True
    """

    heatmap: np.ndarray
    meta: dict[str, Any]

    @property
    def empty(self) -> bool:
        """Whether the baseline map is all zero."""
        return not self.heatmap.any()


def _broken(path: Path, problem: str) -> CamCheckError:
    return CamCheckError(
        f"baseline {path} {problem}. Fix: delete the file, or {UPDATE_HINT} to write it again from the current map"
    )


class _OtherSize(Exception):
    """The baseline's map header gives another size than the image's."""


MAX_MAP_PIXELS = 2**26  # 64 megapixels: a map larger than any image a classifier is explained on
_META_BYTES = 64 * 1024


def _member_limit(expected: tuple[int, int] | None) -> Callable[[str, tuple[int, ...], Any], str | None]:
    """What a baseline's members may hold, decided from their .npy headers before decompression: the map is
    a 2-D float array of the image's size (when known, else at most MAX_MAP_PIXELS), metadata a few bytes."""

    def limit(name: str, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if name != "heatmap":
            return None if size <= _META_BYTES else f"would take {size} bytes; metadata takes a few"
        if len(shape) != 2 or dtype.kind not in "fiub":
            return "is not a 2-D numeric map"
        if expected is not None and tuple(shape) != tuple(expected):
            raise _OtherSize(shape)
        if shape[0] * shape[1] > MAX_MAP_PIXELS or dtype.itemsize > 8:
            return f"would take {size} bytes, more than a map of {MAX_MAP_PIXELS} pixels"
        return None

    return limit


def read_baseline(path: str | os.PathLike[str], expected_shape: tuple[int, int] | None = None) -> Baseline:
    """Read and validate a baseline ``.npz`` (no pickles); a corrupt or foreign file raises CamCheckError naming
    the file and the fix. Each member's ``.npy`` header is checked before it is decompressed (a zip bomb is
    refused in milliseconds): the map must be 2-D, of ``expected_shape`` (height, width) when given, else at most
    :data:`MAX_MAP_PIXELS`.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "test_map.npz"
        >>> write_baseline(path, compute_cam(model, image, 1, layer="features"), "cpu", replace=False)
        True
        >>> read_baseline(path).meta["layer"], read_baseline(path).heatmap.shape
        ('features', (32, 32))
    """
    path = Path(path)
    try:
        with open(path, "rb") as head:
            single = head.read(6) == b"\x93NUMPY"
        if single:
            raise _broken(path, "is not a camcheck baseline (a single array, not an .npz archive)")
        arrays = read_npz(path, _member_limit(expected_shape))
    except _OtherSize as other:
        (mh, mw), (h, w) = other.args[0], expected_shape
        raise CamCheckError(
            f"baseline {path} holds a map of {mw}x{mh} px but the image is now {w}x{h} px (width x height). Fix: "
            f"check the same image as before, or, if the image changed on purpose, {UPDATE_HINT}"
        ) from None
    except CamCheckError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to parse the file means it is not a valid baseline
        raise _broken(path, f"cannot be read ({type(err).__name__}: {err})") from err
    missing = [key for key in _KEYS if key not in arrays]
    if missing:
        raise _broken(path, f"is not a camcheck baseline: it lacks {', '.join(missing)} (it has "
                            f"{', '.join(sorted(arrays)) or 'no arrays'})")
    version = arrays["format_version"]
    if version.shape != () or not np.issubdtype(version.dtype, np.integer) or not 1 <= int(version) <= FORMAT_VERSION:
        raise _broken(path, f"has format version {version.tolist()!r}; this pytest-camcheck reads versions 1 to "
                            f"{FORMAT_VERSION} (upgrade pytest-camcheck if it was written by a newer one)")
    try:
        heatmap = check_heatmap(arrays["heatmap"], f"the map in {path}").astype(np.float32)
        meta = {key: arrays[key].item() if arrays[key].ndim == 0 else arrays[key].tolist()
                for key in _KEYS if key != "heatmap"}
    except CamCheckError as err:
        raise _broken(path, f"holds an invalid map ({err})") from err
    if list(meta["image_size"]) != list(heatmap.shape):
        raise _broken(path, f"is inconsistent: image_size {meta['image_size']} but a map of shape {heatmap.shape}")
    return Baseline(heatmap, meta)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive (as ``np.savez_compressed`` writes it) with fixed timestamps, so equal maps give
    equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", _ZIP_TIME), member.getvalue(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def write_baseline(path: str | os.PathLike[str], result: CamResult, device: str, *, replace: bool) -> bool:
    """Write ``result``'s map and metadata to ``path`` atomically (temporary file in the same folder, then a
    rename); returns False, writing nothing, when ``replace`` is False and the file exists, even if another
    process creates it at the same moment (the file is published with a hard link, which never replaces).

    Example:
        >>> import tempfile
        >>> path, result = Path(tempfile.mkdtemp()) / "test_map.npz", compute_cam(model, image, 1)
        >>> write_baseline(path, result, "cpu", replace=False), write_baseline(path, result, "cpu", replace=False)
        (True, False)
    """
    target = Path(path)
    data = _npz_bytes({
        "heatmap": result.heatmap.astype(np.float32),
        "format_version": np.int64(FORMAT_VERSION),
        "method": np.str_(result.method),
        "layer": np.str_(result.layer),
        "target": np.int64(result.target),
        "label": np.str_(result.label or ""),
        "image_size": np.array(result.heatmap.shape, dtype=np.int64),
        "device": np.str_(device),
        "torch_version": np.str_(torch.__version__),
        "camcheck_version": np.str_(__version__),
    })
    return atomic_write(target, data, replace=replace)


def check_threshold(name: str, value: Any) -> float:
    """Validate a similarity threshold (``ssim_min``, ``spearman_min``): a finite real number in [-1, 1].

    Example:
        >>> check_threshold("ssim_min", 0.8)
        0.8
    """
    default = DEFAULT_SSIM_MIN if "ssim" in name else DEFAULT_SPEARMAN_MIN
    return _check_number(name, value, low=-1.0, high=1.0, default=default)


def _tile(result: CamResult, heatmap: np.ndarray, **kwargs: Any) -> Image.Image:
    if result.image is not None:
        return overlay(result.image, heatmap, **kwargs)
    return overlay(np.zeros((*heatmap.shape, 3), np.uint8), heatmap, **(kwargs | {"alpha": 1.0}))


def _mark(value: float, minimum: float) -> str:
    return "" if value >= minimum else "  <-- too low"


class CamRegression:
    """Compare maps with baselines in ``baseline_dir`` (the ``cam_regression`` fixture; see the module doc).

    ``test_name`` (the test's name with its parameters, as pytest gives it) names the files, see
    :func:`file_stem`; ``update`` writes missing, unreadable and
    failing baselines and passes; ``ssim_min`` / ``spearman_min`` are the default thresholds of :meth:`check`;
    ``device`` and ``method`` are the defaults of ``compute_cam`` (as in the ``camcheck`` fixture);
    ``pass_pictures`` also writes the baseline | current | difference picture for passing checks (for the HTML
    report). ``written`` lists every baseline and preview file written.

    Example:
        >>> reg = CamRegression(Path("tests/test_model"), "test_map", update=False, ssim_min=0.8)
        >>> reg.ssim_min, reg.written
        (0.8, [])
    """

    def __init__(self, baseline_dir: str | os.PathLike[str], test_name: str, *, update: bool = False,
                 ssim_min: float = DEFAULT_SSIM_MIN, spearman_min: float = DEFAULT_SPEARMAN_MIN,
                 device: str | torch.device | None = None, method: str = "gradcam",
                 pass_pictures: bool = False) -> None:
        self.baseline_dir = Path(baseline_dir)
        self.test_name = test_name
        self.update = update
        self.ssim_min = check_threshold("ssim_min", ssim_min)
        self.spearman_min = check_threshold("spearman_min", spearman_min)
        self.device, self.method, self.pass_pictures = device, method, pass_pictures
        self.written: list[Path] = []
        self.removed: list[Path] = []
        self._image = ""
        self._seen: Counter[str] = Counter()

    def _paths(self, result: CamResult, basename: str | None) -> tuple[Path, Path | None]:
        """``<test>[-<basename>]-<method>-<layer>-t<target>[-<n>].npz`` (see :meth:`baseline_file`), and for a test
        inside a class the name that file had before the class path was put in names (:func:`previous_test_name`)."""
        target = "tcallable" if result.target < 0 else f"t{result.target}"
        parts = self._counted([*([basename] if basename else []), result.method, result.layer, target], ".npz")
        old = previous_test_name(self.test_name)
        return (self.baseline_dir / f"{file_stem([self.test_name, *parts], _MAX_STEM)}.npz",
                None if old is None else self.baseline_dir / f"{file_stem([old, *parts], _MAX_STEM)}.npz")

    def _counted(self, parts: list[str], suffix: str) -> list[str]:
        """``parts`` and, from the second identical check of this test on, its number (2, 3...)."""
        key = "\0".join([self.test_name, *parts, suffix])
        self._seen[key] += 1
        return [*parts, str(self._seen[key])] if self._seen[key] > 1 else list(parts)

    def baseline_file(self, parts: list[str], suffix: str) -> Path:
        """The baseline file of one check of this test: ``<test>-<parts...>[-<n>]<suffix>`` in ``baseline_dir``,
        n counting repeated identical checks in one test (2, 3...), so that a second identical check never reads
        or rewrites the first's file; names with other characters than lower-case letters, digits and ``_`` end
        with a hash of the exact test id and parts, so two tests never share a file (see :func:`file_stem`).

        Example:
            >>> reg = CamRegression(Path("tests/test_model"), "test_rate")
            >>> [reg.baseline_file(["dataset", "gradcam"], ".json").name for _ in range(2)]
            ['test_rate-dataset-gradcam.json', 'test_rate-dataset-gradcam-2.json']
        """
        return self.baseline_dir / f"{file_stem([self.test_name, *self._counted(parts, suffix)], _MAX_STEM)}{suffix}"

    def check(self, model: nn.Module, image: Any, target: Any = None, *, basename: str | None = None,
              ssim_min: float | None = None, spearman_min: float | None = None, **cam_kwargs: Any) -> CamResult:
        """Compute the map of ``target`` for ``image`` and compare it with its baseline; return the CamResult.

        Other keywords go to ``compute_cam`` (``method``, ``layer``, ``preprocess``...). Raises AssertionError
        when the baseline was missing (it is written) or the map moved (SSIM or Spearman below its threshold),
        CamCheckError when the baseline file is unreadable or of another image size.

        Example:
            >>> cam_regression.check(model, scene.image, "circle", layer="features", ssim_min=0.8)  # doctest: +SKIP
        """
        __tracebackhide__ = True
        thresholds = {
            "ssim_min": check_threshold("ssim_min", self.ssim_min if ssim_min is None else ssim_min),
            "spearman_min": check_threshold("spearman_min",
                                             self.spearman_min if spearman_min is None else spearman_min),
        }
        kwargs = {"method": self.method} | ({"device": self.device} if self.device is not None else {}) | cam_kwargs
        self._image = context.describe_image(image)
        result = compute_cam(model, image, target, **kwargs)
        if isinstance(result, list):
            raise CamCheckError("cam_regression.check compares one image and one target at a time; call it once per "
                                "image/target (with basename=... to tell the files apart)")
        path, old = self._paths(result, basename)
        device = str(device_of(model))
        baseline = self._load(path, result)
        if baseline is None:
            previous = None if old is None or path.exists() else self._previous(old, result)
            if previous is not None and previous[1] is False and not self.update:
                raise CamCheckError(self._renamed(path, previous[0]))
            return self._create(path, result, device, thresholds, previous)
        scores = self._compare(baseline, result)
        passed = scores["ssim"] >= thresholds["ssim_min"] and scores["spearman"] >= thresholds["spearman_min"]
        if passed:
            picture = self._pass_picture(result, baseline)
            self._record(result, True, scores, thresholds, picture, "")
            return result
        if self.update:
            self._write(path, result, device, replace=True)
            picture = self._pass_picture(result, baseline)
            self._record(result, True, scores, thresholds, picture, f"camcheck regression: baseline updated: {path}")
            return result
        pictures = self._pictures(result, baseline.heatmap, full=True)
        message = self._explain(path, baseline, result, scores, thresholds, pictures)
        self._record(result, False, scores, thresholds, pictures["side by side"], message)
        raise AssertionError(message)

    def check_dataset(self, model: nn.Module, dataset: Any, *, max_drop: float = 0.03, basename: str | None = None,
                      **kwargs: Any) -> Any:
        """Run the dataset check of :func:`~pytest_camcheck.assert_dataset_attends_to` and compare each check's
        outcome and the rate with a reviewed JSON baseline (same lifecycle as map baselines); fail when the rate
        dropped by more than ``max_drop``, listing the checks that flipped. Returns the DatasetResult. See
        :mod:`pytest_camcheck.dataset_regression`.

        Example:
            >>> cam_regression.check_dataset(model, "fixtures/shapes-coco/instances.json")  # doctest: +SKIP
        """
        __tracebackhide__ = True
        from .dataset_regression import check_dataset

        return check_dataset(self, model, dataset, max_drop=max_drop, basename=basename, **kwargs)

    def _load(self, path: Path, result: CamResult) -> Baseline | None:
        """The baseline to compare with, or None when it is to be (re)written. A symbolic link at the baseline's
        path (or its preview's) is refused; a dangling one is removed under ``--camcheck-update`` (it points
        nowhere, so nothing is lost)."""
        self.check_links([path, path.with_suffix(".png")])
        if not path.exists():
            return None
        try:
            baseline = read_baseline(path, tuple(result.heatmap.shape))
            recorded = (baseline.meta["method"], baseline.meta["layer"], baseline.meta["target"])
            if recorded != (result.method, result.layer, result.target):
                raise _broken(path, f"holds the map of method {recorded[0]}, layer {recorded[1]}, target "
                                    f"{recorded[2]}, not of this check (method {result.method}, layer {result.layer}, "
                                    f"target {result.target}); was it copied or renamed?")
        except CamCheckError:
            if self.update:
                return None
            raise
        return baseline

    def _previous(self, old: Path, result: CamResult) -> tuple[Path, bool | None] | None:
        """The file this check's baseline had before the class path was put in names, when it exists (a file, not a
        link) and holds a map of this check's method, layer, target and image size; and whether the test module
        defines a module-level test of the test's name, which would use that name today (None: the module is not
        known). Only when it does not (False) is the file this test's for sure."""
        if os.path.islink(old) or not os.path.isfile(old):
            return None
        try:
            meta = read_baseline(old, tuple(result.heatmap.shape)).meta
        except CamCheckError:
            return None
        if (meta["method"], meta["layer"], meta["target"]) != (result.method, result.layer, result.target):
            return None
        return old, _module_defines(self.baseline_dir, self._function)

    @property
    def _function(self) -> str:
        return self.test_name.partition("[")[0].rpartition("::")[2]

    def _renamed(self, path: Path, old: Path) -> str:
        """The refusal to write a new baseline while this check's baseline sits under its former name."""
        pairs = _with_previews(old, path)
        return (
            f"camcheck regression: this check's baseline {path} does not exist, but {old} does: the name its baseline "
            f"had before tests in classes got the class path in their baseline names. It holds a map of this method, "
            f"layer, target and image size, and this module has no module-level test {self._function} that would "
            f"use that name. Nothing was written, so that a new baseline does not silently take the reviewed one's "
            f"place.\n  Fix: if it is this test's baseline (preview {old.with_suffix('.png')}), rename it: "
            f"{_shell('git mv', pairs)}\n  (cp instead of git mv if a same-named test of another class still needs "
            f"it: before, such tests shared one file); or, to record this test's baseline afresh, {UPDATE_HINT}"
        )

    def _former(self, path: Path, previous: tuple[Path, bool | None]) -> str:
        """What a new baseline's message says of the file under its former name."""
        old, known = previous
        if known is False:
            return (f"\n  note: {old}, this check's baseline under its name before tests in classes got the class "
                    f"path in their baseline names, is left as it was: git rm it when no other test needs it")
        whose = (f"this module has a module-level {self._function}, so camcheck cannot tell whose it is" if known
                 else f"camcheck cannot tell whose it is: it does not know whether this test's module has a "
                      f"module-level {self._function}")
        pairs = _with_previews(old, path)
        return (f"\n  note: {old} exists and holds a map of this method, layer, target and image size. It is the name "
                f"this check's baseline had before tests in classes got the class path in their baseline names, and "
                f"the name of a module-level {self._function}'s baseline of the same check (before, both used that one "
                f"file); {whose}.\n  If it holds this test's earlier map (preview {old.with_suffix('.png')}), copy it "
                f"over the new one: {_shell('cp', pairs)} (cp, not git mv: a module-level test may use it)")

    def check_links(self, files: list[Path]) -> None:
        """Refuse a symbolic link at any of ``files`` (a baseline and its preview); a dangling one is removed
        under ``--camcheck-update`` (it points nowhere, so nothing is lost) and noted in ``removed``.

        Example:
            >>> CamRegression(Path("tests/test_model"), "test_map").check_links([Path("no/such/file.npz")])
        """
        for file in files:
            if os.path.islink(file) and not os.path.exists(file):
                if self.update:
                    remove_dangling_link(file)
                    self.removed.append(file)
                else:
                    raise FileRefused(
                        f"baseline {file} is a dangling symbolic link (to {os.readlink(file)!r}); pytest-camcheck "
                        f"never writes through links. Fix: remove the link (rm {str(file)!r}), or {UPDATE_HINT}, "
                        "which removes dangling links at baseline paths and writes the baseline"
                    )
            refuse_link(file, "baseline")

    def _write(self, path: Path, result: CamResult, device: str, *, replace: bool) -> bool:
        """Publish the baseline and its preview, the preview checked first and the baseline removed again (or the
        one it replaced put back) when the preview cannot be written: a baseline is never left without its preview,
        written but not announced, and a reviewed one is never lost."""
        preview_path = path.with_suffix(".png")
        if preview_path.is_dir():
            raise FileRefused(f"cannot write the baseline preview {preview_path}: it is a folder. Fix: remove or "
                              f"rename the folder; the baseline {path.name} is written with its preview")
        preview = _tile(result, result.heatmap)
        preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        preview = preview.quantize(256, method=Image.Quantize.FASTOCTREE)
        reviewed = path.read_bytes() if replace and path.is_file() else None  # put back if the preview fails
        if not write_baseline(path, result, device, replace=replace):
            return False
        try:
            written = save_png(preview, preview_path)
        except BaseException:
            if reviewed is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, reviewed)
            raise
        self.written += [path, written]
        return True

    def _create(self, path: Path, result: CamResult, device: str, thresholds: dict[str, float],
                previous: tuple[Path, bool | None] | None = None) -> CamResult:
        __tracebackhide__ = True
        existed = path.exists()
        created = self._write(path, result, device, replace=existed)
        preview = path.with_suffix(".png")
        if not created:
            message = (f"camcheck regression: baseline {path} was just created by another test running at the same "
                       f"time (same file name); review and commit it, and give the checks different basename=... if "
                       f"they should not share it")
        elif self.update:
            what = "replaced" if existed else "created"
            if path in self.removed:
                what += " in place of a dangling link"
            message = f"camcheck regression: baseline {what}: {path} (preview {preview})"
        else:
            message = (f"camcheck regression: baseline not found, created: {path}\n  preview: {preview}\n"
                       f"  review and commit it; the check passes from the next run on (--camcheck-update creates "
                       f"every missing baseline in one run)")
        if created and previous is not None:
            message += self._former(path, previous)
            if self.update:
                warnings.warn(CamCheckWarning(message), stacklevel=3)
        passed = created and self.update
        self._record(result, passed, {"ssim": None, "spearman": None}, thresholds,
                     preview if preview.exists() else None, message)
        if not passed:
            raise AssertionError(message)
        return result

    @staticmethod
    def _compare(baseline: Baseline, result: CamResult) -> dict[str, float]:
        if result.empty and baseline.empty:
            return {"ssim": 1.0, "spearman": 1.0}
        if result.empty or baseline.empty:
            return {"ssim": 0.0, "spearman": 0.0}
        return map_similarity(baseline.heatmap, result.heatmap)

    def _pass_picture(self, result: CamResult, baseline: Baseline) -> Path | None:
        return self._pictures(result, baseline.heatmap, full=False)["side by side"] if self.pass_pictures else None

    def _pictures(self, result: CamResult, base: np.ndarray, *, full: bool) -> dict[str, Path | None]:
        """baseline / current / difference tiles side by side (and, when ``full``, each alone); a folder that cannot
        be written is reported in the message, not raised."""
        tiles = {
            "baseline": _tile(result, base),
            "current": _tile(result, result.heatmap),
            "difference": _tile(result, (result.heatmap - base + 1) / 2, cmap="coolwarm", alpha=1.0),
        }
        labels = ["baseline", "current", "current - baseline (red: more, blue: less)"]
        out: dict[str, Path | None] = {}
        try:
            out["side by side"] = save_png(side_by_side(list(tiles.values()), labels),
                                           context.artifact_path("regression"))
            if full:
                for name, tile in tiles.items():
                    out[name] = save_png(tile, context.artifact_path(f"regression-{name}"))
        except OSError:
            return dict.fromkeys(["side by side", *(tiles if full else [])], None)
        return out

    def _explain(self, path: Path, baseline: Baseline, result: CamResult, scores: dict[str, float],
                 thresholds: dict[str, float], pictures: dict[str, Path | None]) -> str:
        h, w = result.image_size
        recorded = f"recorded on {baseline.meta['device']} with torch {baseline.meta['torch_version']}"
        lines = [
            "camcheck regression failed: the map moved away from its baseline",
            f"  method {result.method}, layer {result.layer}, {target_text(result)}, image {w}x{h} px",
            f"  SSIM {scores['ssim']:.4f}, required >= {thresholds['ssim_min']:g}"
            + _mark(scores["ssim"], thresholds["ssim_min"]),
            f"  Spearman {scores['spearman']:.4f}, required >= {thresholds['spearman_min']:g}"
            + _mark(scores["spearman"], thresholds["spearman_min"]),
        ]
        if result.empty != baseline.empty:
            which = "current map" if result.empty else "baseline map"
            lines.append(f"  the {which} is EMPTY (all zero): no positive evidence for the target at this layer")
        lines += [
            f"  baseline file: {path} ({recorded})",
            *[f"  {name} picture: {p if p is not None else 'not written (artifacts folder not writable)'}"
              for name, p in pictures.items()],
            f"  if the change is intended, {UPDATE_HINT} and commit the new baseline",
        ]
        return "\n".join(lines)

    def _record(self, result: CamResult, passed: bool, scores: dict[str, float | None], thresholds: dict[str, float],
                picture: Path | None, message: str) -> None:
        context.record(context.CheckRecord(
            check="regression", passed=passed, method=result.method, layer=result.layer, target=result.target,
            label=result.label, probability=result.probability, metrics=scores, thresholds=thresholds,
            overlay=picture, message=message, image=self._image,
        ))
