"""Drift of a dataset's rate: ``cam_regression.check_dataset(model, dataset, max_drop=0.03)``.

The baseline is a reviewed JSON file next to the tests, as map baselines are (:mod:`pytest_camcheck.regression`):
``<test module dir>/<module stem>/<test>[-<basename>]-dataset-<method>-<layer>[-<n>].json`` holding the rate and
every check's outcome (image, label, passed), named as map baselines are (:meth:`CamRegression.baseline_file
<pytest_camcheck.regression.CamRegression.baseline_file>`: a hash for ids with other characters, n counting
repeated identical checks in one test). The first run writes it and fails ("review and commit it"); later runs
fail when the rate dropped by more than ``max_drop`` from the baseline's, listing the checks that flipped from pass
to fail; a baseline recorded for another dataset, method or layer is refused. ``--camcheck-update`` rewrites a
missing, unreadable, foreign or failing baseline and passes. Nothing existing is changed otherwise; a symbolic link
at the baseline's path is refused, a dangling one removed by ``--camcheck-update``, as for map baselines.
Dataset baselines were once named ``<test>[-<basename>]-dataset-<method>.json`` (the test's own name as pytest
gives it, without class path, layer or counter): when a check's baseline is missing and a file under that former
name was recorded for its dataset, method and layer, the check is refused with the ``git mv`` to make rather than
given a new baseline silently; ``--camcheck-update`` records a new one and names the former file, which is left as
it was.

Example:
    >>> cam_regression.check_dataset(model, "fixtures/shapes-coco/instances.json", max_drop=0.05)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from . import __version__, context
from ._io import atomic_write
from ._text import safe_name
from .dataset_check import DatasetResult, run_dataset
from .datasets import Dataset, load_dataset
from .errors import CamCheckError, CamCheckWarning

__all__ = ["DATASET_BASELINE_FORMAT", "MAX_BASELINE_BYTES", "check_dataset", "read_dataset_baseline"]

DATASET_BASELINE_FORMAT = "pytest-camcheck-dataset-baseline"
_VERSION = 1
MAX_BASELINE_BYTES = 64 * 2**20
_LISTED = 20


def _hint() -> str:
    from .regression import UPDATE_HINT

    return UPDATE_HINT


def read_dataset_baseline(path: Path) -> dict[str, Any]:
    """The baseline at ``path``: ``pass_rate``, ``checks`` ({(image, label): passed}) and its metadata; a file
    that is too large, not JSON or not a dataset baseline raises CamCheckError naming the file and the fix.

    Example:
        >>> read_dataset_baseline(Path("tests/test_data/test_rate-dataset-gradcam.json"))  # doctest: +SKIP
    """
    broken = f"Fix: delete it, or {_hint()} to write it again from the current run"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BASELINE_BYTES + 1)
    except OSError as err:
        raise CamCheckError(f"dataset baseline {path} cannot be read ({err}). {broken}") from err
    if len(raw) > MAX_BASELINE_BYTES:
        raise CamCheckError(f"dataset baseline {path} is over {MAX_BASELINE_BYTES // 2**20} MB, not a camcheck "
                            f"baseline. {broken}")
    try:
        data = json.loads(raw.decode("utf-8"))
        if data.get("format") != DATASET_BASELINE_FORMAT or data.get("version") != _VERSION:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
        checks = {(str(image), str(label)): bool(passed) for image, label, passed in data["checks"]}
        rate = float(data["pass_rate"])
        if not 0 <= rate <= 1:
            raise ValueError(f"pass_rate {rate}")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise CamCheckError(f"dataset baseline {path} is not a camcheck dataset baseline ({type(err).__name__}: "
                            f"{err}). {broken}") from err
    return data | {"checks": checks, "pass_rate": rate}


def _document(result: DatasetResult, dataset: Dataset, device: str) -> bytes:
    data = {
        "format": DATASET_BASELINE_FORMAT, "version": _VERSION, "dataset": dataset.root.name,
        "method": result.method, "layer": result.layer, "pass_rate": result.pass_rate,
        "checks_total": len(result.checks), "device": device, "torch_version": torch.__version__,
        "camcheck_version": __version__,
        "per_class": {k: list(v) for k, v in result.per_class.items()},
        "checks": [[c.image, c.label, c.passed] for c in result.checks],
    }
    # one line per field and per check, so that a review shows which checks changed
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in data.items() if k != "checks"]
    checks = ",\n".join(f"  {json.dumps(c)}" for c in data["checks"])
    return ("{\n" + "\n".join(lines) + f'\n "checks": [\n{checks}\n ]\n}}\n').encode("utf-8")


def _check_recorded(path: Path, baseline: dict[str, Any], ds: Dataset, result: DatasetResult) -> None:
    """Refuse a baseline recorded for another dataset, method or layer than this check's (a copied or renamed
    file): comparing rates across them would give a verdict about nothing."""
    recorded = {key: baseline.get(key) for key in ("dataset", "method", "layer")}
    now = {"dataset": ds.root.name, "method": result.method, "layer": result.layer}
    if recorded != now:
        raise CamCheckError(
            f"dataset baseline {path} was recorded for dataset {recorded['dataset']!r}, method {recorded['method']}, "
            f"layer {recorded['layer']}, not for this check (dataset {now['dataset']!r}, method {now['method']}, "
            f"layer {now['layer']}); was it copied or renamed? Fix: delete it, or {_hint()} to write it again from "
            "the current run"
        )


def _previous(reg: Any, basename: str | None, ds: Dataset, result: DatasetResult) -> Path | None:
    """The file this check's baseline had before dataset baselines were named like map baselines,
    ``<test>[-<basename>]-dataset-<method>.json`` (the test's own name as pytest gives it, no class path, no layer,
    no counter), when it exists (a file, not a link), is a dataset baseline and was recorded for this check's
    dataset, method and layer."""
    from .regression import previous_test_name

    test = previous_test_name(reg.test_name) or reg.test_name
    name = "-".join([test, *([safe_name(basename)] if basename else []), "dataset", safe_name(result.method)]) + ".json"
    old = reg.baseline_dir / name
    if Path(name).name != name or os.path.islink(old) or not os.path.isfile(old):  # isfile: False if too long
        return None
    try:
        _check_recorded(old, read_dataset_baseline(old), ds, result)
    except CamCheckError:
        return None
    return old


_FORMER = "the name it had before dataset baselines were named like map baselines"
_SHARED = ("before, repeated identical checks of one test, and same-named tests of different classes or at module "
           "level, shared one dataset baseline file")


def _renamed(path: Path, old: Path, ds: Dataset, result: DatasetResult) -> str:
    """The refusal to write a new baseline while this check's baseline sits under its former name."""
    from .regression import _shell

    return (
        f"camcheck dataset regression: this check's baseline {path} does not exist, but {old} does: {_FORMER}, "
        f"recorded for this dataset ({ds.root.name!r}), method {result.method} and layer {result.layer}. Nothing "
        f"was written, so that a new baseline does not silently take the reviewed one's place.\n  Fix: rename it: "
        f"{_shell('git mv', [(old, path)])}\n  (cp instead of git mv if another check still needs it: {_SHARED}); "
        f"or, to record this check's baseline afresh, {_hint()}"
    )


def _listed(keys: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"{image} [{label}]" for image, label in keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def check_dataset(reg: Any, model: torch.nn.Module, dataset: Dataset | Any, *, max_drop: float = 0.03,
                  basename: str | None = None, **kwargs: Any) -> DatasetResult:
    """The body of ``CamRegression.check_dataset`` (see the module doc); returns the current DatasetResult."""
    __tracebackhide__ = True
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop <= 1:
        raise CamCheckError(f"max_drop={max_drop!r} is not a share of checks; pass a number from 0 to 1 "
                            "(default 0.03: three points of rate)")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    kwargs = {"method": reg.method} | ({"device": reg.device} if reg.device is not None else {}) | kwargs
    kwargs.pop("min_pass_rate", None)
    result = run_dataset(model, ds, min_pass_rate=0.0, overlays=False, **kwargs)
    path = reg.baseline_file([*([basename] if basename else []), "dataset", result.method, result.layer], ".json")
    device = str(next(iter(model.parameters()), torch.empty(0)).device)
    reg.check_links([path])
    baseline = None
    if path.exists():
        try:
            baseline = read_dataset_baseline(path)
            _check_recorded(path, baseline, ds, result)
        except CamCheckError:
            if not reg.update:
                raise
            baseline = None
    if baseline is None:
        previous = None if path.exists() else _previous(reg, basename, ds, result)
        if previous is not None and not reg.update:
            raise CamCheckError(_renamed(path, previous, ds, result))
        return _create(reg, path, result, ds, device, max_drop, previous)
    now = {(c.image, c.label): c.passed for c in result.checks}
    flipped = [k for k, ok in baseline["checks"].items() if ok and now.get(k) is False]
    improved = [k for k, ok in baseline["checks"].items() if not ok and now.get(k) is True]
    new = [k for k in now if k not in baseline["checks"]]
    gone = [k for k in baseline["checks"] if k not in now]
    drop = baseline["pass_rate"] - result.pass_rate
    passed = drop <= max_drop + 1e-12
    metrics = {"pass_rate": result.pass_rate, "baseline_rate": baseline["pass_rate"], "drop": drop,
               "flipped": len(flipped), "improved": len(improved)}
    if passed:
        _record(result, True, metrics, max_drop, "")
        return result
    if reg.update:
        atomic_write(path, _document(result, ds, device), replace=True)
        reg.written.append(path)
        _record(result, True, metrics, max_drop, f"camcheck dataset regression: baseline updated: {path}")
        return result
    lines = [
        f"camcheck dataset regression failed: the rate dropped by {drop:.1%} (allowed {max_drop:.1%})",
        f"  now {result.pass_rate:.1%} of {len(result.checks)} checks, baseline {baseline['pass_rate']:.1%} of "
        f"{len(baseline['checks'])} (method {result.method}, layer {result.layer})",
        f"  flipped to failing ({len(flipped)}): {_listed(flipped) or 'none'}",
    ]
    if improved:
        lines.append(f"  now passing ({len(improved)}): {_listed(improved)}")
    if new or gone:
        lines.append(f"  the dataset changed: {len(new)} checks new, {len(gone)} gone since the baseline")
    if result.skipped:
        shown = list(result.skipped.items())[:_LISTED]
        lines.append(f"  not checked ({len(result.skipped)}): " + "; ".join(f"{k} ({why})" for k, why in shown)
                     + (" and more" if len(result.skipped) > _LISTED else ""))
    lines += [f"  baseline file: {path}", f"  if the change is intended, {_hint()} and commit the new baseline"]
    message = "\n".join(lines)
    _record(result, False, metrics, max_drop, message)
    raise AssertionError(message)


def _create(reg: Any, path: Path, result: DatasetResult, ds: Dataset, device: str, max_drop: float,
            previous: Path | None = None) -> DatasetResult:
    __tracebackhide__ = True
    existed = path.exists()
    created = atomic_write(path, _document(result, ds, device), replace=existed)
    if created:
        reg.written.append(path)
    metrics = {"pass_rate": result.pass_rate, "baseline_rate": None, "drop": None}
    if not created:
        message = (f"camcheck dataset regression: baseline {path} was just created by another test running at the "
                   "same time (same file name); review and commit it, and give the checks different basename=...")
    elif reg.update:
        what = "replaced" if existed else "created"
        if path in reg.removed:
            what += " in place of a dangling link"
        message = f"camcheck dataset regression: baseline {what}: {path}"
        if previous is not None:
            message += (f"\n  note: {previous}, this check's baseline under {_FORMER}, is left as it was: git rm it "
                        "when no other check needs it")
            warnings.warn(CamCheckWarning(message), stacklevel=4)
    else:
        message = (f"camcheck dataset regression: baseline not found, created: {path} (rate {result.pass_rate:.1%} "
                   f"of {len(result.checks)} checks)\n  review and commit it; the check passes from the next run on")
    passed = created and reg.update
    _record(result, passed, metrics, max_drop, message)
    if not passed:
        raise AssertionError(message)
    return result


def _record(result: DatasetResult, passed: bool, metrics: dict[str, Any], max_drop: float, message: str) -> None:
    context.record(context.CheckRecord(
        check="dataset_regression", passed=passed, method=result.method, layer=result.layer, target=None,
        label=None, probability=None,
        metrics={k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()},
        thresholds={"max_drop": max_drop}, message=message,
        details={"per_class": {k: list(v) for k, v in result.per_class.items()},
                 "center_baseline": result.center_baseline, "skipped": dict(result.skipped)},
    ))
