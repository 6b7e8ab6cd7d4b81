"""cam_regression.check_dataset: the dataset rate's reviewed JSON baseline, its lifecycle and the flipped checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_camcheck import CamCheckError, load_dataset, load_model
from pytest_camcheck.errors import FileRefused
from pytest_camcheck.regression import CamRegression

FIXTURE = Path(__file__).parent.parent / "fixtures" / "shapes-coco" / "instances.json"


@pytest.fixture(scope="module")
def models():
    return load_model("camcheck-shapes"), load_model("camcheck-shapes-shortcut")


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(FIXTURE)


def test_first_run_writes_and_fails_then_passes_and_never_rewrites(tmp_path, models, dataset):
    reg = CamRegression(tmp_path, "test_rate")
    with pytest.raises(AssertionError, match=r"baseline not found, created: .*test_rate-dataset-gradcam-features.json "
                                             r"\(rate 100.0% of 8 checks\)"):
        reg.check_dataset(models[0], dataset)
    path = tmp_path / "test_rate-dataset-gradcam-features.json"
    data = json.loads(path.read_text())
    assert data["pass_rate"] == 1.0 and len(data["checks"]) == 8 and reg.written == [path]
    before = path.read_bytes()
    result = CamRegression(tmp_path, "test_rate").check_dataset(models[0], FIXTURE)
    assert result.pass_rate == 1.0 and path.read_bytes() == before


def test_a_drop_beyond_max_drop_fails_listing_the_flipped_checks(tmp_path, models, dataset):
    CamRegression(tmp_path, "t", update=True).check_dataset(models[0], dataset)
    path = tmp_path / "t-dataset-gradcam-features.json"
    before = path.read_bytes()
    with pytest.raises(AssertionError) as err:
        CamRegression(tmp_path, "t").check_dataset(models[1], dataset)
    message = str(err.value)
    now = json.loads(before)
    assert "the rate dropped by 87.5% (allowed 3.0%)" in message and "now 12.5% of 8 checks, baseline 100.0%" in message
    flipped = message.split("flipped to failing (7): ")[1].splitlines()[0]
    assert len(flipped.split(", ")) == 7 and all(f"{image} [{label}]" in message for image, label, _ in now["checks"]
                                                   if f"{image} [{label}]" in flipped)
    assert path.read_bytes() == before  # never rewritten without --camcheck-update
    assert CamRegression(tmp_path, "t").check_dataset(models[1], dataset, max_drop=0.9).pass_rate == 0.125
    updated = CamRegression(tmp_path, "t", update=True)
    updated.check_dataset(models[1], dataset)
    assert json.loads(path.read_text())["pass_rate"] == 0.125 and updated.written == [path]


def test_unreadable_baselines_are_refused_and_rewritten_on_update(tmp_path, models, dataset):
    path = tmp_path / "t-dataset-gradcam-features.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(CamCheckError, match=r"t-dataset-gradcam-features.json is not a camcheck dataset baseline "
                                            r".* Fix: delete it, or rerun with --camcheck-update"):
        CamRegression(tmp_path, "t").check_dataset(models[0], dataset)
    CamRegression(tmp_path, "t", update=True).check_dataset(models[0], dataset)
    assert json.loads(path.read_text())["pass_rate"] == 1.0


def test_a_baseline_that_is_a_link_is_never_written_through(tmp_path, models, dataset):
    outside = tmp_path / "user-file.json"
    outside.write_text("precious")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "t-dataset-gradcam-features.json").symlink_to(outside)
    with pytest.raises(CamCheckError, match="never writes through symbolic links"):
        CamRegression(tmp_path / "b", "t", update=True).check_dataset(models[0], dataset)
    assert outside.read_text() == "precious" and (tmp_path / "b" / "t-dataset-gradcam-features.json").is_symlink()


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.1"])
def test_max_drop_must_be_a_share(tmp_path, models, bad):
    with pytest.raises(CamCheckError, match="max_drop="):
        CamRegression(tmp_path, "t").check_dataset(models[0], FIXTURE, max_drop=bad)


@pytest.mark.parametrize("test_id", ["test_rate[../../../escaped]", "test_rate[a/b]", "test_rate[" + "L" * 300 + "]",
                                     "TestA::test_rate"])
def test_hostile_test_ids_stay_in_the_baseline_folder_as_map_baselines_do(tmp_path, models, dataset, test_id):
    folder = tmp_path / "tests" / "test_data"
    reg = CamRegression(folder, test_id, update=True)
    reg.check_dataset(models[0], dataset)
    (path,) = reg.written
    assert path.parent == folder and list(folder.iterdir()) == [path] and len(path.stem) <= 120
    assert list(tmp_path.rglob("*.json")) == [path]


def test_ids_differing_in_case_or_punctuation_get_their_own_baselines(tmp_path, models, dataset):
    written = []
    for test_id in ("test_rate[A]", "test_rate[a]", "test_rate[a b]", "test_rate[a_b]"):
        reg = CamRegression(tmp_path, test_id, update=True)
        reg.check_dataset(models[0], dataset)
        written += reg.written
    assert len({p.name.lower() for p in written}) == 4


def test_a_second_check_in_one_test_has_its_own_baseline_keyed_by_layer(tmp_path, models, dataset):
    reg = CamRegression(tmp_path, "t", update=True)
    reg.check_dataset(models[0], dataset)
    reg.check_dataset(models[1], dataset)  # under --camcheck-update: never rewrites the first's baseline
    reg.check_dataset(models[0], dataset, layer="features.stage1")
    first, second, layer0 = (tmp_path / name for name in (
        "t-dataset-gradcam-features.json", "t-dataset-gradcam-features-2.json",
        "t-dataset-gradcam-features.stage1.json"))
    assert reg.written == [first, second, layer0]
    assert [json.loads(p.read_text())["pass_rate"] for p in (first, second)] == [1.0, 0.125]
    again = CamRegression(tmp_path, "t")
    again.check_dataset(models[0], dataset, max_drop=0.0)
    assert again.check_dataset(models[1], dataset, max_drop=0.0).pass_rate == 0.125  # against the second's baseline
    assert again.written == []


@pytest.mark.parametrize("key, value", [("dataset", "other.json"), ("layer", "features.0"), ("method", "layercam")])
def test_a_baseline_recorded_for_another_dataset_or_layer_is_refused(tmp_path, models, dataset, key, value):
    reg = CamRegression(tmp_path, "t", update=True)
    reg.check_dataset(models[0], dataset)
    path = reg.written[0]
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {key: value}))
    with pytest.raises(CamCheckError, match=rf"dataset baseline {path} was recorded for .*{value}.*not for this check"
                                            r".*Fix: delete it, or rerun with --camcheck-update"):
        CamRegression(tmp_path, "t").check_dataset(models[0], dataset)
    updated = CamRegression(tmp_path, "t", update=True)
    updated.check_dataset(models[0], dataset)
    assert updated.written == [path] and json.loads(path.read_text())[key] == data[key]


def test_a_dangling_link_is_refused_then_removed_by_update_as_for_map_baselines(tmp_path, models, dataset):
    path = tmp_path / "t-dataset-gradcam-features.json"
    path.symlink_to(tmp_path / "nowhere" / "gone.json")
    with pytest.raises(FileRefused, match="is a dangling symbolic link .*Fix: remove the link"):
        CamRegression(tmp_path, "t").check_dataset(models[0], dataset)
    assert path.is_symlink()
    reg = CamRegression(tmp_path, "t", update=True)
    reg.check_dataset(models[0], dataset)
    assert reg.written == [path] and not path.is_symlink() and not (tmp_path / "nowhere").exists()
