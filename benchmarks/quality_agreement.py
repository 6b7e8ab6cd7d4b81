"""Agreement of the explanation-quality measurements with Quantus and captum on held-out scenes, where the
definitions coincide (the README quotes the figures; tests/test_quality_reference.py asserts them on single scenes).

Usage: ``python benchmarks/quality_agreement.py [--scenes 5]`` (needs the ``test`` extra: quantus, captum).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_camcheck import compute_cam, quality  # noqa: E402
from pytest_camcheck.bundled import bundled_preprocess, load_bundled  # noqa: E402
from pytest_camcheck.scenes import HELD_OUT, make_scene  # noqa: E402

PATCH = 28  # the bundled model's 112 px input in 4 x 4 patches


def spearman_gap(model: torch.nn.Module, scene) -> float:
    from quantus.functions.similarity_func import correlation_spearman

    r = quality.sanity(model, scene.image, scene.label)
    return max(abs(s.spearman - correlation_spearman(r.maps[0].ravel(), m.ravel()))
               for s, m in zip(r.curve[1:], r.maps[1:]))


def region_perturbation_gap(model: torch.nn.Module, x: torch.Tensor, label: int) -> float:
    import quantus

    sums = compute_cam(model, x, label).heatmap.reshape(4, PATCH, 4, PATCH).sum(axis=(1, 3))
    blocks = np.argsort(np.argsort(sums.ravel())).reshape(4, 4).astype(np.float32) / 15
    heatmap = np.kron(blocks, np.ones((PATCH, PATCH), np.float32))
    ours = quality.faithfulness(model, x, label, heatmap=heatmap, steps=16, baseline="zero", orderings=1, confidence=0)
    metric = quantus.RegionPerturbation(patch_size=PATCH, order="morf", regions_evaluation=16, perturb_baseline=0.0,
                                        normalise=False, disable_warnings=True, display_progressbar=False)
    drops = metric(model=model, x_batch=x[None].numpy(), y_batch=np.array([label]), a_batch=heatmap[None, None],
                   device="cpu", softmax=True)
    return float(np.max(np.abs(np.array(ours.curve[1:]) - (ours.curve[0] - np.asarray(drops[0])))))


def sensitivity_gap(model: torch.nn.Module, x: torch.Tensor, label: int) -> float:
    from captum.metrics import sensitivity_max

    ours = quality.stability(model, x, label, noise=0.05, samples=6)
    noisy = quality._perturb(quality._Source(model, x, {}), 0.05, 6, 0)

    def explain(inputs, **kwargs):
        maps = compute_cam(model, inputs[0] if isinstance(inputs, tuple) else inputs, label)
        maps = maps if isinstance(maps, list) else [maps]
        return (torch.from_numpy(np.stack([m.heatmap for m in maps]).astype(np.float64)),)

    theirs = float(sensitivity_max(explain, x[None], perturb_func=lambda inputs, radius: noisy, perturb_radius=0.05,
                                   n_perturb_samples=6))
    return abs(theirs - ours.sensitivity) / ours.sensitivity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, prep = load_bundled("camcheck-shapes"), bundled_preprocess("camcheck-shapes")
    gaps: dict[str, list[float]] = {"spearman": [], "region perturbation": [], "sensitivity (relative)": []}
    for k in range(args.scenes):
        scene = make_scene(HELD_OUT + 340_000 + k)
        x = prep(Image.fromarray(scene.image))
        gaps["spearman"].append(spearman_gap(model, scene))
        gaps["region perturbation"].append(region_perturbation_gap(model, x, scene.label))
        gaps["sensitivity (relative)"].append(sensitivity_gap(model, x, scene.label))
    for name, values in gaps.items():
        print(f"{name}: largest difference {max(values):.2g} over {args.scenes} scenes")


if __name__ == "__main__":
    main()
