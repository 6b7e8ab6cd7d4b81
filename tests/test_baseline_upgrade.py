"""Baselines under their names from before the class path and the dataset key were put in baseline names: a check
whose baseline sits under its former name is refused with the rename to make, never given a new baseline silently,
and the user's file is never moved, changed or deleted."""

from __future__ import annotations

import json
import re

import pytest

from pytest_camcheck import CamCheckError
from pytest_camcheck.errors import CamCheckWarning
from pytest_camcheck.regression import CamRegression
from tests.test_dataset_regression import dataset, models  # noqa: F401 - fixtures
from tests.test_regression import ARGS, SCENES, digest, model

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("test_id, basename, old_name", [
    ("test_rate", None, "test_rate-dataset-gradcam.json"),
    ("TestA::test_rate[a b]", "x y", "test_rate[a b]-x_y-dataset-gradcam.json"),
])
def test_a_dataset_baseline_under_its_former_name_is_refused_with_the_rename(tmp_path, models, dataset, test_id,
                                                                             basename, old_name):
    recorder = CamRegression(tmp_path / "recorded", test_id, update=True)
    recorder.check_dataset(models[0], dataset, basename=basename)
    (new_name,) = [p.name for p in recorder.written]
    old = tmp_path / old_name
    data = json.loads(recorder.written[0].read_text())

    # a file under the former name recorded for another method (gradcam++ had the same former name) or dataset
    # is not this check's: the baseline is created as for any missing one
    for key, value in (("method", "gradcam++"), ("dataset", "other.json")):
        old.write_text(json.dumps(data | {key: value}))
        with pytest.raises(AssertionError, match="baseline not found, created") as err:
            CamRegression(tmp_path, test_id).check_dataset(models[0], dataset, basename=basename)
        assert old_name not in str(err.value)
        (tmp_path / new_name).unlink()

    old.write_bytes(recorder.written[0].read_bytes())
    before = old.read_bytes()
    reg = CamRegression(tmp_path, test_id)
    with pytest.raises(CamCheckError) as err:
        reg.check_dataset(models[0], dataset, basename=basename)
    message = str(err.value)
    assert f"{tmp_path / new_name} does not exist, but {old} does" in message and "Nothing was written" in message
    assert "git mv " in message and new_name in message.split("git mv ")[1] and "--camcheck-update" in message
    assert reg.written == [] and sorted(p.name for p in tmp_path.glob("*.json")) == [old_name]
    assert old.read_bytes() == before

    updated = CamRegression(tmp_path, test_id, update=True)
    with pytest.warns(CamCheckWarning, match=rf"created: .*{re.escape(new_name)}\n  note: .*is left as it was"):
        updated.check_dataset(models[0], dataset, basename=basename)
    assert updated.written == [tmp_path / new_name] and old.read_bytes() == before
    assert CamRegression(tmp_path, test_id).check_dataset(models[0], dataset, basename=basename).pass_rate == 1.0
    # a former name too long for the file system is looked for without an error
    CamRegression(tmp_path, "test_rate[" + "L" * 300 + "]", update=True).check_dataset(models[0], dataset)


CLASS_ONLY = '''
import torch
from pytest_camcheck.scenes import HELD_OUT, make_scene
from tests_models import SmallCNN

class TestA:
    def test_map(self, cam_regression):
        torch.manual_seed(0)
        cam_regression.check(SmallCNN().eval(), make_scene(HELD_OUT + 2).image, 0)
'''


def test_a_class_test_map_baseline_under_its_former_name_is_refused_with_the_rename(project: pytest.Pytester):
    project.makepyfile(test_up=CLASS_ONLY)
    folder = project.path / "test_up"
    project.runpytest(*ARGS, "--camcheck-update").assert_outcomes(passed=1)
    (new,) = folder.glob("TestA_test_map-gradcam-features-t0-*.npz")
    old = folder / "test_map-gradcam-features-t0.npz"  # the name before the class path was put in names
    for src, dst in ((new, old), (new.with_suffix(".png"), old.with_suffix(".png"))):
        src.rename(dst)
    before = digest(folder)

    result = project.runpytest(*ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E *CamCheckError: camcheck regression: this check's baseline *{new.name} does not "
                                 f"exist, but *{old.name} does*",
                                 f"E *Fix: if it is this test's baseline *rename it: git mv *{old.name} *{new.name} "
                                 f"&& git mv *{old.with_suffix('.png').name} *{new.with_suffix('.png').name}",
                                 "E *--camcheck-update*"])
    assert digest(folder) == before  # nothing written, nothing moved

    result = project.runpytest(*ARGS, "--camcheck-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*CamCheckWarning: camcheck regression: baseline created: *{new.name}*",
                                 f"*note: *{old.name}, this check's baseline under its name before*"])
    after = digest(folder)
    assert {name: after[name] for name in before} == before
    assert set(after) == set(before) | {new.name, new.with_suffix(".png").name}
    project.runpytest(*ARGS).assert_outcomes(passed=1)


MIXED = CLASS_ONLY + """
def test_map(cam_regression):
    torch.manual_seed(0)
    cam_regression.check(SmallCNN().eval(), make_scene(HELD_OUT + 2).image, 0)
"""


def test_a_former_name_a_module_level_test_may_own_is_named_not_claimed(project: pytest.Pytester):
    # test_map-gradcam-features-t0.npz is the module-level test_map's baseline and the former name of
    # TestA::test_map's: camcheck cannot tell whose it is, creates the new baseline as for any missing one and says so
    project.makepyfile(test_mixed=MIXED)
    folder = project.path / "test_mixed"
    shared = folder / "test_map-gradcam-features-t0.npz"
    project.runpytest(*ARGS, "--camcheck-update", "-k", "not TestA").assert_outcomes(passed=1, deselected=1)
    before = shared.read_bytes()
    result = project.runpytest(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "E *baseline not found, created: *TestA_test_map-gradcam-features-t0-*.npz",
        f"E *note: *{shared.name} exists and holds a map of this method, layer, target and image size. It is the "
        "name this check's baseline had before *, and the name of a module-level test_map's baseline of the same "
        "check *; this module has a module-level test_map, so camcheck cannot tell whose it is.",
        f"E *copy it over the new one: cp *{shared.name} *TestA_test_map-gradcam-features-t0-*.npz*"])
    assert shared.read_bytes() == before and len(list(folder.glob("*.npz"))) == 2

    # outside pytest the module is not known: also only said
    mine = project.path / "elsewhere" / "test_mod"
    CamRegression(mine, "test_map", update=True).check(model(), SCENES[0].image, 0)
    with pytest.raises(AssertionError, match=r"(?s)baseline not found, created: .*TestA_test_map-gradcam-features-t0-.*"
                                             r"note: .*test_map-gradcam-features-t0.npz exists .*camcheck cannot tell "
                                             r"whose it is: it does not know whether this test's module has a "
                                             r"module-level test_map"):
        CamRegression(mine, "TestA::test_map").check(model(), SCENES[0].image, 0)
