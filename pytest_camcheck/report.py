"""The run's camcheck report: every attention assertion and regression check with its test's outcome, as JSON
(``--camcheck-report-json``) and as one self-contained HTML page (``--camcheck-report``).

:class:`CheckReport` is plain data: the plugin feeds it :class:`~pytest_camcheck.context.CheckRecord` objects
and test reports. Under pytest-xdist the checks travel to the controller with each phase's test report, as plain
dicts (:meth:`CheckReport.check_row`), so that a worker that crashes loses only the test it was running. Pictures
are referenced by
path in JSON and inlined (downscaled PNG data URIs) in HTML, so the page needs no other file. The curves of the
quality checks (sane, faithful, stable) are drawn as small plots when the page is written, from the metrics they
recorded, passing or failing; a failed check's picture holds its curve already.

Example:
    >>> report = CheckReport()
    >>> report.add_outcome("tests/test_model.py::test_map", "passed")
    >>> CheckReport.from_json(report.to_json()).tests["tests/test_model.py::test_map"]["outcome"]
    'passed'
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from ._io import atomic_write, check_output_file
from .context import CheckRecord
from .errors import CamCheckError

__all__ = ["HTML_MARKER", "OUTCOMES", "PLOT_SIZE", "THUMBNAIL_SIZE", "CheckReport", "check_report_path", "json_value",
           "is_report_file"]

OUTCOMES = ("failed", "error", "xpassed", "passed", "xfailed", "skipped", "unknown")
THUMBNAIL_SIZE = (720, 300)
PLOT_SIZE = (240, 160)
LIST_SHOWN = 8  # a metric holding more values than this (a curve), nested ones counted, is folded in the row
_FORMAT = "pytest-camcheck-report"
HTML_MARKER = '<meta name="generator" content="pytest-camcheck report">'  # how an earlier page is recognised
_VERSION = 1
_BAD = ("failed", "error", "xpassed")


def json_value(value: Any) -> Any:
    """A JSON value: non-finite floats become None (strict JSON has no NaN or Infinity), paths and other objects
    strings; used for the JSON report and the JUnit properties alike.

    Example:
        >>> json_value({"sensitivity": float("inf"), "curve": [(1, 0.5)]})
        {'sensitivity': None, 'curve': [[1, 0.5]]}
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return json_value(value.item())
    return str(value)


def _short_message(report: Any) -> str:
    longrepr = getattr(report, "longrepr", None)
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(getattr(report, "wasxfail", "") or getattr(report, "longreprtext", ""))[-2000:]


class CheckReport:
    """Checks (one dict per :class:`CheckRecord`), test outcomes and baseline files written during a run.

    ``tests`` maps a test id to ``{"outcome", "message", "camcheck"}``; ``camcheck`` marks tests that used a
    camcheck fixture, which are shown even when they recorded no check (e.g. a test stopped by an unreadable
    baseline). ``written`` lists the baseline files written (``--camcheck-update`` or first runs).

    Example:
        >>> report = CheckReport()
        >>> report.add_record(CheckRecord("regression", False, "gradcam", "layer4", 3, "cat", 0.9,
        ...                               {"ssim": 0.5}, {"ssim_min": 0.9}, test_id="t.py::test_a"))
        >>> report.checks[0]["passed"], report.checks[0]["test_id"]
        (False, 't.py::test_a')
    """

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.tests: dict[str, dict[str, Any]] = {}
        self.written: list[str] = []

    def add_record(self, rec: CheckRecord | dict[str, Any]) -> None:
        """Add one check as it was recorded (its picture by path), or as :meth:`check_row` made it.

        Example:
            >>> report = CheckReport()
            >>> report.add_record(CheckRecord("attends_to", True, "gradcam", "layer4", 3, "cat", 0.9, {}, {}))
            >>> report.checks[0]["check"], report.checks[0]["overlay"]
            ('attends_to', None)
        """
        self.checks.append(self.check_row(rec) if isinstance(rec, CheckRecord) else dict(rec))

    @staticmethod
    def check_row(rec: CheckRecord) -> dict[str, Any]:
        """One check as plain JSON-able data (what the report keeps, and what a test report carries to the
        pytest-xdist controller).

        Example:
            >>> rec = CheckRecord("attends_to", True, "gradcam", "layer4", 3, "cat", 0.9, {}, {})
            >>> CheckReport.check_row(rec)["layer"]
            'layer4'
        """
        return json_value(asdict(rec))

    def add_outcome(self, test_id: str, outcome: str, message: str = "", *, camcheck: bool = False) -> None:
        """Set a test's outcome (one of :data:`OUTCOMES`); a test already known keeps the worse outcome.

        Example:
            >>> r = CheckReport(); r.add_outcome("t.py::a", "failed"); r.add_outcome("t.py::a", "error")
            >>> r.tests["t.py::a"]["outcome"]
            'failed'
        """
        if outcome not in OUTCOMES:
            raise CamCheckError(f"unknown test outcome {outcome!r}; use one of: {', '.join(OUTCOMES)}")
        known = self.tests.get(test_id)
        if known is None:
            self.tests[test_id] = {"outcome": outcome, "message": message, "camcheck": camcheck}
            return
        known["camcheck"] = known["camcheck"] or camcheck
        if OUTCOMES.index(outcome) < OUTCOMES.index(known["outcome"]):
            known.update(outcome=outcome, message=message)

    def add_test_report(self, report: Any, *, camcheck: bool = False) -> None:
        """Fold one phase of a pytest ``TestReport`` (setup, call, teardown) into its test's outcome.

        A failing setup or teardown is an ``error``; xfail reports become ``xfailed`` / ``xpassed``; a report of
        another phase (pytest-xdist's for a test whose worker crashed) counts as the test's call. Pass
        ``camcheck=True`` for tests that used a camcheck fixture.

        Example:
            >>> from types import SimpleNamespace as R
            >>> r = CheckReport()
            >>> r.add_test_report(R(nodeid="t.py::a", when="call", outcome="passed", longrepr=None))
            >>> r.tests["t.py::a"]["outcome"]
            'passed'
        """
        xfail = hasattr(report, "wasxfail")
        if report.outcome not in ("passed", "failed", "skipped"):  # e.g. pytest-rerunfailures' "rerun"
            return
        if report.when not in ("setup", "teardown"):
            outcome = {"passed": "xpassed" if xfail else "passed", "failed": "failed",
                       "skipped": "xfailed" if xfail else "skipped"}[report.outcome]
        elif report.outcome == "failed":
            outcome = "error"
        elif report.outcome == "skipped":
            outcome = "xfailed" if xfail else "skipped"
        else:
            return
        self.add_outcome(report.nodeid, outcome, "" if outcome == "passed" else _short_message(report),
                         camcheck=camcheck)

    def add_written(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Note baseline files written by the run (listed once each, in order).

        Example:
            >>> r = CheckReport(); r.add_written(["a.npz", "a.npz"]); r.written
            ['a.npz']
        """
        for path in map(str, paths):
            if path not in self.written:
                self.written.append(path)

    def summary(self) -> dict[str, Any]:
        """Counts of tests by outcome and of checks passed and failed.

        Example:
            >>> CheckReport().summary()
            {'tests': {}, 'checks': {'passed': 0, 'failed': 0}}
        """
        tests: dict[str, int] = {}
        for info in self.tests.values():
            tests[info["outcome"]] = tests.get(info["outcome"], 0) + 1
        failed = sum(not c["passed"] for c in self.checks)
        return {"tests": tests, "checks": {"passed": len(self.checks) - failed, "failed": failed}}

    def to_json(self) -> str:
        """The report as a JSON document (no NaN or Infinity: such values are null; pictures by path).

        Example:
            >>> json.loads(CheckReport().to_json())["format"]
            'pytest-camcheck-report'
        """
        data = {"format": _FORMAT, "version": _VERSION, "summary": self.summary(), "tests": self.tests,
                "checks": self.checks, "written": self.written}
        return json.dumps(json_value(data), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> CheckReport:
        """Read what :meth:`to_json` wrote; anything else raises CamCheckError.

        Example:
            >>> CheckReport.from_json(CheckReport().to_json()).checks
            []
        """
        try:
            data = json.loads(text)
            if data.get("format") != _FORMAT or data.get("version") != _VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            report = cls()
            report.checks = [dict(c) for c in data["checks"]]
            for test_id, info in data["tests"].items():
                report.add_outcome(str(test_id), info["outcome"], info["message"], camcheck=bool(info["camcheck"]))
            report.add_written(data["written"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CamCheckError(
                f"not a camcheck report ({type(err).__name__}: {err}); pass JSON written by CheckReport.to_json of "
                f"this pytest-camcheck version ({_FORMAT} version {_VERSION})"
            ) from err
        return report

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` atomically; returns the absolute path.

        Example:
            >>> import tempfile
            >>> CheckReport().write_json(Path(tempfile.mkdtemp()) / "camcheck.json").name
            'camcheck.json'
        """
        return _write_text(path, self.to_json())

    def rows(self) -> list[dict[str, Any]]:
        """What the HTML page shows, in order: one row per check (with ``outcome``, its test's outcome and the
        image it used), one per camcheck test that recorded no check, and one per failed, erroring or xpassed test
        of the run (camcheck or not) that no failed check explains, with its error text; failed checks and failed
        or erroring tests first.

        Example:
            >>> CheckReport().rows()
            []
        """
        rows = []
        for check in self.checks:
            info = self.tests.get(check.get("test_id", ""), {"outcome": "unknown", "message": ""})
            rows.append(check | {"outcome": info["outcome"]})
        checked = {c.get("test_id") for c in self.checks}
        explained = {c.get("test_id") for c in self.checks if c.get("passed") is False}
        for test_id, info in self.tests.items():
            if (info["camcheck"] and test_id not in checked) or (info["outcome"] in _BAD and test_id not in explained):
                rows.append({"test_id": test_id, "outcome": info["outcome"], "check": None, "passed": None,
                             "message": info["message"], "checked": test_id in checked})

        def order(item: tuple[int, dict[str, Any]]) -> tuple[bool, int, int]:
            index, row = item
            bad = row["passed"] is False or row["outcome"] in _BAD
            return not bad, OUTCOMES.index(row["outcome"]), index

        return [row for _, row in sorted(enumerate(rows), key=order)]

    def write_html(self, path: str | os.PathLike[str], *, title: str = "camcheck report") -> Path:
        """Write one self-contained HTML page (pictures inlined as downscaled PNG data URIs, a filter by outcome in
        plain JavaScript); returns the absolute path.

        Example:
            >>> import tempfile
            >>> "<!DOCTYPE html>" in CheckReport().write_html(Path(tempfile.mkdtemp()) / "camcheck.html").read_text()
            True
        """
        rows = self.rows()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        summary = self.summary()
        tests_text = ", ".join(f"{n} {o}" for o, n in sorted(summary["tests"].items(),
                                                              key=lambda on: OUTCOMES.index(on[0])))
        filters = "".join(
            f'<label class="o-{o}"><input type="checkbox" value="{o}" checked> {o} ({counts[o]})</label>'
            for o in OUTCOMES if o in counts
        )
        body = "\n".join(_row_html(row) for row in rows) or '<p class="none">No camcheck checks in this run.</p>'
        written = "".join(f"<li>{_e(p)}</li>" for p in self.written)
        page = _PAGE.format(
            marker=HTML_MARKER,
            title=_e(title),
            summary=_e(f"{len(self.checks)} checks: {summary['checks']['failed']} failed, "
                       f"{summary['checks']['passed']} passed. Tests: {tests_text or 'none recorded'}."),
            filters=filters,
            rows=body,
            written=f"<details><summary>Baseline files written ({len(self.written)})</summary><ul>{written}</ul>"
                    "</details>" if self.written else "",
        )
        return _write_text(path, page)


_JSON_HEAD = re.compile(rb'\A\s*\{\s*"format"\s*:\s*"' + re.escape(_FORMAT.encode()) + rb'"')


def is_report_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a report this module wrote (the HTML page's :data:`HTML_MARKER`, the JSON's
    ``format`` key), judged from its first kilobytes: the only existing files a run may replace with its report.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "notes.txt").write_text("mine")
        >>> is_report_file(CheckReport().write_json(folder / "r.json")), is_report_file(folder / "notes.txt")
        (True, False)
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return HTML_MARKER.encode() in head or _JSON_HEAD.match(head) is not None


def _write_text(path: str | os.PathLike[str], text: str) -> Path:
    target = Path(path).expanduser().absolute()
    atomic_write(target, text.encode("utf-8"))
    return target


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    return str(value)


def _values(value: Any) -> int:
    """How many values a metric holds, counting inside nested lists (a sanity curve's rows)."""
    return sum(_values(v) for v in value) if isinstance(value, (list, tuple)) else 1


def _bound(name: str) -> tuple[str, str] | None:
    """(metric name, "min" or "max") of a threshold named min_x, x_min, max_x or x_max."""
    match = re.fullmatch(r"(min|max)_(.+)|(.+)_(min|max)", name)
    if match is None:
        return None
    return (match[2], match[1]) if match[1] else (match[3], match[4])


def _within(value: Any, kind: str, limit: Any) -> bool:
    """Whether ``value`` keeps a "min" or "max" ``limit``; False for values that are not comparable (None, or what
    an old or foreign report holds)."""
    try:
        return bool(value >= limit if kind == "min" else value <= limit)
    except TypeError:
        return False


def _dict(value: Any) -> dict[str, Any]:
    """A recorded mapping (metrics, thresholds), or {} where a report holds something else."""
    return value if isinstance(value, dict) else {}


def _metrics_html(metrics: dict[str, Any], thresholds: dict[str, Any]) -> str:
    """Metrics, each next to its threshold (min_x / x_min / max_x / x_max goes with metric x or region.x), and the
    other thresholds."""
    paired, rest = {}, []
    for name, limit in thresholds.items():
        bound = _bound(name)
        key = next((k for k in (bound[0], f"region.{bound[0]}") if k in metrics), None) if bound else None
        if key is not None and limit is not None:
            paired[key] = (bound[1], limit)
        elif limit is not None:
            rest.append(f"{_e(name)} {_e(_number(limit))}")
    cells = []
    for name, value in metrics.items():
        if name in paired:
            kind, limit = paired[name]
            ok = _within(value, kind, limit)
            sign = "&ge;" if kind == "min" else "&le;"
            cells.append(f'<span class="{"ok" if ok else "bad"}">{_e(name)} <b>{_e(_number(value))}</b> '
                         f"(need {sign} {_e(_number(limit))})</span>")
        elif isinstance(value, (list, tuple)) and _values(value) > LIST_SHOWN:  # a curve: folded, drawn as a plot
            cells.append(f'<details class="list"><summary>{_e(name)} ({len(value)} '
                         f'{"rows" if any(isinstance(v, (list, tuple)) for v in value) else "values"})</summary>'
                         f"{_e(_number(value))}</details>")
        elif value is not None:
            cells.append(f"<span>{_e(name)} {_e(_number(value))}</span>")
    if rest:
        cells.append(f'<span class="thr">thresholds: {", ".join(rest)}</span>')
    return " ".join(cells)


def _thumbnail(path: str | None) -> str:
    if not path:
        return '<span class="none">no picture</span>'
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
        img.thumbnail(THUMBNAIL_SIZE)
        data = _png_data(img)
    except (OSError, ValueError) as err:
        return f'<span class="none">picture not readable: {_e(path)} ({_e(err)})</span>'
    return (f'<img src="data:image/png;base64,{data}" width="{img.width}" height="{img.height}" '
            f'alt="{_e(Path(path).name)}" title="{_e(path)}">')


def _png_data(img: Any) -> str:
    """A PIL RGB image as base64 PNG text (quantised to 256 colours, which keeps the page small)."""
    from PIL import Image

    buffer = io.BytesIO()
    img.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------ curves of the quality checks

CURVED_CHECKS = ("sane", "faithful", "stable")  # the checks render.QUALITY_CURVES draws


def _curve_html(row: dict[str, Any]) -> str:
    """The check's curve as an inlined plot (:data:`PLOT_SIZE`) drawn from its recorded metrics; '' for checks
    without one and for metrics that are missing or not what the check records (an old or foreign report)."""
    check = row.get("check")
    if not isinstance(check, str) or check not in CURVED_CHECKS:  # before importing render, which imports torch
        return ""
    from .render import quality_curve

    try:
        data = _png_data(quality_curve(check, _dict(row.get("metrics")), _dict(row.get("thresholds")),
                                       size=PLOT_SIZE))
    except (KeyError, TypeError, ValueError, OverflowError):  # CamCheckError is a ValueError
        return ""
    return (f'<img class="curve" src="data:image/png;base64,{data}" width="{PLOT_SIZE[0]}" '
            f'height="{PLOT_SIZE[1]}" alt="{_e(row["check"])} curve">')


def _pictures_html(row: dict[str, Any]) -> str:
    """The check's failure picture, and its curve unless that picture (which draws the curve too) is there."""
    overlay = row.get("overlay")
    curve = "" if overlay and Path(str(overlay)).is_file() else _curve_html(row)
    return curve if curve and not overlay else _thumbnail(overlay) + curve


def _target_html(row: dict[str, Any]) -> str:
    if row.get("target") is None:
        return ""
    target = "callable" if row["target"] < 0 else str(row["target"])
    label = f" {row['label']}" if row.get("label") else ""
    prob = f", p={row['probability']:.3f}" if row.get("probability") is not None else ""
    return _e(f"{target}{label}{prob}")


def _row_html(row: dict[str, Any]) -> str:
    outcome = row["outcome"]
    if row["passed"] is None:
        verdict = "the test's own result (no camcheck check recorded)" if not row.get("checked") else (
            "the test's own result (its checks are listed separately)")
    elif row["passed"]:
        verdict = "check passed"
    else:
        verdict = "check FAILED" + ("; the test still passed (it caught the failure)" if outcome == "passed" else "")
    message = (f"<details{' open' if row['passed'] is not True else ''}><summary>message</summary>"
               f"<pre>{_e(row['message'])}</pre></details>") if row.get("message") else ""
    return f"""<section class="row" data-outcome="{_e(outcome)}">
<div class="head"><span class="badge o-{_e(outcome)}">test {_e(outcome)}</span>
<span class="verdict{' bad' if row['passed'] is False else ''}">{_e(verdict)}</span>
<code class="test">{_e(row['test_id'] or '(outside a test)')}</code></div>
{_check_html(row) if row["passed"] is not None else ""}
{message}
</section>"""


def _check_html(row: dict[str, Any]) -> str:
    return f"""<table><tr><th>check</th><td>{_e(row['check'])}</td><th>image</th><td>{_e(row.get('image') or 'not named')}</td>
<th>method</th><td>{_e(row['method'])}</td><th>layer</th><td>{_e(row['layer'])}</td><th>target</th>
<td>{_target_html(row)}</td></tr></table>
<div class="metrics">{_metrics_html(_dict(row.get("metrics")), _dict(row.get("thresholds")))}</div>
{_dataset_html(row) if (row.get("details") or {}).get("per_class") is not None else _pictures_html(row)}"""


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _dataset_html(row: dict[str, Any]) -> str:
    """A dataset check: its rate against the threshold and the centre baseline, the per-class table, and the
    gallery of its worst cases."""
    details, metrics = row["details"], row.get("metrics") or {}
    threshold = (row.get("thresholds") or {}).get("min_pass_rate")
    centre = metrics.get("center_baseline", details.get("center_baseline"))
    rate = metrics.get("pass_rate")
    bars = "".join(
        f'<div class="bar"><span class="lbl">{_e(name)}</span><span class="track"><span class="fill {kind}" '
        f'style="width:{100 * value:.1f}%"></span></span> {_e(_share(value))}</div>'
        for name, value, kind in (("rate", rate, "ok" if row["passed"] else "bad"), ("required", threshold, "thr"),
                                  ("centre baseline", centre, "thr"))
        if value is not None)
    interval = (f" (95% interval {_share(metrics['interval_low'])}-{_share(metrics['interval_high'])})"
                if metrics.get("interval_low") is not None else "")
    classes = "".join(
        f"<tr><td>{_e(label)}</td><td>{passed}/{total}</td><td>{_e(_share(passed / total if total else None))}</td></tr>"
        for label, (passed, total) in sorted(details["per_class"].items(),
                                             key=lambda kv: (kv[1][0] / max(kv[1][1], 1), kv[0])))
    gallery = "".join(
        f'<figure>{_thumbnail(case.get("overlay"))}<figcaption>{_e(case["image"])} [{_e(case["label"])}]: lift '
        f'{_e(_number(case.get("lift")))}, {"hit" if case.get("hit") else "miss"}</figcaption></figure>'
        for case in details.get("worst", []))
    skipped = "; ".join(f"{_e(k)} ({_e(v)})" for k, v in (details.get("skipped") or {}).items())
    return f"""<div class="dataset">
<p>{_e(details.get("dataset", ""))}{_e(interval)}</p>
{bars}
<table class="classes"><tr><th>class</th><th>passed</th><th>rate</th></tr>{classes}</table>
{f'<p class="thr">skipped: {skipped}</p>' if skipped else ""}
{f'<div class="gallery">{gallery}</div>' if gallery else ""}
</div>"""


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{marker}<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
#filter label {{ margin-right: 12px; }}
.row {{ background: #fff; border: 1px solid #ccc; border-radius: 4px; margin: 10px 0; padding: 8px 10px; }}
.head {{ display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }}
.badge {{ padding: 1px 6px; border-radius: 3px; font-weight: bold; background: #ddd; }}
.o-failed, .o-error, .o-xpassed {{ color: #a00; }}
.o-passed, .o-xfailed {{ color: #060; }}
.o-skipped, .o-unknown {{ color: #555; }}
.verdict.bad, .bad {{ color: #a00; }}
.ok {{ color: #060; }}
.test {{ word-break: break-all; }}
table {{ border-collapse: collapse; margin: 6px 0; }}
th {{ text-align: left; font-weight: normal; color: #666; padding-right: 4px; }}
td {{ padding-right: 16px; }}
.metrics span {{ display: inline-block; margin-right: 14px; }}
.metrics details.list {{ display: inline-block; margin-right: 14px; vertical-align: top; }}
.thr, .none {{ color: #666; }}
img {{ display: block; margin-top: 6px; border: 1px solid #ddd; }}
pre {{ white-space: pre-wrap; background: #f3f3f3; padding: 6px; }}
.bar {{ display: flex; gap: 8px; align-items: center; margin: 2px 0; }}
.bar .lbl {{ width: 110px; color: #666; }}
.track {{ display: inline-block; width: 240px; height: 10px; background: #eee; border-radius: 2px; }}
.fill {{ display: block; height: 10px; border-radius: 2px; }}
.fill.ok {{ background: #3a3; }} .fill.bad {{ background: #c33; }} .fill.thr {{ background: #999; }}
table.classes td, table.classes th {{ padding: 1px 10px 1px 0; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; }} figcaption {{ font-size: 12px; color: #444; }}
</style></head>
<body>
<h1>{title}</h1>
<p id="summary">{summary}</p>
<p id="filter">Show: {filters}</p>
<div id="rows">
{rows}
</div>
{written}
<script>
document.querySelectorAll('#filter input').forEach(function (box) {{
  box.addEventListener('change', function () {{
    var shown = {{}};
    document.querySelectorAll('#filter input').forEach(function (b) {{ shown[b.value] = b.checked; }});
    document.querySelectorAll('#rows .row').forEach(function (row) {{
      row.style.display = shown[row.dataset.outcome] ? '' : 'none';
    }});
  }});
}});
</script>
</body></html>
"""


def check_report_path(path: Path, asked_by: str) -> Path:
    """:func:`~pytest_camcheck._io.check_output_file` for a report: the path can be written, and an existing file
    there is an earlier report (:func:`is_report_file`), never a file of the user's. Raises FileRefused naming
    ``asked_by`` (the setting or option), the path and the fix; returns ``path``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     check_report_path(Path(tmp) / "report.html", "--camcheck-report").name
        'report.html'
    """
    return check_output_file(path, asked_by, replaceable=is_report_file)
