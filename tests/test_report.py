"""The run's report: outcomes from test reports, JSON round trip, xdist merge, and the self-contained HTML page."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_camcheck import CamCheckError, assert_faithful, assert_sane, assert_stable, context
from pytest_camcheck.context import CheckRecord
from pytest_camcheck.render import plot_curves
from pytest_camcheck.report import PLOT_SIZE, THUMBNAIL_SIZE, CheckReport, is_report_file

from .models import SmallCNN


def picture(path: Path, size: tuple[int, int] = (1500, 400)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def record(test_id: str, passed: bool, overlay: Path | None = None, **kw) -> CheckRecord:
    fields = dict(check="regression", passed=passed, method="gradcam", layer="features", target=2, label="triangle",
                  probability=0.875, metrics={"ssim": 0.5 if not passed else 0.99, "spearman": 0.95},
                  thresholds={"ssim_min": 0.9, "spearman_min": 0.9}, overlay=overlay, message="", test_id=test_id)
    return CheckRecord(**(fields | kw))


def sections(page: str) -> list[str]:
    return page.split('<section class="row"')[1:]


def curves(html: str) -> list[Image.Image]:
    """The curve plots inlined in a piece of the page."""
    uris = re.findall(r'<img class="curve" src="data:image/png;base64,([^"]+)"', html)
    return [Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB") for uri in uris]


def differing_pixels(a: Image.Image, b: Image.Image) -> int:
    """Pixels of two pictures that differ by more than a 256-colour quantisation does (a line drawn or not)."""
    return int((np.abs(np.asarray(a, float) - np.asarray(b, float)).max(axis=2) > 40).sum())


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
    ([("???", "failed")], "failed"),  # pytest-xdist's report of a test whose worker crashed
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


def test_earlier_reports_are_recognised_by_content(tmp_path: Path) -> None:
    report = CheckReport()
    report.add_record(record("t.py::a", True))
    assert is_report_file(report.write_html(tmp_path / "r.html")) and is_report_file(report.write_json(tmp_path / "r"))
    (tmp_path / "keep.py").write_text("print('mine')\n")
    (tmp_path / "other.json").write_text('{"format": "pytest-camcheck-dataset-baseline"}')
    assert not any(is_report_file(tmp_path / name) for name in ("keep.py", "other.json", "missing.html"))


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


def test_long_metric_lists_are_folded_and_rounded(tmp_path: Path) -> None:
    report = CheckReport()
    curve = [1 / 3 + i for i in range(20)]
    report.add_record(record("t.py::a", True, check="faithful",
                             metrics={"curve": curve, "ssims": [0.123456] * 8, "region.peak": [67, 65],
                                      "cascade": [[step, "layer", 0.5, 0.25] for step in range(3)]}))
    page = report.write_html(tmp_path / "r.html").read_text()
    folded, cascade = re.findall(r'<details class="list"><summary>(.*?)</summary>(.*?)</details>', page)
    assert folded[0] == "curve (20 values)" and cascade[0] == "cascade (3 rows)"  # 12 values in 3 rows
    assert cascade[1] == "[[0, layer, 0.5, 0.25], [1, layer, 0.5, 0.25], [2, layer, 0.5, 0.25]]"
    assert folded[1].startswith("[0.3333, 1.333, 2.333, ") and folded[1].endswith(", 18.33, 19.33]")
    assert folded[1].count(", ") == 19 and "0.33333" not in page
    assert "<span>ssims [0.1235, 0.1235, 0.1235, 0.1235, 0.1235, 0.1235, 0.1235, 0.1235]</span>" in page
    assert "<span>region.peak [67, 65]</span>" in page


def test_empty_report(tmp_path: Path) -> None:
    page = CheckReport().write_html(tmp_path / "r.html").read_text()
    assert "No camcheck checks in this run." in page


# ------------------------------------------------------------------------------ curves of the quality checks

@pytest.fixture(scope="module")
def quality(one_torch_thread: None) -> dict:
    """Records of real sane / faithful / stable calls on a tiny model (three passing, one failing stable check
    with its picture), and the plots the checks' own failure pictures draw from the same results."""
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.rand(3, 32, 32)
    records: list[CheckRecord] = []
    context.add_listener(records.append)
    try:
        sane = assert_sane(model, x, 1, max_similarity=0.5)
        faithful = assert_faithful(model, x, 1, steps=4, orderings=1, confidence=0, min_gain=-1.0)
        stable = assert_stable(model, x, 1, samples=3, min_similarity=0.5, noise=0.02)
        with pytest.raises(AssertionError, match="camcheck stable failed"):
            assert_stable(model, x, 1, samples=2, min_similarity=1.0, noise=0.5)
    finally:
        context.remove_listener(records.append)
    steps = [s.step for s in sane.curve]
    expected = [
        plot_curves({"spearman": (steps, [s.spearman for s in sane.curve]),
                     "ssim": (steps, [s.ssim for s in sane.curve])},
                    x_label="groups randomised", y_range=(-1.0, 1.0), limit=0.5),
        plot_curves({"map": (faithful.fractions, faithful.curve),
                     "random": (faithful.fractions, faithful.random_curve)},
                    x_label="share of pixels (deletion)", y_range=(0.0, 1.0)),
        plot_curves({"ssim": (list(range(1, 4)), stable.ssims)}, x_label="perturbation", y_range=(0.0, 1.0), limit=0.5),
    ]
    return {"records": records, "expected": expected}


def quality_report(records: list[CheckRecord]) -> CheckReport:
    report = CheckReport()
    for i, rec in enumerate(records):
        report.add_record(replace(rec, test_id=f"t.py::test_{i}_{rec.check}"))
        report.add_outcome(f"t.py::test_{i}_{rec.check}", "passed" if rec.passed else "failed")
    return report


def test_passing_quality_checks_show_their_curve(quality: dict, tmp_path: Path) -> None:
    passing = quality["records"][:3]
    assert [(r.check, r.passed, r.overlay) for r in passing] == [("sane", True, None), ("faithful", True, None),
                                                                 ("stable", True, None)]
    page = quality_report(passing).write_html(tmp_path / "r.html").read_text()
    rows = sections(page)
    assert [re.search(r"<th>check</th><td>(\w+)</td>", row)[1] for row in rows] == ["sane", "faithful", "stable"]
    for row, expected in zip(rows, quality["expected"]):
        [plot] = curves(row)
        assert plot.size == PLOT_SIZE
        assert differing_pixels(plot, expected) == 0  # drawn from the metrics as the check's failure picture is
        assert "no picture" not in row


def test_the_report_knows_which_checks_have_curves_without_importing_render(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pytest_camcheck.render import QUALITY_CURVES
    from pytest_camcheck.report import CURVED_CHECKS

    assert set(CURVED_CHECKS) == set(QUALITY_CURVES)
    row = CheckReport.check_row(record("t.py::a", False))
    code = (f"import sys\nfrom pytest_camcheck.report import CheckReport\nr = CheckReport()\nr.add_record({row!r})\n"
            f"r.write_html({str(tmp_path / 'r.html')!r})\nprint('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"  # a report without quality checks is written without torch


def test_the_curves_survive_the_json_round_trip(quality: dict, tmp_path: Path) -> None:
    report = CheckReport.from_json(quality_report(quality["records"][:3]).to_json())
    page = report.write_html(tmp_path / "r.html").read_text()
    assert [len(curves(row)) for row in sections(page)] == [1, 1, 1]


def test_a_failed_check_with_its_picture_gets_no_second_plot(quality: dict, tmp_path: Path) -> None:
    failed = quality["records"][3]
    assert not failed.passed and Path(failed.overlay).is_file()
    report = quality_report([failed])
    [row] = sections(report.write_html(tmp_path / "r.html").read_text())
    assert curves(row) == [] and len(re.findall(r'<img src="data:image/png;base64,', row)) == 1
    report.checks[0]["overlay"] = str(tmp_path / "gone.png")  # the picture is lost: the curve stands in for it
    [row] = sections(report.write_html(tmp_path / "r.html").read_text())
    assert "picture not readable" in row and [p.size for p in curves(row)] == [PLOT_SIZE]


GARBAGE = [
    ("sane", None), ("sane", {}), ("sane", {"curve": "0.5"}), ("sane", {"curve": [[0, "", "x", 1.0]]}),
    ("sane", {"curve": [[0, "", 0.5]]}), ("sane", {"curve": [[True, "", 0.5, 0.5]]}), ("sane", {"curve": []}),
    ("sane", {"curve": [[0, "", None, None]]}), ("sane", {"curve": [[10 ** 400, "", 0.5, 0.5]]}),
    ("faithful", {"curve": [1.0, 0.5]}), ("faithful", {"curve": [1.0, 0.5], "random_curve": [1.0]}),
    ("faithful", {"curve": [1.0], "random_curve": [1.0]}), ("faithful", {"curve": {"a": 1}, "random_curve": [1.0]}),
    ("stable", {"ssims": None}), ("stable", {"ssims": [{"a": 1}]}), ("stable", {"ssims": ["0.9"]}),
    ("stable", [0.9, 0.8]), ("sane", {"similarity": "high", "gain": [1]}), ("stable", {"similarity": {"a": 1}}),
]


@pytest.mark.parametrize("thresholds", ["nonsense", {"max_similarity": 0.7, "min_similarity": 0.9, "min_gain": 0.1}])
@pytest.mark.parametrize("check,metrics", GARBAGE, ids=[f"{c}-{m!r}"[:40] for c, m in GARBAGE])
def test_a_quality_row_with_garbage_metrics_has_no_plot(check: str, metrics: object, thresholds: object,
                                                        tmp_path: Path) -> None:
    data = json.loads(CheckReport().to_json())  # an old or foreign report, read back as the plugin's merge does
    data["checks"].append({"check": check, "passed": True, "method": "gradcam", "layer": "features", "target": 1,
                           "metrics": metrics, "thresholds": thresholds, "test_id": "t.py::old"})
    report = CheckReport.from_json(json.dumps(data))
    [row] = sections(report.write_html(tmp_path / "r.html").read_text())
    assert curves(row) == [] and "no picture" in row


def test_garbage_thresholds_only_lose_the_limit_line(tmp_path: Path) -> None:
    report = CheckReport()
    report.add_record(record("t.py::a", True, check="stable", metrics={"ssims": [0.99, None, 0.97]},
                             thresholds={"min_similarity": "high"}))
    [row] = sections(report.write_html(tmp_path / "r.html").read_text())
    [plot] = curves(row)
    expected = plot_curves({"ssim": ([1, 2, 3], [0.99, math.nan, 0.97])}, x_label="perturbation")
    assert differing_pixels(plot, expected) == 0


QUALITY_TEST = """
import torch
from tests_models import SmallCNN

def test_quality(camcheck):
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.rand(3, 32, 32)
    camcheck.sane(model, x, 1, max_similarity=1.0)
    camcheck.faithful(model, x, 1, steps=3, orderings=1, confidence=0, min_gain=-1.0)
    camcheck.stable(model, x, 1, samples=2, min_similarity=1.0, noise=0.5)
"""


def test_the_plugin_report_draws_the_quality_curves(project: pytest.Pytester, lean_run, one_torch_thread: None) -> None:
    project.makepyfile(test_q=QUALITY_TEST)
    result = lean_run(project, "--camcheck-report=r.html", "--camcheck-device=cpu")
    result.assert_outcomes(failed=1)
    rows = sections((project.path / "r.html").read_text())
    assert [re.search(r"<th>check</th><td>(\w+)</td>", row)[1] for row in rows] == ["sane", "faithful", "stable"]
    assert [len(curves(row)) for row in rows] == [1, 1, 0]  # the failed stable check's picture holds its curve
    assert "check FAILED" in rows[2] and len(re.findall(r'<img src="data:image/png;base64,', rows[2])) == 1


def test_a_faithful_check_failing_only_on_chance_shows_that_in_red(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.rand(3, 32, 32)
    seen: list = []
    context.add_listener(seen.append)
    try:
        with pytest.raises(AssertionError, match="not better than chance"):
            assert_faithful(model, x, 1, steps=4, orderings=3, min_gain=-1.0, confidence=0.999)
    finally:
        context.remove_listener(seen.append)
    report = CheckReport()
    report.add_record(seen[0])
    page = report.write_html(tmp_path / "r.html").read_text()
    assert re.search(r'class="ok">gain <b>[^<]+</b> \(need &ge; -1\)', page)  # min_gain alone is met ...
    assert re.search(r'class="bad">gain_over_chance <b>[^<]+</b> \(need &ge; 0\)', page)  # ... the bound is not
