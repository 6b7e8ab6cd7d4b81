"""What the reliability guards cost: refusing a zip-bomb baseline (peak memory and time), the per-model lock
(two threads sharing one model against one thread doing the same calls), and checking 1000 class names.

Usage: ``PYTHONPATH=. python benchmarks/reliability.py [--calls 200]`` (from the repository root). Prints one
line per figure; times are medians of 5 repeats.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import torch

from pytest_camcheck import CamCheckError, compute_cam
from pytest_camcheck.engine.targets import check_categories
from pytest_camcheck.regression import read_baseline
from tests.models import SmallCNN
from tests.test_files import _zip_bomb


def bomb() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.npz"
        _zip_bomb(path)
        peaks, times = [], []
        for _ in range(5):
            tracemalloc.start()
            start = time.perf_counter()
            try:
                read_baseline(path, (224, 224))
            except CamCheckError:
                pass
            times.append(time.perf_counter() - start)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        print(f"zip bomb ({path.stat().st_size / 1e3:.0f} kB on disk, 576 MB unpacked): refused in "
              f"{statistics.median(times) * 1e3:.2f} ms, peak {max(peaks) / 2**10:.0f} KiB allocated")


def threads(calls: int) -> None:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.rand(3, 32, 32)

    def work(n: int) -> None:
        for _ in range(n):
            compute_cam(model, x, 1, layer="features")

    ratios = []
    for _ in range(5):
        start = time.perf_counter()
        work(calls)
        alone = time.perf_counter() - start
        pair = [threading.Thread(target=work, args=(calls // 2,)) for _ in range(2)]
        start = time.perf_counter()
        for t in pair:
            t.start()
        for t in pair:
            t.join()
        ratios.append((time.perf_counter() - start) / alone)
    print(f"{calls} Grad-CAM calls on one shared SmallCNN: two threads take {statistics.median(ratios):.2f}x the time "
          "of one thread (the lock serialises them)")


def categories() -> None:
    names = [f"class {i}" for i in range(1000)]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(1000):
            check_categories(names)
        times.append((time.perf_counter() - start) / 1000)
    print(f"checking 1000 class names: {statistics.median(times) * 1e6:.1f} us per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bomb()
    threads(args.calls)
    categories()


if __name__ == "__main__":
    main()
