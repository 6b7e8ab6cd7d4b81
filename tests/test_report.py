"""The run's report: outcomes from test reports, JSON round trip, xdist merge, and the self-contained HTML page."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pytest_camcheck import CamCheckError
from pytest_camcheck.context import CheckRecord
from pytest_camcheck.report import (
    THUMBNAIL_SIZE, WORKER_OUTPUT_KEY, CheckReport, receive_from_worker, send_to_controller,
)


def picture(path: Path, size: tuple[int, int] = (1500, 400)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def record(test_id: str, passed: bool, overlay: Path | None = None, **kw) -> CheckRecord:
    fields = dict(check="regression", passed=passed, method="gradcam", layer="features", target=2, label="triangle",
                  probability=0.875, metrics={"ssim": 0.5 if not passed else 0.99, "spearman": 0.95},
                  thresholds={"ssim_min": 0.9, "spearman_min": 0.9}, overlay=overlay, message="", test_id=test_id)
    return CheckRecord(**(fields | kw))


def phase(nodeid: str, when: str, outcome: str, **kw) -> SimpleNamespace:
    return SimpleNamespace(**({"nodeid": nodeid, "when": when, "outcome": outcome, "longrepr": None} | kw))


@pytest.mark.parametrize("phases,outcome", [
    ([("setup", "passed"), ("call", "passed"), ("teardown", "passed")], "passed"),
    ([("setup", "passed"), ("call", "failed"), ("teardown", "passed")], "failed"),
    ([("setup", "failed")], "error"),
    ([("setup", "passed"), ("call", "passed"), ("teardown", "failed")], "error"),
    ([("setup", "passed"), ("call", "failed"), ("teardown", "failed")], "failed"),
    ([("setup", "skipped")], "skipped"),
    ([("setup", "passed"), ("call", "skipped")], "skipped"),
])
def test_outcome_of_the_phases(phases: list, outcome: str) -> None:
    report = CheckReport()
    for when, result in phases:
        report.add_test_report(phase("t.py::a", when, result))
    assert report.tests["t.py::a"]["outcome"] == outcome


def test_xfail_and_messages() -> None:
    report = CheckReport()
    report.add_test_report(phase("t.py::x", "call", "skipped", wasxfail="known bug"))
    report.add_test_report(phase("t.py::y", "call", "passed", wasxfail=""))
    crash = SimpleNamespace(reprcrash=SimpleNamespace(message="AssertionError: map moved"))
    report.add_test_report(SimpleNamespace(nodeid="t.py::z", when="call", outcome="failed", longrepr=crash))
    report.add_test_report(phase("t.py::s", "setup", "skipped", longrepr=("t.py", 3, "Skipped: no GPU")), camcheck=True)
    assert {k: (v["outcome"], v["message"]) for k, v in report.tests.items()} == {
        "t.py::x": ("xfailed", "known bug"), "t.py::y": ("xpassed", ""),
        "t.py::z": ("failed", "AssertionError: map moved"), "t.py::s": ("skipped", "Skipped: no GPU"),
    }
    assert report.tests["t.py::s"]["camcheck"] and not report.tests["t.py::z"]["camcheck"]
    with pytest.raises(CamCheckError, match="unknown test outcome 'weird'; use one of: failed"):
        report.add_outcome("t.py::q", "weird")


def test_json_round_trip_is_pure_json(tmp_path: Path) -> None:
    report = CheckReport()
    report.add_record(record("t.py::a", False, tmp_path / "a.png", metrics={"lift": math.inf, "peak": (3, 4),
                                                                            "n": np.float32(0.5), "nan": math.nan}))
    report.add_outcome("t.py::a", "failed", "AssertionError: moved", camcheck=True)
    report.add_written([tmp_path / "a.npz"])
    text = report.to_json()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["summary"] == {"tests": {"failed": 1}, "checks": {"passed": 0, "failed": 1}}
    assert data["checks"][0]["metrics"] == {"lift": None, "peak": [3, 4], "n": 0.5, "nan": None}
    assert data["checks"][0]["overlay"] == str(tmp_path / "a.png")
    again = CheckReport.from_json(text)
    assert (again.checks, again.tests, again.written) == (report.checks, report.tests, report.written)
    path = report.write_json(tmp_path / "sub" / "r.json")
    assert path.read_text() == text


@pytest.mark.parametrize("text", ["", "[]", '{"format": "other"}',
                                  '{"format": "pytest-camcheck-report", "version": 1}'])
def test_foreign_json_is_a_clear_error(text: str) -> None:
    with pytest.raises(CamCheckError, match="not a camcheck report .*pass JSON written by CheckReport.to_json"):
        CheckReport.from_json(text)


def test_merge_of_worker_reports() -> None:
    main, workers = CheckReport(), [CheckReport(), CheckReport()]
    for i, worker in enumerate(workers):
        worker.add_record(record(f"t.py::w{i}", bool(i)))
        worker.add_outcome(f"t.py::w{i}", "passed" if i else "failed")
        worker.add_written([f"b{i}.npz", "shared.npz"])
    main.add_outcome("t.py::w0", "passed")
    outputs = [{} for _ in workers]
    for worker, out in zip(workers, outputs):
        send_to_controller(worker, out)
        assert isinstance(out[WORKER_OUTPUT_KEY], str)
    assert all(receive_from_worker(main, out) for out in outputs)
    assert not receive_from_worker(main, {})
    assert [c["test_id"] for c in main.checks] == ["t.py::w0", "t.py::w1"]
    assert main.tests["t.py::w0"]["outcome"] == "failed"
    assert main.written == ["b0.npz", "shared.npz", "b1.npz"]


def test_rows_put_failures_first_and_show_camcheck_tests_without_checks(tmp_path: Path) -> None:
    report = CheckReport()
    report.add_record(record("t.py::ok", True))
    report.add_record(record("t.py::xf", False))
    report.add_record(record("t.py::bad", False))
    report.add_record(record("", True))
    report.add_outcome("t.py::ok", "passed")
    report.add_outcome("t.py::xf", "xfailed")
    report.add_outcome("t.py::bad", "failed")
    report.add_outcome("t.py::err", "error", "CamCheckError: baseline is corrupt", camcheck=True)
    report.add_outcome("t.py::plain", "failed")
    rows = report.rows()
    assert [(r["test_id"], r["outcome"]) for r in rows] == [
        ("t.py::bad", "failed"), ("t.py::plain", "failed"), ("t.py::err", "error"), ("t.py::xf", "xfailed"),
        ("t.py::ok", "passed"), ("", "unknown"),
    ]


def test_html_is_self_contained_escaped_and_small(tmp_path: Path) -> None:
    report = CheckReport()
    nasty = 't.py::test_x[<script>alert("x")</script>&]'
    report.add_record(record("t.py::fine", True, picture(tmp_path / "ok.png")))
    report.add_record(record(nasty, False, picture(tmp_path / "bad.png"),
                             message="SSIM 0.5 < 0.9 <b>bold</b>", label="<img src=x>"))
    report.add_record(record("t.py::gone", False, tmp_path / "missing.png"))
    report.add_outcome(nasty, "failed")
    report.add_outcome("t.py::fine", "passed")
    report.add_outcome("t.py::gone", "failed")
    report.add_written(["a<b>.npz"])
    page = report.write_html(tmp_path / "out" / "report.html").read_text()

    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "&lt;img src=x&gt;" in page and "a&lt;b&gt;.npz" in page
    assert page.index("alert(") < page.index("t.py::gone") < page.index("t.py::fine")
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    assert "picture not readable: " in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 2
    for uri in uris:
        thumb = Image.open(io.BytesIO(base64.b64decode(uri)))
        assert thumb.width <= THUMBNAIL_SIZE[0] and thumb.height <= THUMBNAIL_SIZE[1]
    assert len(page) < 2_000_000
    assert re.search(r'<input type="checkbox" value="failed" checked> failed \(2\)', page)
    assert 'ssim <b>0.5</b> (need &ge; 0.9)' in page and "2 triangle, p=0.875" in page


def test_html_pairs_assertion_metrics_with_their_thresholds(tmp_path: Path) -> None:
    report = CheckReport()
    report.add_record(record("t.py::a", False, check="attends_to",
                             metrics={"region.lift": 1.2, "region.hit": False, "region.peak": None},
                             thresholds={"min_lift": 1.5, "tolerance": 15.0, "pointing": True, "min_energy": None}))
    page = report.write_html(tmp_path / "r.html").read_text()
    assert '<span class="bad">region.lift <b>1.2</b> (need &ge; 1.5)</span>' in page
    assert "region.hit no" in page and "thresholds: tolerance 15, pointing yes" in page


def test_empty_report(tmp_path: Path) -> None:
    page = CheckReport().write_html(tmp_path / "r.html").read_text()
    assert "No camcheck checks in this run." in page
