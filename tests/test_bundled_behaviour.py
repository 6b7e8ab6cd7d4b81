"""Measured behaviour of the bundled models on 200 held-out scenes of each kind (seeds never trained on).

The clean model classifies the shapes and its Grad-CAM points at them; on the same shortcut scenes the
shortcut model's map sits on the corner watermark instead, so an "attends to the object" check fails there.
The measurement itself can fail: handing it the shortcut model where the clean one is expected collapses
the hit rate. The bundled transformer (``camcheck-shapes-vit``, trained on the clean scenes) is measured the
same way, its map from the automatic layer (its last block's patch tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pytest_camcheck import assert_attends_to, compute_cam
from pytest_camcheck.bundled import load_bundled
from pytest_camcheck.metrics import RegionMetrics, measure
from pytest_camcheck.scenes import HELD_OUT, Scene, make_scene

N_SCENES = 200
CHUNK = 100


@dataclass
class Run:
    """One model's Grad-CAM maps on a list of scenes, for one target per scene."""

    scenes: list[Scene]
    predicted: np.ndarray
    maps: list[np.ndarray]

    def on(self, box_of) -> list[RegionMetrics]:
        return [measure(m, _box_mask(box_of(s), m.shape)) for s, m in zip(self.scenes, self.maps)]

    def hit_rate(self, box_of) -> float:
        return float(np.mean([r.hit for r in self.on(box_of)]))

    def accuracy(self) -> float:
        return float(np.mean(self.predicted == [s.label for s in self.scenes]))


def _box_mask(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def _gradcam(model: torch.nn.Module, scenes: list[Scene], targets: list[int]) -> Run:
    predicted, maps = [], []
    for i in range(0, len(scenes), CHUNK):
        results = compute_cam(model, [s.image for s in scenes[i:i + CHUNK]], targets[i:i + CHUNK])
        predicted += [r.top[0][0] for r in results]
        maps += [r.heatmap for r in results]
    return Run(scenes, np.array(predicted), maps)


def _object(scene: Scene) -> tuple[int, int, int, int]:
    return scene.objects[0].box


def _watermark(scene: Scene) -> tuple[int, int, int, int]:
    return scene.watermark_box


@pytest.fixture(scope="module")
def clean() -> torch.nn.Module:
    return load_bundled("camcheck-shapes")


@pytest.fixture(scope="module")
def shortcut() -> torch.nn.Module:
    return load_bundled("camcheck-shapes-shortcut")


@pytest.fixture(scope="module")
def scenes() -> dict[str, list[Scene]]:
    return {kind: [make_scene(HELD_OUT + i, kind) for i in range(N_SCENES)] for kind in ("single", "pair", "shortcut")}


@pytest.fixture(scope="module")
def clean_single(clean, scenes) -> Run:
    return _gradcam(clean, scenes["single"], [s.label for s in scenes["single"]])


@pytest.fixture(scope="module")
def clean_shortcut(clean, scenes) -> Run:
    return _gradcam(clean, scenes["shortcut"], [s.label for s in scenes["shortcut"]])


@pytest.fixture(scope="module")
def shortcut_shortcut(shortcut, scenes) -> Run:
    return _gradcam(shortcut, scenes["shortcut"], [s.label for s in scenes["shortcut"]])


def test_clean_model_classifies_held_out_scenes(clean_single: Run) -> None:
    assert clean_single.accuracy() >= 0.95


def test_clean_model_points_at_the_object(clean_single: Run) -> None:
    assert clean_single.hit_rate(_object) >= 0.90


def test_clean_model_puts_its_energy_in_the_object_box(clean_single: Run) -> None:
    metrics = clean_single.on(_object)
    energy = np.mean([m.energy for m in metrics])
    chance = np.mean([m.chance for m in metrics])
    assert energy >= 3 * chance
    assert np.mean([m.lift > 1.5 for m in metrics]) >= 0.9


def test_clean_model_maps_are_class_discriminative_on_pairs(clean, scenes) -> None:
    pairs = scenes["pair"]
    first = _gradcam(clean, pairs, [s.objects[0].label for s in pairs])
    second = _gradcam(clean, pairs, [s.objects[1].label for s in pairs])
    a_first, b_first = first.on(lambda s: s.objects[0].box), first.on(lambda s: s.objects[1].box)
    a_second, b_second = second.on(lambda s: s.objects[0].box), second.on(lambda s: s.objects[1].box)
    assert np.mean([a.energy > b.energy for a, b in zip(a_first, b_first)]) >= 0.9
    assert np.mean([b.energy > a.energy for a, b in zip(a_second, b_second)]) >= 0.9
    assert np.mean([a.hit for a in a_first]) >= 0.8 and np.mean([b.hit for b in b_second]) >= 0.8


def test_clean_model_ignores_the_watermark(clean_shortcut: Run) -> None:
    assert clean_shortcut.accuracy() >= 0.9
    assert clean_shortcut.hit_rate(_object) >= 0.85
    assert np.mean([m.lift for m in clean_shortcut.on(_watermark)]) < 1.0


def test_shortcut_model_is_right_for_the_wrong_reason(shortcut_shortcut: Run) -> None:
    assert shortcut_shortcut.accuracy() >= 0.98
    on_object = shortcut_shortcut.on(_object)
    on_watermark = shortcut_shortcut.on(_watermark)
    assert np.mean([m.hit for m in on_object]) <= 0.15
    assert np.mean([m.lift for m in on_object]) < 1.0
    assert np.mean([m.lift for m in on_watermark]) >= 3.0
    assert np.mean([w.lift > o.lift for w, o in zip(on_watermark, on_object)]) >= 0.95
    assert np.mean([w.peak_distance < o.peak_distance for w, o in zip(on_watermark, on_object)]) >= 0.8
    assert np.median([w.peak_distance for w in on_watermark]) <= 30


def test_attends_to_object_check_fails_for_the_shortcut_model_only(clean, shortcut, scenes) -> None:
    failed = {"clean": 0, "shortcut": 0}
    chosen = scenes["shortcut"][:10]
    for scene in chosen:
        for name, model in (("clean", clean), ("shortcut", shortcut)):
            try:
                assert_attends_to(model, scene.image, scene.name, scene.objects[0].box)
            except AssertionError:
                failed[name] += 1
    assert failed["shortcut"] >= 9 and failed["clean"] <= 2, failed


def test_swapping_in_the_shortcut_model_collapses_the_hit_rate(shortcut, scenes, clean_single: Run) -> None:
    swapped = _gradcam(shortcut, scenes["single"], [s.label for s in scenes["single"]])
    assert clean_single.hit_rate(_object) >= 0.90
    assert swapped.hit_rate(_object) < 0.5
    assert swapped.accuracy() < 0.5


@pytest.fixture(scope="module")
def vit_single(scenes) -> Run:
    return _gradcam(load_bundled("camcheck-shapes-vit"), scenes["single"], [s.label for s in scenes["single"]])


def test_transformer_classifies_held_out_scenes(vit_single: Run) -> None:
    assert vit_single.accuracy() >= 0.95


def test_transformer_map_comes_from_its_last_blocks_patch_tokens(scenes) -> None:
    scene = scenes["single"][0]
    result = compute_cam(load_bundled("camcheck-shapes-vit"), scene.image, scene.label)
    assert result.layer in ("tokens_to_grid", "blocks.3")
    assert result.heatmap.shape == scene.image.shape[:2]


def test_transformer_points_at_the_object(vit_single: Run) -> None:
    metrics = vit_single.on(_object)
    assert vit_single.hit_rate(_object) >= 0.90  # measured 97.5%
    assert np.mean([m.energy for m in metrics]) >= 3 * np.mean([m.chance for m in metrics])  # measured 6.8x
    assert np.mean([m.lift > 1.5 for m in metrics]) >= 0.9  # measured 98.5%
