"""Agreement with the reference implementations where the definitions coincide (test-only dependencies).

- Quantus ``correlation_spearman`` (the similarity of its MPRT) on the same pairs of maps: equal to our Spearman.
  Quantus ``MPRT`` itself randomises one module with ``reset_parameters`` per step (ours: one block per step) with
  its own seeds, so its maps differ from ours: the verdicts are compared (Grad-CAM low, the edge control 1).
- Quantus ``RegionPerturbation`` (MoRF, patches ranked by summed relevance, a constant baseline, softmax outputs)
  is our deletion curve when the map is constant on its patches and each step deletes one patch: curves equal.
  Differences: Quantus reports p(clean) - p(step) on the model's input tensor and has no random reference; we
  report p(step) in the original image's pixels (through the preprocessing) and compare with random orderings.
- captum ``sensitivity_max`` given our perturbations and our maps: equal to our ``sensitivity``. Differences:
  captum perturbs the model input (we perturb the original pixels), reports the largest relative L2 change only;
  we judge SSIM per perturbation and the prediction separately.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.quality_controls import EdgeExplained
from pytest_camcheck import compute_cam, quality
from pytest_camcheck.bundled import load_bundled
from pytest_camcheck.metrics import map_similarity
from pytest_camcheck.scenes import HELD_OUT, make_scene

quantus = pytest.importorskip("quantus")
captum_metrics = pytest.importorskip("captum.metrics")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes() -> torch.nn.Module:
    return load_bundled("camcheck-shapes")


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # Quantus on the empty step's map: NaN
def test_spearman_equals_quantus_mprt_similarity(shapes: torch.nn.Module) -> None:
    from quantus.functions.similarity_func import correlation_spearman

    scene = make_scene(HELD_OUT + 320_000)
    r = quality.sanity(shapes, scene.image, scene.label)
    values = [(map_similarity(r.maps[0], m)["spearman"], correlation_spearman(r.maps[0].ravel(), m.ravel()))
              for m in r.maps[1:]]
    np.testing.assert_allclose([s.spearman for s in r.curve[1:]], [a for a, _ in values], atol=1e-9)
    np.testing.assert_allclose([s.ssim for s in r.curve[1:]], [map_similarity(r.maps[0], m)["ssim"]
                                                                for m in r.maps[1:]], atol=1e-6)
    ours, theirs = np.array([a for a, _ in values]), np.array([b for _, b in values])
    undefined = np.isnan(theirs)  # a constant (empty) map: Quantus' correlation is NaN, ours 0.0, as documented
    assert all(r.maps[1 + i].min() == r.maps[1 + i].max() for i in np.flatnonzero(undefined))
    assert (ours[undefined] == 0.0).all() and (~undefined).sum() >= 4
    np.testing.assert_allclose(ours[~undefined], theirs[~undefined], atol=1e-9)
    assert len({round(a, 3) for a in ours[~undefined]}) > 2  # different maps, not one number repeated


def _quantus_mprt(model: torch.nn.Module, x: torch.Tensor, label: int, layer: str) -> float:
    def explain(model, inputs, targets, **kwargs):
        maps = compute_cam(model, torch.as_tensor(inputs), [int(t) for t in targets], layer=layer)
        return np.stack([m.heatmap for m in maps])[:, None]

    metric = quantus.MPRT(return_last_correlation=True, disable_warnings=True, display_progressbar=False)
    scores = metric(model=model, x_batch=x[None].numpy(), y_batch=np.array([label]), a_batch=None,
                    explain_func=explain, device="cpu")
    return float(np.ravel(scores)[0])


def test_quantus_mprt_and_ours_agree_on_the_verdict(shapes: torch.nn.Module) -> None:
    from pytest_camcheck.bundled import bundled_preprocess

    scene = make_scene(HELD_OUT + 320_001)
    x = bundled_preprocess("camcheck-shapes")(__import__("PIL.Image").Image.fromarray(scene.image))
    ours = quality.sanity(shapes, x, scene.label).similarity
    theirs = _quantus_mprt(shapes, x, scene.label, "features")
    edges_ours = quality.sanity(EdgeExplained(shapes), x, scene.label, layer="edges").similarity
    edges_theirs = _quantus_mprt(EdgeExplained(shapes), x, scene.label, "edges")
    assert edges_ours == pytest.approx(1.0) and edges_theirs == pytest.approx(1.0, abs=1e-6)
    limit = quality.DEFAULT_MAX_SIMILARITY
    assert ours <= limit and theirs <= limit


def test_deletion_curve_equals_quantus_region_perturbation(shapes: torch.nn.Module) -> None:
    from PIL import Image

    from pytest_camcheck.bundled import bundled_preprocess

    scene = make_scene(HELD_OUT + 320_003)
    x = bundled_preprocess("camcheck-shapes")(Image.fromarray(scene.image))
    model, label, patch = shapes, scene.label, 28
    cam = compute_cam(model, x, label).heatmap
    sums = cam.reshape(4, patch, 4, patch).sum(axis=(1, 3))  # the map's relevance per patch ranks the patches
    blocks = np.argsort(np.argsort(sums.ravel())).reshape(4, 4).astype(np.float32) / 15
    heatmap = np.kron(blocks, np.ones((patch, patch), np.float32))  # constant on each patch, all different
    ours = quality.faithfulness(model, x, label, heatmap=heatmap, steps=16, baseline="zero", orderings=1, confidence=0)
    metric = quantus.RegionPerturbation(patch_size=patch, order="morf", regions_evaluation=16, perturb_baseline=0.0,
                                        normalise=False, disable_warnings=True, display_progressbar=False)
    drops = metric(model=model, x_batch=x[None].numpy(), y_batch=np.array([label]), a_batch=heatmap[None, None],
                   device="cpu", softmax=True)
    theirs = ours.curve[0] - np.asarray(drops[0], dtype=np.float64)
    np.testing.assert_allclose(ours.curve[1:], theirs, atol=1e-5)
    assert np.ptp(ours.curve) > 0.3  # the curve moves: equal curves are not two flat lines


def test_sensitivity_equals_captum_sensitivity_max(shapes: torch.nn.Module) -> None:
    from pytest_camcheck.bundled import bundled_preprocess
    from PIL import Image

    scene = make_scene(HELD_OUT + 320_002)
    x = bundled_preprocess("camcheck-shapes")(Image.fromarray(scene.image))
    r = quality.stability(shapes, x, scene.label, noise=0.05, samples=6)
    noisy = quality._perturb(quality._Source(shapes, x, {}), 0.05, 6, 0)

    def perturb(inputs, radius):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        assert inputs.shape[0] == noisy.shape[0] and radius == 0.05
        return noisy

    def explain(inputs, **kwargs):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs  # captum hands over a tuple of tensors
        maps = compute_cam(shapes, inputs, scene.label)
        maps = maps if isinstance(maps, list) else [maps]
        return (torch.from_numpy(np.stack([m.heatmap for m in maps]).astype(np.float64)),)  # captum wants tuples

    theirs = captum_metrics.sensitivity_max(explain, x[None], perturb_func=perturb, perturb_radius=0.05,
                                            n_perturb_samples=6)
    assert float(theirs) == pytest.approx(r.sensitivity, rel=1e-4)
    assert r.sensitivity > 0
