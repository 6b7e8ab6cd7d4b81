"""The cam_benchmark fixture in real pytest sessions: JSON output with extra_info, and xdist degrading loudly."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_camcheck.benchmarking import time_forward

pytest_plugins = ["pytester"]

USER_TEST = """
import torch, torchvision

def test_map_cost(cam_benchmark):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    result = cam_benchmark(model, torch.rand(2, 3, 64, 64), target=[0, 1], method="gradcam", rounds=3)
    assert len(result) == 2 and result[0].layer == "layer4"
"""


def test_json_output_holds_the_extra_info(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cost=USER_TEST)
    result = pytester.runpytest("--benchmark-json=out.json", "-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    bench = json.loads((pytester.path / "out.json").read_text())["benchmarks"][0]
    info = bench["extra_info"]
    assert (info["method"], info["layer"], info["batch"], info["device"], info["dtype"]) == (
        "gradcam", "layer4", 2, "cpu", "float32")
    assert info["forward_median_s"] > 0
    assert info["ratio_to_forward"] == pytest.approx(bench["stats"]["median"] / info["forward_median_s"])
    assert bench["stats"]["rounds"] == 3


INTERLEAVED_TEST = """
import torch, torchvision

def test_order(cam_benchmark):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    calls = []
    model.register_forward_pre_hook(
        lambda m, a: calls.append("map" if model.layer4._forward_hooks else "forward"))
    cam_benchmark(model, torch.rand(3, 64, 64), target=1, layer="layer4", rounds=3, warmup=1)
    # one map before timing (to read what was computed), then before each round (warm-up too) one bare forward
    assert calls == ["map"] + ["forward", "map"] * 4, calls
"""


def test_the_forward_is_timed_interleaved_with_the_map(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order=INTERLEAVED_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=1)


STEP_CLOCK = """
import itertools, os

_ticks = itertools.count()
STEP = float(os.environ["CAMCHECK_TEST_CLOCK_STEP"])


def clock():
    return next(_ticks) * STEP
"""


def test_save_and_compare_fail_work_with_the_fixture(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved run is the baseline; the same test fails ``--benchmark-compare-fail`` once it is made 16 times
    slower, and passes it unchanged. The timer pytest-benchmark reads is a clock that advances one fixed step
    per reading (``--benchmark-timer``), so every round lasts exactly one step: the slowdown is injected by
    changing the step, and no result depends on how busy the machine is."""
    pytester.makepyfile(test_cost=USER_TEST, step_clock=STEP_CLOCK)
    pytester.syspathinsert()
    common = ["-p", "no:cacheprovider", "-p", "no:xdist", "--benchmark-storage=file://./bench",
              "--benchmark-timer=step_clock.clock"]
    monkeypatch.setenv("CAMCHECK_TEST_CLOCK_STEP", "0.001")
    pytester.runpytest(*common, "--benchmark-save=base").assert_outcomes(passed=1)
    saved = json.loads(next((pytester.path / "bench").rglob("0001_base.json")).read_text())["benchmarks"][0]
    assert saved["stats"]["median"] == pytest.approx(0.001) and saved["stats"]["rounds"] == 3
    same = pytester.runpytest(*common, "--benchmark-compare=0001", "--benchmark-compare-fail=median:5%")
    same.assert_outcomes(passed=1)
    assert same.ret == 0
    monkeypatch.setenv("CAMCHECK_TEST_CLOCK_STEP", "0.016")
    slower = pytester.runpytest(*common, "--benchmark-compare=0001", "--benchmark-compare-fail=median:50%")
    assert slower.ret != 0
    assert "Performance has regressed" in slower.stdout.str() + slower.stderr.str()


def test_under_xdist_it_warns_and_still_computes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cost=USER_TEST)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "-p", "no:cacheprovider", "-W",
                                           "always::pytest.PytestWarning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*cam_benchmark: no timing was taken*-p no:xdist*"])


def test_bad_rounds_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cost=USER_TEST.replace("rounds=3", "rounds=0"))
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*rounds=0*pass rounds >= 1*"])


def test_time_forward_restores_training_flags() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Dropout()).train()
    model[1].eval()
    assert time_forward(model, torch.rand(1, 3, 8, 8), rounds=2) > 0
    assert model.training and model[0].training and not model[1].training
