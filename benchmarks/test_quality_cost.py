"""What the explanation-quality checks cost against the least work their definitions need, timed in the same test
(interleaved round by round, as in ``test_cost.py``):

- ``assert_faithful``: one map plus 2 + (1 + orderings) x (steps - 1) bare forwards (each curve's interior steps;
  the two ends, the image and the baseline, are shared by all curves), batched in chunks of 64 as ours, on inputs
  built beforehand;
- ``assert_sane``: one Grad-CAM call, then ``groups`` Grad-CAM calls at its layer on the image prepared once (the
  steps explain the same image: preparing it again is not work the definition needs). The ``calls`` companion,
  (groups + 1) whole ``compute_cam`` calls, is timed alongside for comparison with earlier runs;
- ``assert_stable``: one Grad-CAM call on a batch of the clean image and ``samples`` copies.

What ours does on top (perturbing in the image's pixels, the baseline image, the preprocessing of every copy, the
deep copy and re-initialisation, the similarities) is what the ratio measures; the target is 1.2x.

The similarities are part of what sanity and stability define, and on a model whose Grad-CAM call takes a few
milliseconds they are not a small share. So sanity and stability also time ``measured``: the same least work, then
the measurements the definitions name, made as the package makes them (its own ranks, scikit-image's SSIM, over
the same threads), so that nothing in them is slower than in ours, on the maps the check itself measures (made by
one untimed call of it: the least work's own maps are all the same map, which would make the measurements
cheaper than they are, e.g. Spearman of two equal maps needs no ranks):

- sanity: the Spearman and SSIM of each step's map with the original (the original's ranks once);
- stability: the SSIM of each perturbed map with the clean one (the seeded noise is not counted).

``ours_over_measured`` is the ratio against it: what ours adds besides the maps and the measurements (the deep
copy and re-initialisation, the noise, the preprocessing of the copies).

Every least-work call is timed in every round (none is cut to one call for being slow), after one untimed call of
each side; the number of rounds follows the least work's time (3 for calls of seconds, up to 15 for milliseconds).
``ours_over_least`` is the ratio of the fastest rounds; ``ours_over_least_paired_median`` the median of the rounds'
own ratios.

Run: ``CAMCHECK_BENCH_THREADS=1 pytest benchmarks/test_quality_cost.py -p no:xdist --benchmark-only
--benchmark-json=quality.json`` (one torch thread, as the figures in README and notes were taken).
``CAMCHECK_BENCH_QUALITY_MODELS`` (default camcheck-shapes,resnet18) chooses the models: the bundled model on a
scene picture through its own preprocessing, torchvision models on a 224 x 224 tensor.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import pytest
import torch
from PIL import Image

from pytest_camcheck import assert_faithful, assert_sane, assert_stable, compute_cam, quality
from pytest_camcheck.engine.core import cam_of_copies
from pytest_camcheck.scenes import HELD_OUT, make_scene

from .conftest import model
from .test_cost import DEVICE, Companion, _env, _measure

MODELS = _env("CAMCHECK_BENCH_QUALITY_MODELS", "camcheck-shapes,resnet18")
STEPS, ORDERINGS, SAMPLES = 20, quality.DEFAULT_ORDERINGS, 8
FORWARDS = 2 + (1 + ORDERINGS) * (STEPS - 1)
ROUNDS_BUDGET_S = 6.0  # of least work per test


def _image(name: str) -> Any:
    if name.startswith("camcheck-"):
        return Image.fromarray(make_scene(HELD_OUT + 330_000).image)
    return torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(1)).to(DEVICE)


def _least_forwards(net: torch.nn.Module, x: torch.Tensor) -> Companion:
    def call(_: Any) -> object:
        with torch.inference_mode():
            return [net(x[i:i + quality.FORWARD_CHUNK]) for i in range(0, x.shape[0], quality.FORWARD_CHUNK)]
    return Companion("least", call)


def _rounds(least: Companion) -> int:
    """One untimed call of the least work (so neither side's first call, with its allocations, is timed), and from
    its time the number of rounds."""
    start = time.perf_counter()
    least.call(None)
    return max(3, min(15, int(ROUNDS_BUDGET_S / (time.perf_counter() - start))))


def _subject(benchmark: Any, name: str) -> tuple[torch.nn.Module, Any, Any]:
    """The model, its input and its top-1 map (whose class and layer every check explains), in this device's
    group."""
    benchmark.group = f"quality {DEVICE}"
    net, image = model(name, DEVICE), _image(name)
    return net, image, compute_cam(net, image)


def _run(benchmark: Any, ours: Any, companions: list[Companion], info: dict[str, Any], least: str) -> None:
    """Time ours interleaved with the companions (the first is the least work, described by ``least``) and record
    the ratios."""
    rounds = _rounds(companions[0])
    for other in companions[1:]:
        other.call(None)
    _measure(benchmark, ours, companions, rounds, 0, info, slow_s=math.inf)
    # the median of the rounds' own ratios (each round times the least work just before ours): less moved than
    # the ratio of the fastest rounds when this virtual machine's speed changes from one second to the next
    pairs = [o / l for o, l in zip(benchmark.stats.stats.data, companions[0].times)]
    benchmark.extra_info["ours_over_least_paired_median"] = statistics.median(pairs)
    _record(benchmark, least)


def _record(benchmark: Any, least: str) -> None:
    info = benchmark.extra_info
    info["least"] = least
    info["least_s"] = info["least_s"] if "least_s" in info else None
    paired = info.get("ours_next_to_least_s", info["ours_s"])
    info["ours_over_least"] = paired / info["least_s"]
    info.pop("least_over_ours", None)


@pytest.mark.parametrize("name", MODELS)
def test_faithful_cost(benchmark: Any, name: str) -> None:
    net, image, first = _subject(benchmark, name)
    target = first.target
    x = quality._Source(net, image, {}).clean_input
    batch = x.expand(FORWARDS, -1, -1, -1).clone()
    map_call = Companion("map", lambda _: compute_cam(net, image, target))
    forwards = _least_forwards(net, batch)
    least = Companion("least", lambda _: (map_call.call(None), forwards.call(None)))
    _run(benchmark, lambda: assert_faithful(net, image, target, steps=STEPS, min_gain=-1.0), [least],
         dict(case="quality", check="faithful", model=name, steps=STEPS, orderings=ORDERINGS),
         f"1 map + {FORWARDS} forwards")


@pytest.mark.parametrize("name", MODELS)
def test_sane_cost(benchmark: Any, name: str) -> None:
    net, image, first = _subject(benchmark, name)
    calls = len(quality.cascade_groups(net)) + 1

    def least_calls(_: Any) -> list:  # as ours: the layer chosen once, then fixed, the image prepared once for it
        explain = cam_of_copies(net, image, first.target, layer=first.layer)
        return [compute_cam(net, image, first.target)] + [explain(net) for _ in range(calls - 1)]

    original, *steps = quality.sanity(net, image, first.target).maps  # the maps the check measures

    def least_measured(_: Any) -> list:
        least_calls(None)
        ranks = quality._average_ranks(original)
        return quality._in_threads(lambda m: quality._similarity(original, ranks, m), steps)

    least = Companion("least", least_calls)
    whole = Companion("calls", lambda _: [compute_cam(net, image, first.target)] + [
        compute_cam(net, image, first.target, layer=first.layer) for _ in range(calls - 1)])
    _run(benchmark, lambda: assert_sane(net, image, first.target, max_similarity=1.0),
         [least, whole, Companion("measured", least_measured)],
         dict(case="quality", check="sane", model=name, steps=calls - 1),
         f"{calls} Grad-CAM calls, the image prepared once")
    info = benchmark.extra_info
    for other in ("calls", "measured"):
        info[f"ours_over_{other}"] = info["ours_s"] / info[f"{other}_s"]
        info.pop(f"{other}_over_ours", None)


@pytest.mark.parametrize("name", MODELS)
def test_stable_cost(benchmark: Any, name: str) -> None:
    net, image, first = _subject(benchmark, name)
    target = first.target
    batch = [image] * (SAMPLES + 1) if isinstance(image, Image.Image) else image.expand(SAMPLES + 1, -1, -1, -1)

    measured = quality.stability(net, image, target, samples=SAMPLES)  # the maps the check measures
    clean, perturbed = measured.clean.heatmap, [r.heatmap for r in measured.perturbed]

    def least_measured(_: Any) -> list:
        compute_cam(net, batch, target)
        return quality._in_threads(lambda m: quality.map_similarity_ssim(clean, m), perturbed)

    least = Companion("least", lambda _: compute_cam(net, batch, target))
    _run(benchmark, lambda: assert_stable(net, image, target, samples=SAMPLES, min_similarity=-1.0),
         [least, Companion("measured", least_measured)],
         dict(case="quality", check="stable", model=name, samples=SAMPLES), f"1 Grad-CAM call on {SAMPLES + 1} images")
    info = benchmark.extra_info
    info["ours_over_measured"] = info["ours_s"] / info["measured_s"]
    info.pop("measured_over_ours", None)
