"""What pytest-camcheck costs a test suite that never uses it: wall time and peak memory of a one-test pytest run
of an unrelated project, with the plugin (as installed, loaded through its entry point) and with
``-p no:camcheck``.

Runs are paired (one of each, in alternating order, so load changes on the machine hit both alike); the script
prints the medians, the median of the per-pair ratios, and the median peak RSS difference. Peak RSS is that of
the pytest process itself (``wait4``'s ``ru_maxrss``).

Usage: ``python benchmarks/startup.py [--pairs 7]`` (run from the repository root; the checkout's package is
put first on ``PYTHONPATH`` so that the plugin measured is this one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "def test_addition():\n    assert 1 + 1 == 2\n"


def run_once(project: Path, *extra: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one ``python -m pytest`` run in ``project``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {project}:\n{output.decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def measure(pairs: int) -> dict[str, list[float]]:
    """Per-pair wall times and peak RSS with and without the plugin."""
    out: dict[str, list[float]] = {"with_s": [], "without_s": [], "with_mb": [], "without_mb": []}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "pytest.ini").write_text("[pytest]\n")
        (project / "test_unrelated.py").write_text(TEST)
        run_once(project)  # warm the file system caches for both
        for i in range(pairs):
            order = [("with", ()), ("without", ("-p", "no:camcheck"))]
            for name, extra in order if i % 2 == 0 else order[::-1]:
                wall, rss = run_once(project, *extra)
                out[f"{name}_s"].append(wall)
                out[f"{name}_mb"].append(rss)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    m = measure(args.pairs)
    ratios = [a / b for a, b in zip(m["with_s"], m["without_s"])]
    extra_mb = [a - b for a, b in zip(m["with_mb"], m["without_mb"])]
    print(f"one-test run of an unrelated project, {args.pairs} pairs, medians:")
    print(f"  with pytest-camcheck:  {statistics.median(m['with_s']):.3f} s, "
          f"peak RSS {statistics.median(m['with_mb']):.1f} MB")
    print(f"  -p no:camcheck:        {statistics.median(m['without_s']):.3f} s, "
          f"peak RSS {statistics.median(m['without_mb']):.1f} MB")
    print(f"  ratio (median of pairs) {statistics.median(ratios):.3f}x, "
          f"extra peak RSS {statistics.median(extra_mb):+.1f} MB")


if __name__ == "__main__":
    main()
