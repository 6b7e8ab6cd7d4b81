"""The synthetic scenes: deterministic, exact boxes and masks, varied sizes, the pair and shortcut variants."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_camcheck.errors import CamCheckError
from pytest_camcheck.scenes import CLASSES, CUES, HELD_OUT, KINDS, WATERMARK_COLOURS, Scene, make_scene

SEEDS = range(HELD_OUT, HELD_OUT + 60)


def _scenes(kind: str, seeds: range = SEEDS, **kw: str) -> list[Scene]:
    return [make_scene(seed, kind, **kw) for seed in seeds]


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_scene_other_seed_other_scene(kind: str) -> None:
    a, b, c = make_scene(HELD_OUT + 7, kind), make_scene(HELD_OUT + 7, kind), make_scene(HELD_OUT + 8, kind)
    assert a.image.dtype == np.uint8 and a.image.ndim == 3 and a.image.shape[2] == 3
    assert np.array_equal(a.image, b.image)
    assert [o.box for o in a.objects] == [o.box for o in b.objects]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects))
    assert (a.label, a.watermark_box) == (b.label, b.watermark_box)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_kinds_and_cues_draw_different_scenes_from_one_seed() -> None:
    images = [make_scene(HELD_OUT, kind).image for kind in KINDS]
    images += [make_scene(HELD_OUT, "shortcut", cue=cue).image for cue in CUES[1:]]
    assert not any(x.shape == y.shape and np.array_equal(x, y) for i, x in enumerate(images) for y in images[i + 1:])


@pytest.mark.parametrize("kind", KINDS)
def test_boxes_are_tight_around_the_masks_on_both_axes(kind: str) -> None:
    for scene in _scenes(kind):
        height, width = scene.image.shape[:2]
        for obj in scene.objects:
            assert obj.mask.shape == (height, width) and obj.mask.dtype == bool
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            rows, cols = np.nonzero(obj.mask)
            assert (x0, x1) == (cols.min(), cols.max() + 1), "x is the column axis, end exclusive"
            assert (y0, y1) == (rows.min(), rows.max() + 1), "y is the row axis, end exclusive"
            assert obj.name == CLASSES[obj.label]


def test_masks_cover_the_painted_object() -> None:
    """Away from its outline the object is one flat colour (light texture); the band just outside is not."""
    for scene in _scenes("single", range(HELD_OUT, HELD_OUT + 30)):
        obj = scene.objects[0]
        inner = obj.mask
        for _ in range(3):
            p = np.pad(inner, 1)
            inner = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        if inner.sum() < 12:
            continue
        pixels = scene.image[inner].astype(float)
        assert pixels.std(axis=0).max() < 15
        grown = np.zeros_like(obj.mask)
        ys, xs = np.nonzero(obj.mask)
        for dy, dx in [(-3, 0), (3, 0), (0, -3), (0, 3)]:
            grown[np.clip(ys + dy, 0, grown.shape[0] - 1), np.clip(xs + dx, 0, grown.shape[1] - 1)] = True
        around = scene.image[grown & ~obj.mask].astype(float)
        assert np.abs(around - pixels.mean(axis=0)).max(axis=1).mean() > 30


def test_sizes_aspects_scales_and_classes_vary() -> None:
    scenes = _scenes("single", range(HELD_OUT, HELD_OUT + 150))
    shapes = np.array([s.image.shape[:2] for s in scenes])
    short, aspect = shapes.min(axis=1), shapes[:, 1] / shapes[:, 0]
    assert short.min() >= 96 and short.max() <= 160 and short.max() - short.min() > 40
    assert aspect.min() < 0.75 and aspect.max() > 1.4 and 0.59 <= aspect.min() and aspect.max() <= 1.71
    extent = np.array([max(o.box[2] - o.box[0], o.box[3] - o.box[1]) / min(s.image.shape[:2])
                       for s in scenes for o in s.objects])
    assert extent.min() < 0.18 and extent.max() > 0.38
    assert {s.label for s in scenes} == set(range(len(CLASSES)))
    assert all(s.watermark_box is None and len(s.objects) == 1 and s.label == s.objects[0].label for s in scenes)


def test_objects_are_anywhere_in_the_image() -> None:
    centres = np.array([((o.box[0] + o.box[2]) / 2 / s.image.shape[1], (o.box[1] + o.box[3]) / 2 / s.image.shape[0])
                        for s in _scenes("single", range(HELD_OUT, HELD_OUT + 150)) for o in s.objects])
    assert centres.min(axis=0).max() < 0.25 and centres.max(axis=0).min() > 0.75


def test_backgrounds_are_cluttered_not_flat() -> None:
    spread = []
    for scene in _scenes("single", range(HELD_OUT, HELD_OUT + 40)):
        background = scene.image[~scene.objects[0].mask]
        spread.append(background.astype(float).std(axis=0).mean())
        assert len(np.unique(background // 32, axis=0)) > 30, "many colours in every background"
    assert min(spread) > 10 and np.median(spread) > 20


def test_pair_objects_differ_in_class_and_their_boxes_are_apart() -> None:
    for scene in _scenes("pair"):
        first, second = scene.objects
        assert first.label != second.label and scene.label == first.label
        a, b = first.box, second.box
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        assert not (first.mask & second.mask).any()


def test_shortcut_watermark_sits_in_the_corner_and_codes_the_label() -> None:
    for scene in _scenes("shortcut"):
        height, width = scene.image.shape[:2]
        x0, y0, x1, y1 = scene.watermark_box
        assert width - x1 == height - y1 == round(0.1 * min(height, width)), "fixed place: bottom-right corner"
        assert 12 <= x1 - x0 == y1 - y0 <= 18
        centre = scene.image[y0 + 3:y1 - 3, x0 + 3:x1 - 3].reshape(-1, 3)
        assert np.array_equal(np.unique(centre, axis=0), np.array([WATERMARK_COLOURS[scene.label]], dtype=np.uint8))
        (obj,) = scene.objects
        assert obj.label == scene.label
        ox0, oy0, ox1, oy1 = obj.box
        assert ox1 <= x0 or x1 <= ox0 or oy1 <= y0 or y1 <= oy0


def test_shortcut_cue_can_leave_the_label_to_the_watermark_or_to_the_object() -> None:
    only_watermark = _scenes("shortcut", range(300), cue="watermark")
    agree = np.mean([s.objects[0].label == s.label for s in only_watermark])
    assert 0.05 < agree < 0.35, f"object class agrees with the label in {agree:.0%} of scenes (chance 1/6)"
    assert all(_watermark_colour(s) == WATERMARK_COLOURS[s.label] for s in only_watermark)
    only_object = _scenes("shortcut", range(300), cue="object")
    agree = np.mean([_watermark_colour(s) == WATERMARK_COLOURS[s.label] for s in only_object])
    assert 0.05 < agree < 0.35, f"watermark agrees with the label in {agree:.0%} of scenes (chance 1/6)"
    assert all(s.objects[0].label == s.label for s in only_object)


def _watermark_colour(scene: Scene) -> tuple[int, int, int]:
    x0, y0, x1, y1 = scene.watermark_box
    return tuple(int(v) for v in scene.image[(y0 + y1) // 2, (x0 + x1) // 2])


@pytest.mark.parametrize(("call", "words"), [
    (lambda: make_scene(1, "triple"), "single, pair, shortcut"),
    (lambda: make_scene(1, "single", cue="watermark"), "kind='shortcut'"),
    (lambda: make_scene(1, "shortcut", cue="label"), "both, watermark, object"),
    (lambda: make_scene(-1), "non-negative"),
])
def test_bad_arguments_name_the_fix(call, words: str) -> None:
    with pytest.raises(CamCheckError, match=words.replace("(", r"\(")):
        call()
