"""Cost of a dataset check on the bundled model, against the least any tool must do over the same images.

- Time: ``run_dataset`` (what ``assert_dataset_attends_to`` runs, overlays off) on ``--images`` held-out scenes
  (200 by default) against decoding the same images, preprocessing them and one bare batched no-grad forward
  per 32 images, timed one after the other in each round. The ratio of each round and of the fastest rounds is
  printed; the target is at most 1.3x.
- Memory: the peak resident memory (``ru_maxrss``) of a fresh process checking 200 and 2,000 images (the 2,000
  reuse the 200 image files ten times each, so the data on disk stays small); the target is within 10%.

Run: ``python benchmarks/dataset_cost.py [--images 200] [--rounds 5] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 3_000_000
BATCH = 32


def make_data(folder: Path, images: int) -> tuple[Path, Path]:
    """``images`` scenes as COCO, and the same JSON repeated to ten times as many entries."""
    from pytest_camcheck.datasets.synthetic import write_scenes_coco

    path = write_scenes_coco(folder, [(SEED + i, "single") for i in range(images)]) / "instances.json"
    doc = json.loads(path.read_text())
    big = {"categories": doc["categories"], "images": [], "annotations": []}
    for copy in range(10):
        for img in doc["images"]:
            big["images"].append(img | {"id": copy * images + img["id"]})
        for ann in doc["annotations"]:
            big["annotations"].append(ann | {"id": copy * 10**6 + ann["id"], "image_id": copy * images + ann["image_id"]})
    large = folder / "instances_x10.json"
    large.write_text(json.dumps(big))
    return path, large


def bare(model, dataset, preprocess) -> None:
    import torch

    from pytest_camcheck.datasets.core import decode

    entries = dataset.entries
    for start in range(0, len(entries), BATCH):
        pictures = [decode(e.path, e.size, e.source) for e in entries[start:start + BATCH]]
        x = torch.stack([preprocess(p) for p in pictures])
        with torch.no_grad():
            model(x)


def timing(path: Path, rounds: int) -> None:
    from pytest_camcheck import load_dataset, load_model
    from pytest_camcheck.bundled import bundled_preprocess
    from pytest_camcheck.dataset_check import run_dataset

    model = load_model("camcheck-shapes")
    dataset = load_dataset(path)
    preprocess = bundled_preprocess("camcheck-shapes")
    run_dataset(model, dataset[:BATCH], overlays=False, min_pass_rate=0)
    bare(model, dataset[:BATCH], preprocess)
    ours, base = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        bare(model, dataset, preprocess)
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        result = run_dataset(model, dataset, overlays=False, min_pass_rate=0)
        ours.append(time.perf_counter() - t)
    ratios = [o / b for o, b in zip(ours, base)]
    print(f"{len(dataset)} images, {len(result.checks)} checks, pass rate {result.pass_rate:.1%}")
    print("bare (decode + preprocess + no-grad forward) s: " + ", ".join(f"{v:.2f}" for v in base))
    print("run_dataset s: " + ", ".join(f"{v:.2f}" for v in ours))
    print(f"ratio per round: {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x; "
          f"fastest rounds {min(ours) / min(base):.2f}x")


def memory(path: Path) -> None:
    from pytest_camcheck import load_dataset, load_model
    from pytest_camcheck.dataset_check import run_dataset

    result = run_dataset(load_model("camcheck-shapes"), load_dataset(path), overlays=False, min_pass_rate=0)
    print(json.dumps({"checks": len(result.checks), "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        memory(Path(args.memory_of))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = make_data(Path(tmp), args.images)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        timing(small, args.rounds)
        peaks = {}
        for path in (small, large):
            command = [sys.executable, __file__, "--memory-of", str(path), "--threads", str(args.threads)]
            out = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            peaks[out["checks"]] = out["peak_kb"]
            print(f"peak resident memory, {out['checks']} checks: {out['peak_kb'] / 1024:.1f} MB")
        (n1, p1), (n2, p2) = sorted(peaks.items())
        print(f"peak for {n2} checks / peak for {n1}: {p2 / p1:.3f}")


if __name__ == "__main__":
    main()
