"""A seconds-long smoke of benchmarks/: one small case per library runs, and the report script turns its JSON into
a BENCHMARKS.md table with the ratios. The full suite is run by hand (see README, Benchmarks)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _report_module():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report


def test_the_benchmark_suite_runs_and_the_report_is_written(tmp_path: Path) -> None:
    env = dict(os.environ, CAMCHECK_BENCH_MODELS="camcheck-shapes", CAMCHECK_BENCH_BATCHES="1",
               CAMCHECK_BENCH_METHODS="gradcam,cam", CAMCHECK_BENCH_LIBRARIES="grad-cam,torch-cam",
               CAMCHECK_BENCH_THREADS="1", CAMCHECK_BENCH_TOKEN_MODELS="none")
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_cost.py", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "--benchmark-only", f"--benchmark-json={out}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    by_name = {b["name"]: b["extra_info"] for b in data["benchmarks"]}
    assert set(by_name) == {"test_map_cost[camcheck-shapes-b1-gradcam]", "test_map_cost[camcheck-shapes-b1-cam]",
                            "test_ten_classes_cost[camcheck-shapes]", "test_assertion_cost[camcheck-shapes]"}
    gradcam = by_name["test_map_cost[camcheck-shapes-b1-gradcam]"]
    for key in ("forward_s", "grad-cam_s", "torch-cam_s", "ours_over_forward", "grad-cam_over_ours",
                "torch-cam_over_ours", "layer", "batch", "device", "dtype"):
        assert key in gradcam, key
    assert gradcam["ours_over_forward"] == pytest.approx(gradcam["ours_s"] / gradcam["forward_s"])
    assert "grad-cam_s" not in by_name["test_map_cost[camcheck-shapes-b1-cam]"]  # pytorch-grad-cam has no CAM
    assert by_name["test_ten_classes_cost[camcheck-shapes]"]["classes"] == 6
    assert data["machine_info"]["camcheck_versions"]["torch"]
    page = tmp_path / "BENCHMARKS.md"
    _report_module().main([str(out), "-o", str(page)])
    text = page.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| camcheck-shapes | 1 | gradcam | features |"))
    assert row.count("x |") >= 3 and ("ok" in row or "MISSED" in row)
    assert "## Several classes of one image" in text and "## assert_attends_to against compute_cam" in text
    assert "Not measured: no GPU" in text


def test_verdicts_name_each_target() -> None:
    report = _report_module()
    fast = report.verdicts({"case": "map", "method": "gradcam", "ours_over_forward": 1.05,
                            "grad-cam_over_ours": 3.0, "torch-cam_over_ours": 1.2})
    assert [(k, ok) for k, ok, _ in fast] == [("fwd", True), ("grad-cam", True), ("torch-cam", True)]
    slow = report.verdicts({"case": "map", "method": "scorecam", "ours_over_forward": 20.0,
                            "grad-cam_over_ours": 1.5, "torch-cam_over_ours": 2.5})
    assert [(k, ok) for k, ok, _ in slow] == [("torch-cam", True), ("scorecam", False), ("scorecam", True)]
    cam = report.verdicts({"case": "map", "method": "cam", "ours_over_forward": 1.08})
    assert cam == [("fwd", False, "<= 1.05x fwd")]
    assert report.verdicts({"case": "classes", "ours_s": 1.6, "one_class_s": 1.0})[0][1] is False
    assert report.verdicts({"case": "assert", "ours_s": 1.05, "compute_cam_s": 1.0})[0][1] is True
    sane = report.verdicts({"case": "quality", "ours_over_least": 1.4, "ours_over_measured": 1.1})
    assert [(k, ok) for k, ok, _ in sane] == [("quality", False), ("quality-measured", True)]
    faithful = report.verdicts({"case": "quality", "ours_over_least": 1.1})  # no measured companion
    assert [(k, ok) for k, ok, _ in faithful] == [("quality", True)]


def test_the_report_puts_several_runs_on_one_page(tmp_path: Path) -> None:
    def run(path: Path, extra_info: dict) -> Path:
        path.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": f"{path.stem} CPU", "count": 2}},
                                    "datetime": "2026-12-01", "commit_info": {"id": "abcdef0123", "dirty": True},
                                    "benchmarks": [{"name": path.stem, "extra_info": extra_info}]}))
        return path

    classes = run(tmp_path / "suite.json", {"case": "classes", "model": "m", "classes": 10, "ours_s": 0.012,
                                             "one_class_s": 0.01})
    sane = run(tmp_path / "quality.json", {"case": "quality", "model": "m", "check": "sane", "least": "8 calls",
                                            "ours_s": 0.07, "least_s": 0.05, "ours_over_least": 1.4,
                                            "measured_s": 0.065, "ours_over_measured": 1.08})
    page = tmp_path / "BENCHMARKS.md"
    _report_module().main([str(classes), str(sane), "-o", str(page)])
    text = page.read_text()
    assert "Machine: suite CPU" in text and "(the first JSON's; a section measured in another run" in text
    assert "## Several classes of one image" in text
    assert ("Measured on quality CPU, 2 cores; run 2026-12-01; commit abcdef0 with uncommitted changes; torch "
            "threads: not recorded.") in text
    row = next(line for line in text.splitlines() if line.startswith("| m | sane |"))
    assert "| 1.40x |" in row and "| 65.0 | 1.08x |" in row
    assert "MISSED" in row and "with its measurements" in row
