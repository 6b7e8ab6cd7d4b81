"""cam_regression.check_dataset: the dataset rate's reviewed JSON baseline, its lifecycle and the flipped checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_camcheck import CamCheckError, load_dataset, load_model
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
    with pytest.raises(AssertionError, match=r"baseline not found, created: .*test_rate-dataset-gradcam.json "
                                             r"\(rate 100.0% of 8 checks\)"):
        reg.check_dataset(models[0], dataset)
    path = tmp_path / "test_rate-dataset-gradcam.json"
    data = json.loads(path.read_text())
    assert data["pass_rate"] == 1.0 and len(data["checks"]) == 8 and reg.written == [path]
    before = path.read_bytes()
    result = CamRegression(tmp_path, "test_rate").check_dataset(models[0], FIXTURE)
    assert result.pass_rate == 1.0 and path.read_bytes() == before


def test_a_drop_beyond_max_drop_fails_listing_the_flipped_checks(tmp_path, models, dataset):
    CamRegression(tmp_path, "t", update=True).check_dataset(models[0], dataset)
    path = tmp_path / "t-dataset-gradcam.json"
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
    path = tmp_path / "t-dataset-gradcam.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(CamCheckError, match=r"t-dataset-gradcam.json is not a camcheck dataset baseline .* Fix: "
                                            r"delete it, or rerun with --camcheck-update"):
        CamRegression(tmp_path, "t").check_dataset(models[0], dataset)
    CamRegression(tmp_path, "t", update=True).check_dataset(models[0], dataset)
    assert json.loads(path.read_text())["pass_rate"] == 1.0


def test_a_baseline_that_is_a_link_is_never_written_through(tmp_path, models, dataset):
    outside = tmp_path / "user-file.json"
    outside.write_text("precious")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "t-dataset-gradcam.json").symlink_to(outside)
    with pytest.raises(CamCheckError, match="never writes through symbolic links"):
        CamRegression(tmp_path / "b", "t", update=True).check_dataset(models[0], dataset)
    assert outside.read_text() == "precious" and (tmp_path / "b" / "t-dataset-gradcam.json").is_symlink()


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.1"])
def test_max_drop_must_be_a_share(tmp_path, models, bad):
    with pytest.raises(CamCheckError, match="max_drop="):
        CamRegression(tmp_path, "t").check_dataset(models[0], FIXTURE, max_drop=bad)
