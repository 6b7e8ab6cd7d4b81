"""Measure a bundled model's behaviour on held-out scenes: the figures of the README's bundled-models table.

Grad-CAM with the automatic layer, 15 px tolerance, scenes ``make_scene(HELD_OUT + i, kind)`` for
``i < --scenes`` (never trained on), the protocol of ``tests/test_bundled_behaviour.py``::

    python benchmarks/bundled_behaviour.py --model camcheck-shapes-vit --scenes 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pytest_camcheck import compute_cam
from pytest_camcheck.bundled import BUNDLED_MODELS, load_bundled
from pytest_camcheck.metrics import RegionMetrics, measure
from pytest_camcheck.scenes import HELD_OUT, Scene, make_scene

CHUNK = 100


def _box_mask(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def gradcam(model: torch.nn.Module, scenes: list[Scene], targets: list[int]) -> tuple[np.ndarray, list, str]:
    """Top-1 classes, heatmaps and layer of Grad-CAM for one target per scene, in batches of CHUNK."""
    predicted, maps, layer = [], [], ""
    for i in range(0, len(scenes), CHUNK):
        results = compute_cam(model, [s.image for s in scenes[i:i + CHUNK]], targets[i:i + CHUNK])
        predicted += [r.top[0][0] for r in results]
        maps += [r.heatmap for r in results]
        layer = results[0].layer
    return np.array(predicted), maps, layer


def on(scenes: list[Scene], maps: list[np.ndarray], box_of) -> list[RegionMetrics]:
    """Region metrics of each map against the box ``box_of(scene)``."""
    return [measure(m, _box_mask(box_of(s), m.shape)) for s, m in zip(scenes, maps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=BUNDLED_MODELS, default="camcheck-shapes-vit")
    parser.add_argument("--scenes", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_bundled(args.model)
    start = time.perf_counter()
    single = [make_scene(HELD_OUT + i) for i in range(args.scenes)]
    predicted, maps, layer = gradcam(model, single, [s.label for s in single])
    metrics = on(single, maps, lambda s: s.objects[0].box)
    energy, chance = np.mean([m.energy for m in metrics]), np.mean([m.chance for m in metrics])
    print(f"{args.model}, Grad-CAM at {layer!r}, {args.scenes} held-out scenes per kind")
    print(f"single: accuracy {np.mean(predicted == [s.label for s in single]):.1%}, "
          f"pointing game {np.mean([m.hit for m in metrics]):.1%}, energy in the object box {energy:.3f} vs chance "
          f"{chance:.3f} ({energy / chance:.1f}x), mean lift {np.mean([m.lift for m in metrics]):.2f}, lift > 1.5 "
          f"{np.mean([m.lift > 1.5 for m in metrics]):.1%}")
    pairs = [make_scene(HELD_OUT + i, "pair") for i in range(args.scenes)]
    _, first, _ = gradcam(model, pairs, [s.objects[0].label for s in pairs])
    _, second, _ = gradcam(model, pairs, [s.objects[1].label for s in pairs])
    a1, b1 = on(pairs, first, lambda s: s.objects[0].box), on(pairs, first, lambda s: s.objects[1].box)
    a2, b2 = on(pairs, second, lambda s: s.objects[0].box), on(pairs, second, lambda s: s.objects[1].box)
    print(f"pairs: more energy on its own object {np.mean([a.energy > b.energy for a, b in zip(a1, b1)]):.1%} / "
          f"{np.mean([b.energy > a.energy for a, b in zip(a2, b2)]):.1%}, pointing game "
          f"{np.mean([a.hit for a in a1]):.1%} / {np.mean([b.hit for b in b2]):.1%}")
    marked = [make_scene(HELD_OUT + i, "shortcut") for i in range(args.scenes)]
    predicted, maps, _ = gradcam(model, marked, [s.label for s in marked])
    print(f"watermarked: accuracy {np.mean(predicted == [s.label for s in marked]):.1%}, object hit "
          f"{np.mean([m.hit for m in on(marked, maps, lambda s: s.objects[0].box)]):.1%}, watermark lift "
          f"{np.mean([m.lift for m in on(marked, maps, lambda s: s.watermark_box)]):.2f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
