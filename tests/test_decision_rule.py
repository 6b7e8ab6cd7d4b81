"""The default decision rule on held-out two-object scenes with the bundled model: it passes the true object's
box and fails the other object's box, for small and large objects alike; an empty map never passes.

Seeds here are held out from training and differ from those used to calibrate the rule
(benchmarks/calibrate_rule.py uses HELD_OUT + 50_000 onwards).
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_camcheck import assert_attends_to, compute_cam, context
from pytest_camcheck.assertions import DEFAULT_RULE, required_lift
from pytest_camcheck.metrics import measure
from pytest_camcheck.regions import to_mask
from pytest_camcheck.scenes import HELD_OUT, make_scene

SEEDS = range(HELD_OUT + 90_000, HELD_OUT + 90_000 + 100)


def holds(m) -> bool:
    return (not m.empty) and m.hit and m.lift >= required_lift(DEFAULT_RULE.min_lift, m.chance)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    from pytest_camcheck.bundled import load_bundled

    model = load_bundled("camcheck-shapes")
    out = []
    for seed in SEEDS:
        scene = make_scene(seed, "pair")
        size = scene.image.shape[:2]
        maps = compute_cam(model, scene.image, [o.label for o in scene.objects])
        for k, (obj, result) in enumerate(zip(scene.objects, maps)):
            out.append({"own": measure(result.heatmap, to_mask(obj.box, size)),
                        "other": measure(result.heatmap, to_mask(scene.objects[1 - k].box, size))})
    return out


def _rates(rows: list[dict]) -> tuple[float, float]:
    return float(np.mean([holds(r["own"]) for r in rows])), float(np.mean([holds(r["other"]) for r in rows]))


def test_true_boxes_pass_and_other_objects_boxes_fail(rows: list[dict]) -> None:
    own, other = _rates(rows)
    assert own >= 0.85, f"true boxes pass {own:.1%}"
    assert other <= 0.03, f"other objects' boxes pass {other:.1%}"


def test_small_and_large_objects_alike(rows: list[dict]) -> None:
    median = np.median([r["own"].chance for r in rows])
    for group in ([r for r in rows if r["own"].chance < median], [r for r in rows if r["own"].chance >= median]):
        own, other = _rates(group)
        assert own >= 0.8 and other <= 0.05, (own, other)


def test_the_assertion_applies_the_same_rule(tmp_path) -> None:
    """The assertion itself, on a few of the scenes: passes on the object, fails on the other object."""
    from pytest_camcheck.bundled import load_bundled

    model = load_bundled("camcheck-shapes")
    context.set_artifacts_dir(tmp_path)
    try:
        decided = 0
        for seed in list(SEEDS)[:12]:
            scene = make_scene(seed, "pair")
            first, second = scene.objects
            result = compute_cam(model, scene.image, first.label)
            m = measure(result.heatmap, to_mask(first.box, scene.image.shape[:2]))
            if not holds(m):
                continue
            assert_attends_to(model, scene.image, first.name, first.box)
            with pytest.raises(AssertionError, match="camcheck attends_to failed"):
                assert_attends_to(model, scene.image, first.name, second.box)
            decided += 1
        assert decided >= 8
    finally:
        context.set_artifacts_dir(None)
