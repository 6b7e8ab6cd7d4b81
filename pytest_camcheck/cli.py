"""The ``camcheck`` command (also ``python -m pytest_camcheck``): see a map and get a box to write a test with,
and run a dataset check outside pytest.

- ``camcheck show MODEL IMAGE [--target T] [--method M] [--layer L] [--out overlay.png] [--write-json] [--force]``
  prints the top-5 classes, the layer, the suggested box of the target (the bounding box of the largest connected
  region of the map at or above :data:`BOX_THRESHOLD` of its peak, in image pixels), writes the overlay, and
  prints a test to paste and the annotation JSON; ``--write-json`` writes that JSON beside the image
  (``dog.jpg`` -> ``dog.json``). No input (the image, the model file) is ever written over, even with
  ``--force``, and no existing file is replaced unless it is an earlier overlay (marked in its PNG text,
  :data:`OVERLAY_MARK`) or ``--force`` is given. The files are written before anything is printed, so a reader
  that leaves early (``camcheck show ... | head -1``) loses only the rest of the text.
- ``camcheck dataset MODEL PATH [--min-pass-rate R] [--report out.html] [--classes FILE]`` runs
  :func:`~pytest_camcheck.assert_dataset_attends_to`'s checks with a progress bar; exit code 0 when the rate is
  reached, 1 when not. The report replaces no existing file but an earlier report. ``--classes`` is a JSON file
  mapping the dataset's labels to the model's class indices or names (``null`` skips a label), the ``classes=``
  of the Python API; it is needed for a model without class names.

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
_CLASSES_LIMIT = 16 * 2**20


class _Usage(Exception):
    """A bad argument: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print the usage and a traceback-free error over 2 lines
        raise _Usage(f"{message} ({self.prog} --help shows the usage)")


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
    data.add_argument("--classes", metavar="FILE",
                      help='JSON file mapping labels to class indices or names, e.g. {"dog": 3, "cat": "tabby", '
                           '"person": null} (null skips a label); needed when the model has no class names')
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
    if image.is_dir():
        raise _Usage(f"image {image} is a folder, not an image file; give the path of one image (a file inside it)")
    if not image.is_file():
        raise _Usage(f"image file {image} does not exist" if not image.exists() else
                     f"image {image} is not a regular file; give the path of an image file")
    out = Path(args.out).expanduser() if args.out else Path.cwd() / f"{image.stem}-camcheck.png"
    _check_out(out, args, image)
    model = load_cli_model(args.model)
    result = compute_cam(model, str(image), _target(args.target), method=args.method, layer=args.layer)
    box = suggested_box(result.heatmap)
    label = result.label if result.label is not None else str(result.target)
    named = f"{result.label!r}" if result.label is not None else "(the model has no class names)"
    lines = [f"image {image} ({result.image_size[1]}x{result.image_size[0]} px), method {result.method}, "
             f"layer {result.layer}",
             "top-5: " + " | ".join(f"{i} {name or ''} {p:.3f}".replace("  ", " ") for i, name, p in result.top),
             f"target: class {result.target} {named} (score {result.score:.4g})"]
    if box is None:
        lines.append("suggested box: none (the map is EMPTY: no positive evidence for the target at this layer)")
    else:
        lines.append(f"suggested box: {list(box)} (x0, y0, x1, y1 in image pixels: the largest connected region of "
                     f"the map at or above {BOX_THRESHOLD:g} of its peak; review it against the object)")
    save_png(overlay(result.image, result.heatmap, region=None if box is None else _box_mask(box, result),
                     peak=None), out, text=OVERLAY_MARK)
    lines.append(f"overlay: {out}")
    whole = box is not None and tuple(box) == (0, 0, result.image_size[1], result.image_size[0])
    if box is None or whole:
        lines.append("no test or annotation is suggested: a box covering the whole image says nothing about where "
                     "the model looks (assert_attends_to refuses it)" if whole else
                     "no test or annotation is suggested: there is no box")
        _emit(lines)
        if args.write_json:
            which = f"the map of {named}" if result.label is not None else f"the map of class {result.target}"
            problem = "covers the whole image" if whole else "is empty"
            raise _Usage(f"{which} {problem}, so there is no box to write; {image.with_suffix('.json')} was not "
                         "written (try another --target, --layer or --method)")
        return 0
    imports, model_expr = _model_code(args.model)
    options = "".join(f", {k}={v!r}" for k, v in (("method", args.method), ("layer", args.layer))
                      if v is not None and (k != "method" or v != "gradcam"))
    name = "".join(c if c.isalnum() else "_" for c in f"{image.stem}_{label}").lower()
    lines.append("\n# a test to paste:\n"
                 f"{imports}from pytest_camcheck import Box, assert_attends_to\n\n\n"
                 f"def test_{name}_is_explained_by_the_object():\n"
                 f"    model = {model_expr}\n"
                 f"    assert_attends_to(model, {str(image)!r}, {_pasted_target(model, result)!r}, Box{box}{options})\n")
    spec = {"image": image.name, "regions": {label: list(box)},
            "source": f"camcheck show: {result.method} at {result.layer}, box at {BOX_THRESHOLD:g} of the peak"}
    text = json.dumps(spec)
    lines.append(f"# the annotation ({image.with_suffix('.json').name}):\n{text}")
    if args.write_json:
        target = image.with_suffix(".json")
        if not atomic_write(target, (text + "\n").encode("utf-8"), replace=args.force):
            _emit(lines)
            raise _Usage(f"{target} exists; pass --force to replace it")
        lines.append(f"wrote {target}")
    _emit(lines)
    return 0


def _pasted_target(model: Any, result: Any) -> int | str:
    """The target for the pasted test: the class name when it names exactly the class shown, else its index
    (a model without class names, or a name given to several classes)."""
    from .engine.targets import index_of_name
    from .errors import CamCheckError
    from .zoo import model_info

    info = model_info(model)
    categories = info.categories if info is not None else None
    if result.label is None or not categories:
        return int(result.target)
    try:
        same = index_of_name(result.label, categories, len(categories)) == result.target
    except CamCheckError:
        same = False
    return result.label if same else int(result.target)


def _emit(lines: Sequence[str]) -> None:
    """Print ``lines``; a reader that has gone (``| head -1``) ends the printing quietly, as in Unix tools."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()


def _drop_stdout() -> None:
    """Point stdout at the null device, so that nothing (not even the flush at exit) writes to a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # a stdout without a file descriptor flushes to no pipe
        pass


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
    or an existing file other than an earlier overlay without --force; refuse a --write-json target that is an
    input (even with --force) or an existing file without --force: before any work is done."""
    path, sep, _ = args.model.rpartition(":")
    inputs = {"the input image": image, **({"the model file": Path(path).expanduser()} if sep and path.endswith(".py")
                                           else {})}
    if args.write_json:
        target = image.with_suffix(".json")
        for what, path_in in inputs.items():
            if _same_file(target, path_in):
                fix = (f"rename or copy the image to a name with its own suffix (e.g. {image.stem}.png)"
                       if target == image else
                       f"move {target} aside (it is a link to {what}, not an annotation)")
                raise _Usage(f"--write-json writes the annotation to {target}, which is {what} ({path_in}); writing "
                             f"it would replace it, even with --force. Fix: {fix}, or leave out --write-json and save "
                             "the printed annotation yourself")
        if target.is_dir() and not os.path.islink(target):
            raise _Usage(f"--write-json writes the annotation to {target}, which is a folder; move it aside, or leave "
                         "out --write-json and save the printed annotation yourself")
        if not args.force and (target.exists() or os.path.islink(target)):
            raise _Usage(f"{target} exists; pass --force to replace it")
        inputs["the annotation JSON --write-json writes"] = target
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
    _progress(f"\r[{'#' * filled}{' ' * (width - filled)}] {text.removeprefix('camcheck dataset: ')}")


def _progress(text: str) -> None:
    """Write to stderr; a reader that has gone (a closed pipe) is ignored, the command goes on."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except BrokenPipeError:  # whoever read the progress has gone; the check goes on
        pass


class _Repeated(Exception):
    """A key given twice in one JSON object."""


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Repeated(repr(key))
        found[key] = value
    return found


def _load_classes(path: str) -> dict[str, int | str | None]:
    """The ``--classes`` file: a JSON object mapping each dataset label to a class index, a class name or
    ``null`` (skip the label), given to :func:`~pytest_camcheck.assert_dataset_attends_to` as ``classes=``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "classes.json").write_text('{"dog": 3, "cat": "tabby", "person": null}')
        ...     _load_classes(f"{tmp}/classes.json")
        {'dog': 3, 'cat': 'tabby', 'person': None}
    """
    file = Path(path).expanduser()
    example = 'e.g. {"dog": 3, "cat": "tabby", "person": null}'
    if file.is_dir():
        raise _Usage(f"--classes {file} is a folder; give a JSON file mapping labels to class indices or names, "
                     f"{example}")
    if not file.is_file():
        raise _Usage(f"--classes file {file} does not exist; give a JSON file mapping labels to class indices or "
                     f"names, {example}")
    with open(file, "rb") as f:
        data = f.read(_CLASSES_LIMIT + 1)
    if len(data) > _CLASSES_LIMIT:
        raise _Usage(f"--classes {file} is over {_CLASSES_LIMIT // 2**20} MiB, too large for a map of labels; give "
                     f"a JSON file mapping labels to class indices or names, {example}")
    try:
        classes = json.loads(data.decode("utf-8-sig"), object_pairs_hook=_once)
    except _Repeated as err:
        raise _Usage(f"--classes {file} maps {err} more than once, so it cannot tell which class is meant; give each "
                     "label once") from None
    except UnicodeDecodeError:
        raise _Usage(f"--classes {file} is not UTF-8 text; save it as a JSON file, {example}") from None
    except json.JSONDecodeError as err:
        raise _Usage(f"--classes {file} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); fix "
                     f"it, {example}") from None
    if not isinstance(classes, dict):
        raise _Usage(f"--classes {file} holds a JSON {type(classes).__name__}, not an object; map each label to a "
                     f"class index or name, {example}")
    for label, target in classes.items():
        if isinstance(target, bool) or not isinstance(target, (int, str, type(None))):
            raise _Usage(f"--classes {file} maps {label!r} to {json.dumps(target)}; map each label to a class index "
                         f"(a whole number), a class name (a string) or null to skip it, {example}")
    return classes


def _dataset(args: argparse.Namespace) -> int:
    from . import context, dataset_check
    from .datasets import load_dataset
    from .report import CheckReport

    if not 0 <= args.min_pass_rate <= 1:
        raise _Usage(f"--min-pass-rate {args.min_pass_rate:g} is not a share of checks; pass a number from 0 to 1")
    if args.report:
        from .report import check_report_path

        check_report_path(Path(os.path.abspath(Path(args.report).expanduser())), "--report")
    classes = _load_classes(args.classes) if args.classes is not None else None
    model = load_cli_model(args.model)
    dataset = load_dataset(args.path)
    _check_class_names(model, dataset, classes, args)
    records: list[Any] = []
    drawn: list[int] = []

    def bar(text: str, done: int, total: int) -> None:
        drawn.append(done)
        _bar(text, done, total)

    before = context.set_progress(bar)
    context.add_listener(records.append)
    timing = dataset_check.PROGRESS_AFTER_S, dataset_check.PROGRESS_EVERY_S
    dataset_check.PROGRESS_AFTER_S, dataset_check.PROGRESS_EVERY_S = 0.0, 0.5
    try:
        result = dataset_check.run_dataset(model, dataset, min_pass_rate=args.min_pass_rate, classes=classes,
                                           method=args.method, layer=args.layer, batch_size=args.batch_size)
        dataset_check._record(result, dataset, "" if result.passed else result.summary())
    finally:
        dataset_check.PROGRESS_AFTER_S, dataset_check.PROGRESS_EVERY_S = timing
        context.set_progress(before)
        context.remove_listener(records.append)
        if drawn:
            _progress("\n")
    lines = [result.summary()]
    if args.report:
        report = CheckReport()
        for record in records:
            report.add_record(record)
        lines.append(f"report: {report.write_html(args.report, title='camcheck dataset')}")
    _emit(lines)
    return 0 if result.passed else 1


def _check_class_names(model: Any, dataset: Any, classes: dict[str, Any] | None, args: argparse.Namespace) -> None:
    """Refuse, with the command line's fix, labels that cannot be matched to the model's classes: a model without
    class names and no ``--classes``, a ``--classes`` that maps no label of the dataset, or one that maps a label
    to a class name the model does not have names for (the Python API's messages name its keywords instead)."""
    from .zoo import model_info

    info = model_info(model)
    nameless = info is None or info.categories is None
    labels = list(dataset.labels)
    if not labels:
        return
    shown = f"{', '.join(map(repr, labels[:5]))}{', ...' if len(labels) > 5 else ''}"
    example = json.dumps({label: i for i, label in enumerate(labels[:2])})
    example = example[:-1] + ", ...}" if len(labels) > 2 else example
    if classes is None:
        if nameless:
            raise _Usage(f"the model {args.model} has no class names, so the labels of {args.path} ({shown}) cannot be "
                         "matched to its outputs. Fix: pass --classes FILE, a JSON file mapping each label to the "
                         f"model's class index (or name), e.g. {example} (null skips a label)")
        return
    if all(classes.get(label) is None for label in labels):
        raise _Usage(f"--classes {args.classes} maps no label of {args.path} ({shown}) to a class, so nothing would be "
                     f"checked. Fix: map the dataset's labels to the model's class indices (or names), e.g. {example}")
    named = [label for label in labels if isinstance(classes.get(label), str)]
    if named and nameless:
        raise _Usage(f"--classes {args.classes} maps {named[0]!r} to the class name {classes[named[0]]!r}, but the model "
                     f"{args.model} has no class names. Fix: map each label to the model's class index, e.g. "
                     f"{example}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 a dataset below its rate, 2 bad arguments or a
    failure, said in one line on stderr). A reader of stdout that leaves early (``| head``) only ends the printing
    (:func:`_emit`); a broken pipe anywhere else (the model's own code) is an error like any other.

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
        _complain(" ".join(str(err).split()))
        return 2
    except Exception as err:  # noqa: BLE001 - the command line never shows a traceback; CAMCHECK_TRACEBACK=1 does
        if os.environ.get("CAMCHECK_TRACEBACK"):
            raise
        _complain(f"{type(err).__name__}: {' '.join(str(err).split())} (CAMCHECK_TRACEBACK=1 shows where)")
        return 2


def _complain(text: str) -> None:
    _progress(f"camcheck: error: {text}\n")  # nobody reading stderr any more stops nothing: the exit code tells


def console() -> None:
    """The ``camcheck`` console script."""
    sys.exit(main())
