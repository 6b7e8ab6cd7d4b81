"""Measure the explanation-quality checks behind the defaults of assert_sane, assert_faithful and assert_stable.

On held-out scenes (seeds from HELD_OUT + 300_000; tests use HELD_OUT + 310_000 up), each bundled model's
Grad-CAM map of the scene's label is measured by the three checks, and so are the deliberately broken
explanations of :mod:`benchmarks.quality_controls`: an edge-filter map that does not depend on the weights
(sanity), inverted, per-pixel random and smooth random maps given through ``heatmap=`` (faithfulness), and
Grad-CAM with noisy gradients (stability). It prints the distributions and the pass rates of candidate thresholds;
the README quotes the tables.

Usage: ``python benchmarks/calibrate_quality.py [--scenes 100] [--models camcheck-shapes,camcheck-shapes-shortcut]
[--json rows.json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.quality_controls import (EdgeExplained, NoisyGradients, inverted_map, random_map,  # noqa: E402
                                         smooth_random_map)
from pytest_camcheck import quality  # noqa: E402
from pytest_camcheck.scenes import HELD_OUT, make_scene  # noqa: E402

START = HELD_OUT + 300_000
KIND = {"camcheck-shapes": "single", "camcheck-shapes-shortcut": "shortcut", "camcheck-shapes-vit": "single"}
MAP_LAYER = {"camcheck-shapes-vit": "tokens_to_grid"}  # the layer whose gradient the noisy control disturbs


def load(name: str) -> torch.nn.Module:
    from pytest_camcheck.zoo import load_model

    return load_model(name)


def measure(model: torch.nn.Module, name: str, seed: int) -> dict:
    scene = make_scene(seed, KIND.get(name, "single"))
    image, label = scene.image, scene.label
    row: dict = {"model": name, "seed": seed}
    s = quality.sanity(model, image, label)
    row["sane"] = s.similarity
    row["sane_ssim"] = s.ssim
    row["sane_curve"] = [c.spearman for c in s.curve]
    row["sane_edges"] = quality.sanity(EdgeExplained(model), image, label, layer="edges").similarity
    f = quality.faithfulness(model, image, label)
    row["faithful"], row["faithful_chance"], row["faithful_passed"] = f.gain, f.chance_gain, f.passed
    row["faithful_confounded"], row["class"] = f.confounded, scene.objects[0].name
    row["faithful_p0"] = f.curve[0]
    ins = quality.faithfulness(model, image, label, metric="insertion")
    row["faithful_insertion"], row["faithful_insertion_passed"] = ins.gain, ins.passed
    h = f.heatmap
    for key, given in (("inverted", inverted_map(h)), ("random", random_map(h.shape, seed)),
                       ("smooth", smooth_random_map(h.shape, seed))):
        g = quality.faithfulness(model, image, label, heatmap=given)
        row[f"faithful_{key}"], row[f"faithful_{key}_passed"] = g.gain, g.passed
        row[f"faithful_{key}_chance"] = g.chance_gain
    st = quality.stability(model, image, label)
    row["stable"] = st.similarity
    row["stable_prediction"] = st.prediction_stable
    row["stable_sensitivity"] = st.sensitivity
    noisy = NoisyGradients(model, scale=2.0, layer=MAP_LAYER.get(name, "features"))
    row["stable_noisy"] = quality.stability(noisy, image, label, layer=noisy.layer).similarity
    return row


def rate(values: list[float], ok) -> str:
    return f"{np.mean([ok(v) for v in values]):.1%}"


def report(rows: list[dict]) -> str:
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        out.append(f"\n## {name}: {len(rs)} held-out {KIND.get(name, 'single')} scenes")
        for key in ("sane", "sane_edges", "faithful", "faithful_insertion", "faithful_inverted", "faithful_random",
                    "faithful_smooth", "stable", "stable_noisy", "stable_sensitivity"):
            v = np.array([r[key] for r in rs], dtype=float)
            out.append(f"{key:20s} min {v.min():+.3f}  p5 {np.percentile(v, 5):+.3f}  median {np.median(v):+.3f}  "
                       f"p95 {np.percentile(v, 95):+.3f}  max {v.max():+.3f}")
        out.append(f"prediction unchanged under noise: {np.mean([r['stable_prediction'] for r in rs]):.1%}")
        out.append("| check | threshold | Grad-CAM passes | broken explanation fails |")
        out.append("| --- | --- | --- | --- |")
        for t in (0.5, 0.6, 0.7, 0.8):
            out.append(f"| sane (Spearman <=) | {t} | {rate([r['sane'] for r in rs], lambda v: v <= t)} | edges "
                       f"{rate([r['sane_edges'] for r in rs], lambda v: v > t)} |")
        for t in (0.05, 0.1, 0.15):
            broken = ", ".join(f"{k} {rate([r['faithful_' + k] for r in rs], lambda v: v < t)}"
                               for k in ("inverted", "random", "smooth"))
            out.append(f"| faithful deletion (gain >=, no chance bound) | {t} | "
                       f"{rate([r['faithful'] for r in rs], lambda v: v >= t)} "
                       f"(insertion {rate([r['faithful_insertion'] for r in rs], lambda v: v >= t)}) | {broken} |")
        broken = ", ".join(f"{k} {rate([r[f'faithful_{k}_passed'] for r in rs], lambda v: not v)}"
                           for k in ("inverted", "random", "smooth"))
        out.append(f"| faithful deletion (default: gain >= {quality.DEFAULT_MIN_GAIN} and > chance at "
                   f"{quality.DEFAULT_CONFIDENCE}) | | {rate([r['faithful_passed'] for r in rs], bool)} (insertion "
                   f"{rate([r['faithful_insertion_passed'] for r in rs], bool)}) | {broken} |")
        for t in (0.8, 0.9, 0.95):
            out.append(f"| stable (SSIM >=) | {t} | {rate([r['stable'] for r in rs], lambda v: v >= t)} | noisy "
                       f"{rate([r['stable_noisy'] for r in rs], lambda v: v < t)} |")
        clear = [r for r in rs if not r.get("faithful_confounded", False)]
        out.append(f"deletion confounded (a featureless image keeps the class, or random orderings fall below it): "
                   f"{1 - len(clear) / len(rs):.1%} of the scenes; Grad-CAM passes faithful on "
                   f"{rate([r['faithful_passed'] for r in clear], bool) if clear else 'n/a'} of the others")
        for name in sorted({r.get("class", "?") for r in rs}):
            of = [r for r in rs if r.get("class", "?") == name]
            out.append(f"  {name}: {len(of)} scenes, faithful {rate([r['faithful_passed'] for r in of], bool)}, "
                       f"confounded {rate([r.get('faithful_confounded', False) for r in of], bool)}")
        joint = np.mean([r["sane"] <= quality.DEFAULT_MAX_SIMILARITY and r["faithful_passed"]
                         and r["stable"] >= quality.DEFAULT_MIN_SIMILARITY and r["stable_prediction"] for r in rs])
        out.append(f"Grad-CAM passes all three at the defaults (max_similarity {quality.DEFAULT_MAX_SIMILARITY}, "
                   f"min_gain {quality.DEFAULT_MIN_GAIN}, confidence {quality.DEFAULT_CONFIDENCE}, "
                   f"min_similarity {quality.DEFAULT_MIN_SIMILARITY}): {joint:.1%}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--models", default="camcheck-shapes,camcheck-shapes-shortcut")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", type=Path, nargs="*", help="only print the tables of rows saved with --json")
    args = parser.parse_args()
    if args.report:
        print(report([r for path in args.report for r in json.loads(path.read_text())]))
        return
    torch.set_num_threads(args.threads)
    rows = []
    start = time.time()
    for name in args.models.split(","):
        model = load(name)
        for seed in range(START, START + args.scenes):
            rows.append(measure(model, name, seed))
            if args.json:
                args.json.write_text(json.dumps(rows))
    print(f"{len(rows)} rows in {time.time() - start:.0f} s (torch {torch.__version__}, {args.threads} thread(s))")
    print(report(rows))


if __name__ == "__main__":
    main()
