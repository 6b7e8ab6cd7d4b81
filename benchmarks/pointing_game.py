"""The pointing game in TorchRay's form, on held-out scenes, for the bundled models and every CAM method.

A check is one (image, class present); it is a hit when the map's maximum lies within 15 px of one of the
class's objects (Zhang et al. 2016, as TorchRay's ``benchmark/pointing_game.py`` runs it). Accuracy is the mean
of the per-class accuracies, over all checks and over the checks whose objects cover less than 5% of the image
("small", where the centre is no help). The centre baseline puts the maximum at the image's centre. The last
columns give the rate of pytest-camcheck's own rule (pointing within 15 px AND the region's lift), the share of
checks ``assert_dataset_attends_to`` passes, against the same rule applied to a centred Gaussian map.

Data: ``SINGLE`` single-object and ``PAIR`` two-object scenes of :mod:`pytest_camcheck.scenes` with seeds from
2,000,000 (held out: no bundled model was trained on seeds >= 1,000,000), written to a temporary COCO dataset.

Run (about 10 minutes on 2 CPU cores; prints the Markdown table)::

    python benchmarks/pointing_game.py [--single 100] [--pair 50] [--methods gradcam,cam,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_camcheck import METHODS, load_dataset, load_model  # noqa: E402
from pytest_camcheck.dataset_check import SMALL_SHARE, run_dataset  # noqa: E402
from pytest_camcheck.datasets.synthetic import write_scenes_coco  # noqa: E402

SEED = 2_000_000
BUNDLED_MODELS = ("camcheck-shapes", "camcheck-shapes-shortcut")  # the two CNNs of the README's table


def class_mean(checks: list, hit) -> float:
    per: dict[str, list[int]] = {}
    for c in checks:
        per.setdefault(c.label, []).append(int(hit(c)))
    return 100 * sum(sum(v) / len(v) for v in per.values()) / len(per) if per else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--pair", type=int, default=50)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scenes = [(SEED + i, "single") for i in range(args.single)] + [(SEED + i, "pair") for i in range(args.pair)]
        dataset = load_dataset(write_scenes_coco(tmp, scenes) / "instances.json")
        header = "| method | " + " | ".join(f"{m} all | small | rule" for m in BUNDLED_MODELS) + " |"
        rows, centre = [], None
        started = time.perf_counter()
        for method in args.methods.split(","):
            cells = []
            for name in BUNDLED_MODELS:
                result = run_dataset(load_model(name), dataset, min_pass_rate=0, method=method, overlays=False)
                small = [c for c in result.checks if c.small]
                cells += [f"{class_mean(result.checks, lambda c: c.metrics['hit']):.1f}",
                          f"{class_mean(small, lambda c: c.metrics['hit']):.1f}", f"{100 * result.pass_rate:.1f}"]
                if centre is None:
                    centre = [f"{class_mean(result.checks, lambda c: c.center_hit):.1f}",
                              f"{class_mean(small, lambda c: c.center_hit):.1f}", f"{100 * result.center_baseline:.1f}"]
                    counts = (len(result.checks), len(small))
            rows.append(f"| {method} | " + " | ".join(cells) + " |")
            print(f"{method}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        print(f"{len(dataset)} held-out scenes ({args.single} single, {args.pair} pairs; seeds from {SEED:,}): "
              f"{counts[0]} checks, {counts[1]} small (objects under {SMALL_SHARE:.0%} of the image). Pointing game, "
              "15 px, mean of per-class accuracies (%); rule: share of checks passing assert_dataset_attends_to's "
              "rule (%).\n")
        print(header)
        print("|" + "---|" * (1 + 3 * len(BUNDLED_MODELS)))
        print("\n".join(rows))
        print("| centre baseline | " + " | ".join(centre * len(BUNDLED_MODELS)) + " |")


if __name__ == "__main__":
    main()
