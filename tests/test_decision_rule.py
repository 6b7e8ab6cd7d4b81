"""The default decision rule on held-out two-object scenes with the bundled model: it passes the true object's
box and fails the other object's box, for small and large objects alike; an empty map never passes.

Seeds here are held out from training and differ from those used to calibrate the rule
(benchmarks/calibrate_rule.py uses HELD_OUT + 50_000 onwards).
"""

from __future__ import annotations

import numpy as np
import pytest

import math

from pytest_camcheck import assert_attends_more_to, assert_attends_to, assert_not_attends_to, compute_cam, context
from pytest_camcheck.metrics import RegionMetrics, measure
from pytest_camcheck.regions import to_mask
from pytest_camcheck.rule import DEFAULT_RULE, Rule, required_lift
from pytest_camcheck.scenes import HELD_OUT, make_scene

SEEDS = range(HELD_OUT + 90_000, HELD_OUT + 90_000 + 100)


def holds(m: RegionMetrics) -> bool:
    return DEFAULT_RULE.attends(m).passed


def metrics(*, lift: float = 3.0, chance: float = 0.1, hit: bool = True, distance: float = 0.0,
            empty: bool = False) -> RegionMetrics:
    return RegionMetrics(energy=lift * chance, chance=chance, lift=lift, hit=hit, peak=None if empty else (1, 1),
                         peak_distance=math.inf if empty else distance, rank_accuracy=0.5, empty=empty)


def test_attends_needs_pointing_and_the_capped_lift() -> None:
    rule = Rule(min_lift=1.5)
    assert rule.attends(metrics()).passed
    assert rule.attends(metrics(hit=False)).failed == ("pointing",)
    assert rule.attends(metrics(hit=False), pointing=False).passed
    assert rule.attends(metrics(lift=1.49)).failed == ("lift",)
    large = metrics(lift=1.34, chance=0.6)  # at most 1 / 0.6 = 1.67 is possible: halfway is 1.33
    assert rule.attends(large).passed and rule.attends(large).required_lift == required_lift(1.5, 0.6) < 1.5
    assert rule.attends(metrics(lift=1.3, chance=0.6)).failed == ("lift",)
    assert rule.attends(metrics(lift=3.0, chance=0.1), min_energy=0.31).failed == ("energy",)


def test_an_empty_map_fails_every_check() -> None:
    empty = metrics(lift=0.0, hit=False, empty=True)
    for verdict in (DEFAULT_RULE.attends(empty, pointing=False), DEFAULT_RULE.not_attends(empty),
                    DEFAULT_RULE.attends_more(empty, empty)):
        assert not verdict.passed and "map not empty" in verdict.failed


def test_not_attends_and_attends_more() -> None:
    rule = Rule(max_lift=1.0, min_ratio=1.5)
    assert rule.not_attends(metrics(lift=0.5, hit=False)).passed
    assert rule.not_attends(metrics(lift=0.5, hit=True)).failed == ("peak outside",)
    assert rule.not_attends(metrics(lift=1.1, hit=False)).failed == ("lift",)
    near, far = metrics(lift=3.0, distance=0.0), metrics(lift=1.0, distance=20.0)
    assert rule.attends_more(near, far).passed and rule.attends_more(near, far).ratio == 3.0
    assert rule.attends_more(far, near).failed == ("peak nearer", "ratio")
    assert rule.attends_more(near, metrics(lift=0.0, distance=30.0)).ratio == math.inf


def test_the_assertions_decide_with_the_rule(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Each assertion's pass or fail is the rule's verdict: a rule that refuses everything makes it fail."""
    from pytest_camcheck import rule as rule_module
    from pytest_camcheck.bundled import load_bundled

    model = load_bundled("camcheck-shapes")
    scene = make_scene(HELD_OUT + 3, "pair")
    first, second = scene.objects
    context.set_artifacts_dir(tmp_path)
    try:
        assert_attends_to(model, scene.image, first.name, first.box)
        assert_not_attends_to(model, scene.image, first.name, second.box)
        assert_attends_more_to(model, scene.image, first.name, first.box, second.box)
        no = rule_module.Verdict(False, {"map not empty": True, "lift": False, "pointing": False, "energy": False,
                                         "peak outside": False, "ratio": False, "peak nearer": False},
                                 required_lift=1.5, ratio=1.0)
        for name in ("attends", "not_attends", "attends_more"):
            monkeypatch.setattr(rule_module.Rule, name, lambda self, *a, **k: no)
        for check, regions in ((assert_attends_to, [first.box]), (assert_not_attends_to, [second.box]),
                               (assert_attends_more_to, [first.box, second.box])):
            with pytest.raises(AssertionError, match="camcheck .* failed"):
                check(model, scene.image, first.name, *regions)
    finally:
        context.set_artifacts_dir(None)


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
