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


def test_the_benchmark_suite_runs_and_the_report_is_written(tmp_path: Path) -> None:
    env = dict(os.environ, CAMCHECK_BENCH_MODELS="camcheck-shapes", CAMCHECK_BENCH_BATCHES="1",
               CAMCHECK_BENCH_METHODS="gradcam,cam", CAMCHECK_BENCH_LIBRARIES="ours,grad-cam,torch-cam",
               CAMCHECK_BENCH_THREADS="1")
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_cost.py", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "--benchmark-min-rounds=1", f"--benchmark-json={out}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    libs = {b["extra_info"]["lib"] for b in data["benchmarks"]}
    assert libs == {"forward", "ours", "grad-cam", "torch-cam"}
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    page = tmp_path / "BENCHMARKS.md"
    report.main([str(out), "-o", str(page)])
    text = page.read_text()
    assert "| camcheck-shapes | 1 | gradcam | features |" in text
    row = next(line for line in text.splitlines() if "| camcheck-shapes | 1 | gradcam |" in line)
    assert row.count("x |") >= 3 and ("ok" in row or "MISSED" in row)


def test_verdicts_name_each_target() -> None:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    fast = report.verdicts("gradcam", {"ours": 1.0, "forward": 0.95, "grad-cam": 3.0, "torch-cam": 1.2})
    assert fast == ["ok <= 1.15x fwd", "ok >= 2.5x vs grad-cam", "ok not slower than torch-cam"]
    slow = report.verdicts("scorecam", {"ours": 2.0, "forward": 0.1, "grad-cam": 3.0, "torch-cam": 5.0})
    assert slow == ["ok not slower than torch-cam", "MISSED >= 2x vs grad-cam", "ok >= 2x vs torch-cam"]
    with pytest.raises(StopIteration):
        next(v for v in report.verdicts("cam", {"ours": 1.2, "forward": 1.0, "grad-cam": None, "torch-cam": None})
             if v.startswith("ok"))
