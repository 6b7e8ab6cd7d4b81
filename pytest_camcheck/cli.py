"""The ``camcheck`` command (also ``python -m pytest_camcheck``): see a map and get a box to write a test with,
and run a dataset check outside pytest.

- ``camcheck show MODEL IMAGE [--target T] [--method M] [--layer L] [--out overlay.png] [--write-json] [--force]``
  prints the top-5 classes, the layer, the suggested box of the target (the bounding box of the largest connected
  region of the map at or above :data:`BOX_THRESHOLD` of its peak, in image pixels), writes the overlay, and
  prints a test to paste and the annotation JSON; ``--write-json`` writes that JSON beside the image
  (``dog.jpg`` -> ``dog.json``). No input (the image, the model file) is ever written over, and no existing file
  is replaced unless it is an earlier overlay (marked in its PNG text, :data:`OVERLAY_MARK`) or ``--force`` is
  given.
- ``camcheck dataset MODEL PATH [--min-pass-rate R] [--report out.html]`` runs
  :func:`~pytest_camcheck.assert_dataset_attends_to`'s checks with a progress bar; exit code 0 when the rate is
  reached, 1 when not. The report replaces no existing file but an earlier report.

MODEL is a name the ``camcheck_model`` fixture serves (``camcheck-shapes``, ``resnet18``...) or
``path/to/file.py:factory``, a function returning the model. Bad arguments print one line and exit with code 2.

Example:
    >>> main(["show", "camcheck-shapes", "fixtures/shapes-coco/images/single-1000900.png", "--out",
    ...       "/tmp/overlay.png"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["BOX_THRESHOLD", "OVERLAY_MARK", "main", "suggested_box"]

BOX_THRESHOLD = 0.5
OVERLAY_MARK = {"Software": "pytest-camcheck show overlay"}


class _Usage(Exception):
    """A bad argument: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print the usage and a traceback-free error over 2 lines
        raise _Usage(f"{message} (camcheck {self.prog.split()[-1]} --help shows the usage)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="camcheck", description="Where a vision model looks: see a map, check a dataset.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    show = sub.add_parser("show", help="print the top classes and a suggested box, write the overlay")
    show.add_argument("model", help="a model name (camcheck-shapes, resnet18...) or path/to/file.py:factory")
    show.add_argument("image", help="the image file")
    show.add_argument("--target", help="class index or name (default: the top-1 class)")
    show.add_argument("--method", default="gradcam", help="CAM method (default gradcam)")
    show.add_argument("--layer", help="dotted layer name (default: automatic)")
    show.add_argument("--out", help="overlay PNG to write (default: <image stem>-camcheck.png here)")
    show.add_argument("--write-json", action="store_true", help="write the annotation JSON beside the image")
    show.add_argument("--force", action="store_true",
                      help="replace an existing --out file that is not an earlier overlay, and with --write-json an "
                           "existing JSON file (inputs are never replaced)")
    data = sub.add_parser("dataset", help="run the dataset check: exit code 0 when the rate is reached, else 1")
    data.add_argument("model", help="a model name (camcheck-shapes, resnet18...) or path/to/file.py:factory")
    data.add_argument("path", help="COCO JSON, VOC folder or XML, YOLO folder, or a folder of camcheck JSON")
    data.add_argument("--min-pass-rate", type=float, default=0.9, help="least share of checks passing (0.9)")
    data.add_argument("--report", help="write the HTML report of the check there")
    data.add_argument("--method", default="gradcam", help="CAM method (default gradcam)")
    data.add_argument("--layer", help="dotted layer name (default: automatic)")
    data.add_argument("--batch-size", type=int, default=32, help="checks per batched compute_cam call (32)")
    return parser


def load_cli_model(spec: str) -> Any:
    """The model named by ``spec``: ``path/to/file.py:factory`` (the file is run, ``factory()`` called) or a name
    for :func:`~pytest_camcheck.load_model`."""
    from torch import nn

    from .errors import CamCheckError

    path, sep, factory = spec.rpartition(":")
    if sep and path.endswith(".py"):
        file = Path(path).expanduser()
        if not file.is_file():
            raise _Usage(f"model file {file} does not exist; pass path/to/file.py:factory or a model name")
        namespace = runpy.run_path(str(file))
        if not callable(namespace.get(factory)):
            raise _Usage(f"{file} has no function {factory!r}; pass path/to/file.py:<function returning the model>")
        model = namespace[factory]()
        if not isinstance(model, nn.Module):
            raise _Usage(f"{file}:{factory}() returned a {type(model).__name__}, not a torch.nn.Module")
        return model.eval()
    from .zoo import load_model

    try:
        return load_model(spec)
    except CamCheckError as err:
        raise _Usage(str(err)) from None


def suggested_box(heatmap: Any, threshold: float = BOX_THRESHOLD) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), x1/y1 exclusive: the bounding box of the largest 8-connected region of the map at or
    above ``threshold`` times its peak; None for an empty map.

    Example:
        >>> import numpy as np
        >>> h = np.zeros((10, 10), np.float32); h[2:4, 3:7] = 1; h[8, 8] = 0.9
        >>> suggested_box(h)
        (3, 2, 7, 4)
    """
    import numpy as np
    from skimage.measure import label

    peak = float(heatmap.max())
    if peak <= 0:
        return None
    parts = label(heatmap >= threshold * peak, connectivity=2)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    ys, xs = np.nonzero(parts == int(sizes.argmax()))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _target(text: str | None) -> Any:
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _model_code(spec: str) -> tuple[str, str]:
    path, sep, factory = spec.rpartition(":")
    if sep and path.endswith(".py"):
        return "import runpy\n", f"runpy.run_path({path!r})[{factory!r}]()"
    return "from pytest_camcheck import load_model\n", f"load_model({spec!r})"


def _show(args: argparse.Namespace) -> int:
    from ._io import atomic_write
    from .engine import compute_cam
    from .render import overlay, save_png

    image = Path(args.image).expanduser()
    if not image.is_file():
        raise _Usage(f"image file {image} does not exist")
    out = Path(args.out).expanduser() if args.out else Path.cwd() / f"{image.stem}-camcheck.png"
    _check_out(out, args, image)
    model = load_cli_model(args.model)
    result = compute_cam(model, str(image), _target(args.target), method=args.method, layer=args.layer)
    box = suggested_box(result.heatmap)
    label = result.label if result.label is not None else str(result.target)
    print(f"image {image} ({result.image_size[1]}x{result.image_size[0]} px), method {result.method}, "
          f"layer {result.layer}")
    print("top-5: " + " | ".join(f"{i} {name or ''} {p:.3f}".replace("  ", " ") for i, name, p in result.top))
    print(f"target: class {result.target} {label!r} (score {result.score:.4g})")
    if box is None:
        print("suggested box: none (the map is EMPTY: no positive evidence for the target at this layer)")
    else:
        print(f"suggested box: {list(box)} (x0, y0, x1, y1 in image pixels: the largest connected region of the map "
              f"at or above {BOX_THRESHOLD:g} of its peak; review it against the object)")
    save_png(overlay(result.image, result.heatmap, region=None if box is None else _box_mask(box, result),
                     peak=None), out, text=OVERLAY_MARK)
    print(f"overlay: {out}")
    if box is None:
        if args.write_json:
            raise _Usage(f"the map of {label!r} is empty, so there is no box to write; {image.with_suffix('.json')} "
                         "was not written (try another --target, --layer or --method)")
        return 0
    imports, model_expr = _model_code(args.model)
    options = "".join(f", {k}={v!r}" for k, v in (("method", args.method), ("layer", args.layer))
                      if v is not None and (k != "method" or v != "gradcam"))
    name = "".join(c if c.isalnum() else "_" for c in f"{image.stem}_{label}").lower()
    print("\n# a test to paste:\n"
          f"{imports}from pytest_camcheck import Box, assert_attends_to\n\n\n"
          f"def test_{name}_is_explained_by_the_object():\n"
          f"    model = {model_expr}\n"
          f"    assert_attends_to(model, {str(image)!r}, {label!r}, Box{box}{options})\n")
    spec = {"image": image.name, "regions": {label: list(box)},
            "source": f"camcheck show: {result.method} at {result.layer}, box at {BOX_THRESHOLD:g} of the peak"}
    text = json.dumps(spec)
    print(f"# the annotation ({image.with_suffix('.json').name}):\n{text}")
    if args.write_json:
        target = image.with_suffix(".json")
        if not atomic_write(target, (text + "\n").encode("utf-8"), replace=args.force):
            raise _Usage(f"{target} exists; pass --force to replace it")
        print(f"wrote {target}")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_overlay(path: Path) -> bool:
    """Whether ``path`` is a PNG that ``camcheck show`` wrote (its text chunk says so)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.format == "PNG" and all(img.info.get(k) == v for k, v in OVERLAY_MARK.items())
    except Exception:  # noqa: BLE001 - anything unreadable as a PNG is not an overlay
        return False


def _check_out(out: Path, args: argparse.Namespace, image: Path) -> None:
    """Refuse an --out that is one of the inputs (the image, the model file, the JSON written beside the image),
    or an existing file other than an earlier overlay without --force: before any work is done."""
    path, sep, _ = args.model.rpartition(":")
    inputs = {"the input image": image, **({"the model file": Path(path).expanduser()} if sep and path.endswith(".py")
                                           else {})}
    if args.write_json:
        inputs["the annotation JSON --write-json writes"] = image.with_suffix(".json")
    for what, path_in in inputs.items():
        if _same_file(out, path_in):
            raise _Usage(f"--out {out} is {what} ({path_in}); writing the overlay there would replace it: give "
                         "another --out")
    if out.is_dir():
        raise _Usage(f"--out {out} is a folder; give a file name, e.g. {out / (image.stem + '-camcheck.png')}")
    if out.exists() and not os.path.islink(out) and not args.force and not _is_overlay(out):
        raise _Usage(f"--out {out} exists and is not an overlay camcheck show wrote; give another --out, or pass "
                     "--force to replace it")


def _box_mask(box: tuple[int, int, int, int], result: Any) -> Any:
    from .regions import to_mask

    try:
        return to_mask(box, result.image_size)
    except Exception:  # a box over the whole image is not drawn
        return None


def _bar(text: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {text.removeprefix('camcheck dataset: ')}")
    sys.stderr.flush()


def _dataset(args: argparse.Namespace) -> int:
    from . import context, dataset_check
    from .datasets import load_dataset
    from .report import CheckReport

    if not 0 <= args.min_pass_rate <= 1:
        raise _Usage(f"--min-pass-rate {args.min_pass_rate:g} is not a share of checks; pass a number from 0 to 1")
    if args.report:
        from .report import check_report_path

        check_report_path(Path(os.path.abspath(Path(args.report).expanduser())), "--report")
    model = load_cli_model(args.model)
    dataset = load_dataset(args.path)
    records: list[Any] = []
    before = context.set_progress(_bar)
    context.add_listener(records.append)
    timing = dataset_check.PROGRESS_AFTER_S, dataset_check.PROGRESS_EVERY_S
    dataset_check.PROGRESS_AFTER_S, dataset_check.PROGRESS_EVERY_S = 0.0, 0.5
    try:
        result = dataset_check.run_dataset(model, dataset, min_pass_rate=args.min_pass_rate, method=args.method,
                                           layer=args.layer, batch_size=args.batch_size)
        dataset_check._record(result, dataset, "" if result.passed else result.summary())
    finally:
        dataset_check.PROGRESS_AFTER_S, dataset_check.PROGRESS_EVERY_S = timing
        context.set_progress(before)
        context.remove_listener(records.append)
        sys.stderr.write("\n")
    print(result.summary())
    if args.report:
        report = CheckReport()
        for record in records:
            report.add_record(record)
        print(f"report: {report.write_html(args.report, title='camcheck dataset')}")
    return 0 if result.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 a dataset below its rate, 2 bad arguments).

    Example:
        >>> main(["dataset", "camcheck-shapes", "no/such/folder"])  # doctest: +SKIP
        2
    """
    from .errors import CamCheckError

    try:
        args = _parser().parse_args(argv)
        return _show(args) if args.command == "show" else _dataset(args)
    except SystemExit as stop:  # --help
        return int(stop.code or 0)
    except (_Usage, CamCheckError, OSError) as err:
        text = " ".join(str(err).split())
        print(f"camcheck: error: {text}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the command line never shows a traceback; CAMCHECK_TRACEBACK=1 does
        if os.environ.get("CAMCHECK_TRACEBACK"):
            raise
        print(f"camcheck: error: {type(err).__name__}: {' '.join(str(err).split())} (CAMCHECK_TRACEBACK=1 shows "
              "where)", file=sys.stderr)
        return 2


def console() -> None:
    """The ``camcheck`` console script."""
    sys.exit(main())
