"""Map regression checks: baseline files, comparisons that tolerate numeric noise and catch retrain-like drift,
errors for broken baselines, and the ``cam_regression`` fixture end to end (first run, update, xdist)."""

from __future__ import annotations

import copy
import hashlib
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_camcheck import CamCheckError, compute_cam, context
from pytest_camcheck.bundled import bundled_preprocess, load_bundled
from pytest_camcheck.regression import (
    DEFAULT_SPEARMAN_MIN, DEFAULT_SSIM_MIN, CamRegression, baseline_location, check_threshold, read_baseline,
    write_baseline,
)
from pytest_camcheck.report import CheckReport
from pytest_camcheck.scenes import HELD_OUT, make_scene
from tests.models import SmallCNN
from tests.sessions import LEAN

pytest_plugins = ["pytester"]

SCENES = [make_scene(HELD_OUT + 700 + i) for i in range(4)]


@pytest.fixture
def records(tmp_path: Path):
    seen: list[context.CheckRecord] = []
    before = context.artifacts_dir()
    context.set_artifacts_dir(tmp_path / "artifacts")
    context.add_listener(seen.append)
    yield seen
    context.remove_listener(seen.append)
    context.set_artifacts_dir(before)


def model() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


def perturbed(net: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    """Every weight times (1 + scale * N(0, 1)): what retraining from another seed or on other data does."""
    out = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=g))
    return out


def tf32_rounded(net: torch.nn.Module) -> torch.nn.Module:
    """Weights rounded to 10 mantissa bits, as TF32 convolutions on an NVIDIA GPU see them."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        for p in out.parameters():
            bits = p.view(torch.int32)
            bits.copy_(((bits + 0x1000) >> 13) << 13)
    return out


def reinit_last_stage(net: SmallCNN) -> SmallCNN:
    out = copy.deepcopy(net)
    torch.manual_seed(5)
    out.features[3].reset_parameters()
    return out


def page_images(path: Path) -> int:
    return path.read_text().count('<img src="data:image/png;base64,')


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def first_run(folder: Path, net: torch.nn.Module, image) -> None:
    with pytest.raises(AssertionError, match="baseline not found, created"):
        CamRegression(folder, "test_x").check(net, image, 0)


def test_first_run_creates_and_fails_then_passes(tmp_path: Path, records: list) -> None:
    folder, net, image = tmp_path / "test_mod", model(), SCENES[0].image
    with pytest.raises(AssertionError) as err:
        CamRegression(folder, "test_x[a b]").check(net, image, 0)
    (npz,) = folder.glob("test_x_a_b-gradcam-features-t0-*.npz")  # readable, then a hash of the exact test id
    assert str(npz) in str(err.value) and "review and commit it" in str(err.value)
    assert sorted(p.name for p in folder.iterdir()) == [npz.name, npz.with_suffix(".png").name]
    assert records[-1].passed is False and records[-1].overlay == npz.with_suffix(".png")

    reg = CamRegression(folder, "test_x[a b]")
    result = reg.check(net, image, 0)
    assert result.heatmap.shape == image.shape[:2] and reg.written == []
    rec = records[-1]
    assert rec.check == "regression" and rec.passed and rec.metrics == {"ssim": 1.0, "spearman": 1.0}
    assert rec.thresholds == {"ssim_min": DEFAULT_SSIM_MIN, "spearman_min": DEFAULT_SPEARMAN_MIN}
    assert rec.overlay is None

    baseline = read_baseline(npz)
    np.testing.assert_array_equal(baseline.heatmap, result.heatmap)
    assert baseline.meta | {"torch_version": "", "camcheck_version": ""} == {
        "format_version": 1, "method": "gradcam", "layer": "features", "target": 0, "label": "",
        "image_size": list(image.shape[:2]), "device": "cpu", "torch_version": "", "camcheck_version": "",
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baselines of model() on the first three scenes, as basenames "0", "1", "2"."""
    folder = tmp_path_factory.mktemp("shared")
    for i, scene in enumerate(SCENES[:3]):
        CamRegression(folder, "test_x", update=True).check(model(), scene.image, 0, basename=str(i))
    return folder


@pytest.mark.parametrize("variant", ["threads", "float64", "tf32", "input noise"])
def test_numeric_noise_passes_the_default_thresholds(shared: Path, records: list, variant: str) -> None:
    net = model()
    other, images = net, [s.image for s in SCENES[:3]]
    if variant == "float64":
        other = copy.deepcopy(net).double()
    elif variant == "tf32":
        other = tf32_rounded(net)
    elif variant == "input noise":
        rng = np.random.default_rng(0)
        images = [np.clip(im.astype(int) + rng.integers(-1, 2, im.shape), 0, 255).astype(np.uint8) for im in images]
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if variant == "threads" else threads)
    try:
        for i, image in enumerate(images):
            CamRegression(shared, "test_x").check(other, image, 0, basename=str(i))
    finally:
        torch.set_num_threads(threads)
    assert min(r.metrics["ssim"] for r in records) > 0.99 and len(records) == 3


@pytest.mark.parametrize("drift", ["weights x (1 + 0.2 N)", "last stage re-initialised"])
def test_retrain_like_drift_fails_and_changes_no_file(shared: Path, records: list, drift: str) -> None:
    before = digest(shared)
    other = perturbed(model(), 0.2) if drift.startswith("weights") else reinit_last_stage(model())
    for i, scene in enumerate(SCENES[:3]):
        with pytest.raises(AssertionError) as err:
            CamRegression(shared, "test_x").check(other, scene.image, 0, basename=str(i))
        message, rec = str(err.value), records[-1]
        assert "the map moved away from its baseline" in message and "--camcheck-update" in message
        assert f"SSIM {rec.metrics['ssim']:.4f}, required >= {DEFAULT_SSIM_MIN:g}" in message
        assert "<-- too low" in message
        assert not rec.passed
        assert rec.metrics["ssim"] < DEFAULT_SSIM_MIN or rec.metrics["spearman"] < DEFAULT_SPEARMAN_MIN
        assert rec.overlay is not None and rec.overlay.is_file() and str(rec.overlay) in message
        for name in ("baseline", "current", "difference"):
            assert f"{name} picture: " in message
    assert digest(shared) == before


def test_trained_model_noise_passes_and_retraining_fails(tmp_path: Path, records: list) -> None:
    net, kw = load_bundled("camcheck-shapes"), {"preprocess": bundled_preprocess("camcheck-shapes")}
    scenes = [make_scene(HELD_OUT + 900 + i) for i in range(3)]
    for i, scene in enumerate(scenes):
        CamRegression(tmp_path, "test_x", update=True).check(net, scene.image, scene.label, basename=str(i), **kw)
    retrained = copy.deepcopy(net)
    torch.manual_seed(5)
    for module in retrained.features.stage3.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for i, scene in enumerate(scenes):
        CamRegression(tmp_path, "test_x").check(copy.deepcopy(net).double(), scene.image, scene.label,
                                                basename=str(i), **kw)
        noisy = np.clip(scene.image.astype(int) + np.random.default_rng(i).integers(-1, 2, scene.image.shape), 0, 255)
        CamRegression(tmp_path, "test_x").check(net, noisy.astype(np.uint8), scene.label, basename=str(i), **kw)
        with pytest.raises(AssertionError, match="the map moved away from its baseline"):
            CamRegression(tmp_path, "test_x").check(retrained, scene.image, scene.label, basename=str(i), **kw)
    assert [r.passed for r in records[3:]] == [True, True, False] * 3


def test_update_rewrites_failing_baselines_and_leaves_passing_ones(tmp_path: Path, records: list) -> None:
    net, image = model(), SCENES[1].image
    first_run(tmp_path, net, image)
    npz = tmp_path / "test_x-gradcam-features-t0.npz"
    stamp = npz.stat().st_mtime_ns
    reg = CamRegression(tmp_path, "test_x", update=True)
    reg.check(net, image, 0)
    assert reg.written == [] and npz.stat().st_mtime_ns == stamp

    other = perturbed(net, 0.2)
    reg = CamRegression(tmp_path, "test_x", update=True)
    reg.check(other, image, 0)
    assert reg.written == [npz, npz.with_suffix(".png")]
    assert records[-1].passed and "baseline updated" in records[-1].message
    CamRegression(tmp_path, "test_x").check(other, image, 0)

    reg = CamRegression(tmp_path / "new", "test_x", update=True)
    reg.check(net, image, 0)
    assert [p.name for p in reg.written] == [npz.name, npz.with_suffix(".png").name]


def test_files_are_keyed_by_method_layer_target_basename_and_repeat_but_not_device(tmp_path: Path) -> None:
    net, image = model(), SCENES[0].image
    reg = CamRegression(tmp_path, "test_x", update=True, device="cpu")
    reg.check(net, image, 0)
    reg.check(net, image, 0)
    reg.check(net, image, 1)
    reg.check(net, image, 0, method="layercam")
    reg.check(net, image, 0, layer="features.2")
    reg.check(net, image, 0, basename="left")
    names = sorted(p.name for p in reg.written if p.suffix == ".npz")
    assert names == sorted([
        "test_x-gradcam-features-t0.npz", "test_x-gradcam-features-t0-2.npz", "test_x-gradcam-features-t1.npz",
        "test_x-layercam-features-t0.npz", "test_x-gradcam-features.2-t0.npz", "test_x-left-gradcam-features-t0.npz",
    ])
    again = CamRegression(tmp_path, "test_x", device=None)
    again.check(net, image, 0)
    again.check(net, image, 0)
    assert again.written == []

    long = CamRegression(tmp_path, "test_" + "p" * 300, update=True)
    long.check(net, image, 0)
    assert len(long.written[0].name) <= 124


def test_baseline_bytes_are_deterministic(tmp_path: Path) -> None:
    result = compute_cam(model(), SCENES[0].image, 0)
    assert write_baseline(tmp_path / "a.npz", result, "cpu", replace=False)
    assert write_baseline(tmp_path / "b.npz", result, "cpu", replace=False)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert data["heatmap"].dtype == np.float32


def test_concurrent_creation_publishes_exactly_one_whole_file(tmp_path: Path) -> None:
    net = model()
    results = [compute_cam(net, s.image[:96, :96], 0) for s in SCENES[:2]]
    for attempt in range(20):
        path = tmp_path / f"race{attempt}.npz"
        won: list = [None, None]
        start = threading.Barrier(2)

        def create(i: int) -> None:
            start.wait()
            won[i] = write_baseline(path, results[i], "cpu", replace=False)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won) == [False, True]
        np.testing.assert_array_equal(read_baseline(path).heatmap, results[won.index(True)].heatmap)
    assert not list(tmp_path.glob(".*.tmp"))


def _object_npz(path: Path) -> None:
    np.savez(path, heatmap=np.array([{"x": 1}], dtype=object))


def _foreign_npz(path: Path) -> None:
    np.savez(path, weights=np.zeros(3))


def _npy(path: Path) -> None:
    with open(path, "wb") as out:
        np.save(out, np.zeros((4, 4)))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _bad_values(path: Path) -> None:
    with np.load(path) as data:
        arrays = dict(data)
    arrays["heatmap"] = arrays["heatmap"] * np.nan
    np.savez(path, **arrays)


def _future_format(path: Path) -> None:
    with np.load(path) as data:
        arrays = dict(data)
    arrays["format_version"] = np.int64(99)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage,problem", [
    (lambda p: p.write_bytes(b"not a zip file"), "cannot be read"),
    (_truncated, "cannot be read"),
    (_object_npz, "cannot be read"),
    (_foreign_npz, "is not a camcheck baseline: it lacks heatmap"),
    (_npy, "is not a camcheck baseline (a single array"),
    (_bad_values, "holds an invalid map"),
    (_future_format, "has format version 99"),
])
def test_broken_baseline_is_a_clear_error_then_update_replaces_it(tmp_path: Path, records: list, damage,
                                                                   problem: str) -> None:
    net, image = model(), SCENES[0].image
    first_run(tmp_path, net, image)
    npz = tmp_path / "test_x-gradcam-features-t0.npz"
    damage(npz)
    with pytest.raises(CamCheckError) as err:
        CamRegression(tmp_path, "test_x").check(net, image, 0)
    message = str(err.value)
    assert str(npz) in message and problem in message
    assert "delete the file, or rerun with --camcheck-update" in message
    reg = CamRegression(tmp_path, "test_x", update=True)
    reg.check(net, image, 0)
    assert reg.written[0] == npz and read_baseline(npz).meta["layer"] == "features"


@pytest.mark.parametrize("update", [False, True])
def test_a_preview_that_cannot_be_written_leaves_no_unannounced_baseline(tmp_path: Path, records: list,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         update: bool) -> None:
    net, image = model(), SCENES[0].image
    npz = tmp_path / "test_x-gradcam-features-t0.npz"
    npz.with_suffix(".png").mkdir(parents=True)
    with pytest.raises(CamCheckError, match=r"test_x-gradcam-features-t0.png: it is a folder"):
        CamRegression(tmp_path, "test_x", update=update).check(net, image, 0)
    assert not npz.exists()
    npz.with_suffix(".png").rmdir()

    def refused(*args, **kwargs):
        raise CamCheckError("cannot write the preview: disk full")

    monkeypatch.setattr("pytest_camcheck.regression.save_png", refused)  # fails after the baseline was published
    reg = CamRegression(tmp_path, "test_x", update=update)
    with pytest.raises(CamCheckError, match="disk full"):
        reg.check(net, image, 0)
    assert not npz.exists() and reg.written == [] and list(tmp_path.glob("*.np*")) == []


def test_a_failed_preview_under_update_puts_the_reviewed_baseline_back(tmp_path: Path, records: list,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    net, image = model(), SCENES[0].image
    first_run(tmp_path, net, image)
    npz = tmp_path / "test_x-gradcam-features-t0.npz"
    reviewed, preview = npz.read_bytes(), npz.with_suffix(".png").read_bytes()
    torch.manual_seed(123)
    other = model()
    for p in other.parameters():
        p.data.normal_()  # another map: the update replaces the baseline

    def refused(*args, **kwargs):
        raise CamCheckError("cannot write the preview: disk full")

    monkeypatch.setattr("pytest_camcheck.regression.save_png", refused)
    reg = CamRegression(tmp_path, "test_x", update=True)
    with pytest.raises(CamCheckError, match="disk full"):
        reg.check(other, image, 0)
    assert npz.read_bytes() == reviewed and npz.with_suffix(".png").read_bytes() == preview and reg.written == []
    monkeypatch.undo()
    CamRegression(tmp_path, "test_x", update=True).check(other, image, 0)
    assert npz.read_bytes() != reviewed  # the update itself does replace it, once the preview can be written


def test_changed_image_size_or_renamed_file_are_errors(tmp_path: Path) -> None:
    net, image = model(), SCENES[0].image
    first_run(tmp_path, net, image)
    with pytest.raises(CamCheckError, match=r"holds a map of \d+x\d+ px but the image is now 64x48 px.*"
                                            r"--camcheck-update"):
        CamRegression(tmp_path, "test_x").check(net, image[:48, :64], 0)
    shutil.copy(tmp_path / "test_x-gradcam-features-t0.npz", tmp_path / "test_x-gradcam-features-t1.npz")
    with pytest.raises(CamCheckError, match="holds the map of method gradcam, layer features, target 0, not of this"):
        CamRegression(tmp_path, "test_x").check(net, image, 1)


def test_empty_maps(tmp_path: Path, records: list) -> None:
    net, image = model(), SCENES[2].image
    dead = copy.deepcopy(net)
    with torch.no_grad():
        dead.fc.weight.zero_()
    assert compute_cam(dead, image, 0).empty
    first_run(tmp_path, net, image)
    with pytest.raises(AssertionError, match="the current map is EMPTY"):
        CamRegression(tmp_path, "test_x").check(dead, image, 0)
    assert records[-1].metrics == {"ssim": 0.0, "spearman": 0.0}

    first_run(tmp_path / "empty", dead, image)
    CamRegression(tmp_path / "empty", "test_x").check(dead, image, 0)
    assert records[-1].passed
    with pytest.raises(AssertionError, match="the baseline map is EMPTY"):
        CamRegression(tmp_path / "empty", "test_x").check(net, image, 0)


def test_thresholds_per_instance_and_per_call(tmp_path: Path, records: list) -> None:
    net, image = model(), SCENES[3].image
    first_run(tmp_path, net, image)
    other = perturbed(net, 0.2)
    CamRegression(tmp_path, "test_x", ssim_min=-1, spearman_min=-1).check(other, image, 0)
    CamRegression(tmp_path, "test_x").check(other, image, 0, ssim_min=-1.0, spearman_min=-1)
    assert records[-1].thresholds == {"ssim_min": -1.0, "spearman_min": -1.0}
    with pytest.raises(AssertionError):
        CamRegression(tmp_path, "test_x", ssim_min=-1, spearman_min=-1).check(other, image, 0, spearman_min=0.99)
    assert check_threshold("spearman_min", np.float32(-0.5)) == -0.5
    assert CamRegression(tmp_path, "test_x", ssim_min=np.float64(0.5), spearman_min=torch.tensor(0.25)).spearman_min == 0.25
    for bad in (1.5, float("nan"), float("inf"), "0.8", True, None):
        with pytest.raises(CamCheckError, match=r"is not a valid threshold; pass a finite number between -1 and 1 "
                                                r"\(default 0.95\)"):
            CamRegression(tmp_path, "test_x", ssim_min=bad)
    with pytest.raises(CamCheckError, match="one image and one target at a time"):
        CamRegression(tmp_path, "test_x").check(net, image, [0, 1])


def test_tensor_input_without_picture_and_pass_pictures(tmp_path: Path, records: list) -> None:
    net, x = model(), torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(0))
    first_run(tmp_path, net, x)
    CamRegression(tmp_path, "test_x", pass_pictures=True).check(net, x, 0)
    assert records[-1].passed and records[-1].overlay.is_file()
    with pytest.raises(AssertionError):
        CamRegression(tmp_path, "test_x").check(perturbed(net, 0.3), x, 0)


def test_baseline_location() -> None:
    folder, name = baseline_location(Path("/r/tests/test_m.py"), "test_a[x/y-1.5]")
    assert folder == Path("/r/tests/test_m") and name.startswith("test_a_x_y-1.5-") and len(name) == 15 + 12
    assert baseline_location(Path("t.py"), "test_plain")[1] == "test_plain"


# --- end to end, through pytest ---------------------------------------------------------------------------------

TESTS = '''
import copy, os
import pytest, torch
from pytest_camcheck.report import CheckReport
from pytest_camcheck.scenes import HELD_OUT, make_scene
from tests_models import SmallCNN

def net():
    torch.manual_seed(0)
    m = SmallCNN().eval()
    if os.environ.get("DRIFT"):
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
    return m

@pytest.mark.parametrize("seed", [0, 1])
def test_map(cam_regression, seed):
    image = make_scene(HELD_OUT + seed).image
    cam_regression.check(net(), image, 0)

def test_two_targets(cam_regression):
    image = make_scene(HELD_OUT + 9).image
    for target in (0, 1):
        cam_regression.check(net(), image, target)
'''


@pytest.fixture
def suite(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(test_maps=TESTS)
    return project


# --assert=plain: each in-process run would otherwise spend a second re-compiling the plugins' modules for
# assertion rewriting.
ARGS = (*LEAN, "--assert=plain", "--camcheck-device=cpu")


def test_fixture_first_run_pass_drift_update(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = suite.path / "test_maps"
    result = suite.runpytest(*ARGS)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*baseline not found, created: *test_maps*test_map_0-gradcam-features-t0-*.npz*",
                                 "*review and commit it*"])
    assert len(list(folder.glob("*.npz"))) == 3 and len(list(folder.glob("*.png"))) == 3
    suite.runpytest(*ARGS).assert_outcomes(passed=2, failed=1)
    suite.runpytest(*ARGS).assert_outcomes(passed=3)

    before = digest(folder)
    monkeypatch.setenv("DRIFT", "1")
    result = suite.runpytest(*ARGS)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*the map moved away from its baseline*", "*SSIM *, required >= 0.95*"])
    assert digest(folder) == before

    suite.runpytest(*ARGS, "--camcheck-ssim-min=-1", "--camcheck-spearman-min=-1").assert_outcomes(passed=3)

    result = suite.runpytest(*ARGS, "--camcheck-update")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*camcheck: 8 baseline files written*", "*test_map_1-gradcam-features-t0-*.npz"])
    assert digest(folder).keys() == before.keys() and digest(folder) != before

    monkeypatch.delenv("DRIFT")
    suite.makeini("[pytest]\ncamcheck_update = true\n")
    suite.runpytest(*ARGS).assert_outcomes(passed=3)
    assert digest(folder) == before

    (folder / "test_two_targets-gradcam-features-t1.npz").write_bytes(b"garbage")
    suite.makeini("[pytest]\n")
    result = suite.runpytest(*ARGS, "-k", "two_targets")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CamCheckError: baseline *test_two_targets-gradcam-features-t1.npz cannot be read*"])


CLASSES = '''
import torch
from pytest_camcheck.scenes import HELD_OUT, make_scene
from tests_models import SmallCNN

def net():
    torch.manual_seed(0)
    return SmallCNN().eval()

def test_map(cam_regression):
    cam_regression.check(net(), make_scene(HELD_OUT + 1).image, 0)

class TestA:
    def test_map(self, cam_regression):
        cam_regression.check(net(), make_scene(HELD_OUT + 2).image, 0)

class TestB:
    class TestInner:
        def test_map(self, cam_regression):
            cam_regression.check(net(), make_scene(HELD_OUT + 3).image, 0)
'''


def test_same_named_tests_in_classes_never_share_a_baseline(project: pytest.Pytester) -> None:
    project.makepyfile(test_classes=CLASSES)
    folder = project.path / "test_classes"
    result = project.runpytest(*ARGS)
    result.assert_outcomes(failed=3)
    # counted in the failure sections only: on CI (the CI variable set) pytest's short summary repeats each message
    # untruncated, so a count over the whole output would depend on where the suite runs
    assert sum(line.startswith("E ") and "baseline not found, created" in line for line in result.outlines) == 3
    names = sorted(p.name for p in folder.glob("*.npz"))
    assert len(names) == 3 and "test_map-gradcam-features-t0.npz" in names  # module-level names are unchanged
    assert [n.split("-")[0] for n in names] == ["TestA_test_map", "TestB_TestInner_test_map", "test_map"]
    before = digest(folder)
    project.runpytest(*ARGS).assert_outcomes(passed=3)
    project.runpytest(*ARGS, "--camcheck-update").assert_outcomes(passed=3)
    assert digest(folder) == before


def test_xdist_creates_baselines_and_merges_the_report(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = suite.runpytest(*ARGS, "-n", "2", "--camcheck-report=out/report.html",
                             "--camcheck-report-json=out/report.json")
    result.assert_outcomes(failed=3)
    assert len([read_baseline(p) for p in (suite.path / "test_maps").glob("*.npz")]) == 3

    report = CheckReport.from_json((suite.path / "out" / "report.json").read_text())
    assert [c["check"] for c in report.checks] == ["regression"] * 3 and not any(c["passed"] for c in report.checks)
    assert {k: v["outcome"] for k, v in report.tests.items()} == dict.fromkeys(
        ["test_maps.py::test_map[0]", "test_maps.py::test_map[1]", "test_maps.py::test_two_targets"], "failed")
    assert len(report.written) == 6
    assert page_images(suite.path / "out" / "report.html") == 3
