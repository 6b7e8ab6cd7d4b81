"""How often a random map passes assert_faithful, with and without the chance bound.

A per-pixel random map ranks the pixels in a uniformly random order, so it *is* one more random ordering. On each
held-out scene (seeds from HELD_OUT + 300_000, as benchmarks/calibrate_quality.py), Grad-CAM's deletion check is
run once with ``--orderings`` (default 16) random orderings; then each ordering in turn plays "the map" against
``K`` (default 4, the default ``orderings``) of the others, judged by the library's own rule (``min_gain`` and,
unless 0, the chance bound at ``confidence``). The share that pass is the random map's false-pass rate, measured
on many more random maps than one per scene (they share each scene's orderings, so they are not independent
draws: the rate is an estimate with a wider error than its count suggests).

Usage: ``python benchmarks/faithfulness_chance.py [--scenes 23] [--model camcheck-shapes] [--orderings 16]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_camcheck import quality  # noqa: E402
from pytest_camcheck.scenes import HELD_OUT, make_scene  # noqa: E402
from pytest_camcheck.zoo import load_model  # noqa: E402


def passes(auc: float, others: np.ndarray, min_gain: float, confidence: float) -> bool:
    """The deletion verdict of a map with this AUC against these random orderings, by the library's rule."""
    return quality._beats_random(float(others.mean()) - auc, min_gain, quality._chance_gain(list(others), confidence))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=23)
    parser.add_argument("--model", default="camcheck-shapes")
    parser.add_argument("--orderings", type=int, default=16)
    parser.add_argument("--k", type=int, default=quality.DEFAULT_ORDERINGS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    aucs = []
    for seed in range(HELD_OUT + 300_000, HELD_OUT + 300_000 + args.scenes):
        scene = make_scene(seed)
        aucs.append(np.array(quality.faithfulness(model, scene.image, scene.label,
                                                  orderings=args.orderings).random_aucs))
    spread = [float(a.std(ddof=1)) for a in aucs]
    print(f"{args.model}, {args.scenes} scenes x {args.orderings} random orderings, each against {args.k} others; "
          f"spread of one ordering's AUC per scene {min(spread):.3f}-{max(spread):.3f}")
    for min_gain, confidence in ((quality.DEFAULT_MIN_GAIN, 0.0), (0.1, 0.0),
                                 (quality.DEFAULT_MIN_GAIN, quality.DEFAULT_CONFIDENCE)):
        verdicts = [passes(a[j], np.delete(a, j)[:args.k], min_gain, confidence)
                    for a in aucs for j in range(len(a))]
        print(f"min_gain {min_gain}, confidence {confidence}: a random map passes {np.mean(verdicts):.1%} "
              f"of {len(verdicts)}")


if __name__ == "__main__":
    main()
