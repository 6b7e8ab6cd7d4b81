"""Measure the attention metrics behind the default decision rule of ``assert_attends_to``.

On held-out two-object scenes, the bundled clean model's map for each object's class is measured against that
object's box (should pass) and against the other object's box (should fail), for small and large objects.
Candidate rules (pointing game and/or a minimum lift, capped for large regions as the assertion does) are
scored on both, and on the own box of single-object scenes whose objects are larger; the README quotes the
tables.

Usage: ``python benchmarks/calibrate_rule.py [--scenes 400] [--method gradcam] [--weights-dir DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pytest_camcheck import compute_cam
from pytest_camcheck.metrics import measure
from pytest_camcheck.regions import to_mask
from pytest_camcheck.rule import Rule
from pytest_camcheck.scenes import HELD_OUT, make_scene

CANDIDATES = [("pointing only", True, 0.0)] + [(f"lift >= {v:g}", False, v) for v in (1.0, 1.5, 2.0, 3.0)] + [
    (f"pointing and lift >= {v:g}", True, v) for v in (1.0, 1.25, 1.5, 2.0, 2.5)]


def load(name: str, weights_dir: Path | None):
    from pytest_camcheck import bundled

    if weights_dir is None:
        return bundled.load_bundled(name)
    import torch

    from pytest_camcheck.zoo import ModelInfo, attach_info

    model = bundled.ShapesNet(len(bundled.CLASSES))
    state = torch.load(Path(weights_dir) / f"{name}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    attach_info(model.eval(), ModelInfo(name, bundled.bundled_categories(name), bundled.bundled_preprocess(name)))
    return model


def measurements(model, scenes: int, method: str, start: int = HELD_OUT + 50_000) -> list[dict]:
    """One row per (scene, object): metrics on the own box and on the other object's box."""
    rows = []
    for seed in range(start, start + scenes):
        scene = make_scene(seed, "pair")
        results = compute_cam(model, scene.image, [o.label for o in scene.objects], method=method)
        for k, (obj, result) in enumerate(zip(scene.objects, results)):
            other = scene.objects[1 - k]
            size = scene.image.shape[:2]
            own = measure(result.heatmap, to_mask(obj.box, size))
            off = measure(result.heatmap, to_mask(other.box, size))
            rows.append({"own": own, "other": off, "area": own.chance,
                         "correct": result.top[0][0] == obj.label})
    return rows


def passes(m, pointing: bool, min_lift: float) -> bool:
    """The library's rule (an empty map never passes) with a candidate's thresholds."""
    return Rule(min_lift=min_lift).attends(m, pointing=pointing).passed


def single_rows(model, scenes: int, method: str, start: int = HELD_OUT + 80_000) -> list[dict]:
    """One row per single-object scene (objects up to 46% of the short side): metrics on its own box."""
    rows = []
    for seed in range(start, start + scenes):
        scene = make_scene(seed, "single")
        result = compute_cam(model, scene.image, scene.label, method=method)
        own = measure(result.heatmap, to_mask(scene.objects[0].box, scene.image.shape[:2]))
        rows.append({"own": own, "area": own.chance})
    return rows


def single_table(rows: list[dict]) -> str:
    cuts = np.percentile([r["area"] for r in rows], [33.3, 66.7])
    groups = {f"area < {cuts[0]:.1%}": [r for r in rows if r["area"] < cuts[0]],
              f"{cuts[0]:.1%}-{cuts[1]:.1%}": [r for r in rows if cuts[0] <= r["area"] < cuts[1]],
              f">= {cuts[1]:.1%} (max {max(r['area'] for r in rows):.1%})": [r for r in rows if r["area"] >= cuts[1]]}
    lines = ["| rule | " + " | ".join(f"single, {g}" for g in groups) + " |", "| --- |" + " --- |" * len(groups)]
    for name, pointing, lift in CANDIDATES:
        cells = [f"{np.mean([passes(r['own'], pointing, lift) for r in g]):.1%}" for g in groups.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    median_area = float(np.median([r["area"] for r in rows]))
    groups = {"all": rows, f"small (< {median_area:.1%} of image)": [r for r in rows if r["area"] < median_area],
              f"large (>= {median_area:.1%})": [r for r in rows if r["area"] >= median_area]}
    lines = ["| rule | " + " | ".join(f"{g}: true box passes / other box passes" for g in groups) + " |",
             "| --- |" + " --- |" * len(groups)]
    for name, pointing, lift in CANDIDATES:
        cells = []
        for group in groups.values():
            own = np.mean([passes(r["own"], pointing, lift) for r in group])
            off = np.mean([passes(r["other"], pointing, lift) for r in group])
            cells.append(f"{own:.1%} / {off:.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--weights-dir", type=Path)
    args = parser.parse_args()
    model = load("camcheck-shapes", args.weights_dir)
    rows = measurements(model, args.scenes, args.method)
    print(f"{args.scenes} held-out pair scenes, {len(rows)} (object, class) maps, method {args.method}; "
          f"top-1 correct for {np.mean([r['correct'] for r in rows]):.1%} of the objects' classes")
    for key in ("lift", "energy"):
        own = [getattr(r["own"], key) for r in rows]
        off = [getattr(r["other"], key) for r in rows]
        print(f"{key}: own box median {np.median(own):.2f} (5th pct {np.percentile(own, 5):.2f}); "
              f"other box median {np.median(off):.2f} (95th pct {np.percentile(off, 95):.2f})")
    print(table(rows))
    print()
    print(f"true-box pass rate on {args.scenes} held-out single-object scenes, by object area (terciles):")
    print(single_table(single_rows(model, args.scenes, args.method)))


if __name__ == "__main__":
    main()
