"""Attention assertions: decisions, messages, pictures and records, on a model whose map is known."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from pytest_camcheck import (Box, CamCheckError, assert_attends_more_to, assert_attends_to, assert_not_attends_to,
                             context)
from pytest_camcheck.errors import UnseenRegionError

from .models import KnownGradient

H, W = 60, 90
KW = dict(layer="features", method="hirescam", categories=["blob", "nothing"])


def spot_model() -> KnownGradient:
    """Class 0's map is the input's channel 0; class 1's gradient is zero (an empty map)."""
    m = torch.zeros(2, 3, H, W)
    m[0, 0] = 1.0
    return KnownGradient(m, torch.zeros(2, 3, H, W))


def scene(*blobs: tuple[int, int, int, int, float]) -> torch.Tensor:
    x = torch.zeros(3, H, W)
    for x0, y0, x1, y1, v in blobs:
        x[0, y0:y1, x0:x1] = v
    return x


@pytest.fixture(autouse=True)
def artifacts(tmp_path: Path) -> Path:
    context.set_artifacts_dir(tmp_path / "art")
    yield tmp_path / "art"
    context.set_artifacts_dir(None)


@pytest.fixture
def records() -> list:
    seen: list = []
    context.add_listener(seen.append)
    yield seen
    context.remove_listener(seen.append)


def test_passes_on_the_object_and_returns_the_result(records: list) -> None:
    result = assert_attends_to(spot_model(), scene((60, 10, 80, 30, 1.0)), "blob", (58, 8, 82, 32), **KW)
    assert result.target == 0 and result.label == "blob" and not result.empty
    assert records[-1].passed and records[-1].check == "attends_to" and records[-1].overlay is None
    assert records[-1].metrics["region.hit"] is True


def test_fails_on_another_object_with_a_message_that_explains(artifacts: Path, records: list) -> None:
    x = scene((60, 10, 80, 30, 1.0), (5, 35, 25, 55, 0.3))
    with pytest.raises(AssertionError) as info:
        assert_attends_to(spot_model(), x, "blob", Box(5, 35, 25, 55), **KW)
    msg = str(info.value)
    for part in ["camcheck attends_to failed", "method hirescam", "layer features", "class 0 'blob'", "p=",
                 "image 90x60 px", "box (5, 35)-(25, 55), 20x20 px", "pointing game: MISS",
                 "peak at (x=", "tolerance 15 px", "chance", "required >= 1.5", "top-5: 0 blob"]:
        assert part in msg, part
    path = Path(re.search(r"overlay: (\S+)", msg).group(1))
    assert path.parent == artifacts and path.suffix == ".png"
    with Image.open(path) as img:
        assert img.size[0] >= W and img.size[1] >= H
    assert not records[-1].passed and records[-1].overlay == path and records[-1].message == msg


def test_the_peak_alone_is_not_enough_when_the_mass_is_elsewhere() -> None:
    x = scene((60, 10, 61, 11, 1.0), (0, 20, 40, 60, 0.9))
    with pytest.raises(AssertionError, match=r"pointing game: HIT(.|\n)*lift .* required >= 1.5  <-- too low"):
        assert_attends_to(spot_model(), x, "blob", (59, 9, 62, 12), **KW)


def test_the_mass_alone_is_not_enough_when_the_peak_is_elsewhere() -> None:
    x = scene((5, 5, 45, 55, 0.5), (80, 50, 81, 51, 1.0))
    with pytest.raises(AssertionError, match="pointing game: MISS"):
        assert_attends_to(spot_model(), x, "blob", (5, 5, 45, 55), **KW)
    assert_attends_to(spot_model(), x, "blob", (5, 5, 45, 55), pointing=False, **KW)


def test_an_empty_map_never_passes_whatever_the_thresholds() -> None:
    with pytest.raises(AssertionError, match="EMPTY"):
        assert_attends_to(spot_model(), scene((60, 10, 80, 30, 1.0)), 1, (0, 0, 45, 30), min_lift=0.0,
                          pointing=False, **KW)
    with pytest.raises(AssertionError, match="EMPTY"):
        assert_not_attends_to(spot_model(), scene((60, 10, 80, 30, 1.0)), 1, (0, 0, 45, 30), **KW)


def test_min_energy_is_checked_when_given() -> None:
    x = scene((60, 10, 80, 30, 1.0), (0, 40, 90, 60, 0.2))
    assert_attends_to(spot_model(), x, 0, (58, 8, 82, 32), **KW)
    with pytest.raises(AssertionError, match="energy .* required >= 0.9"):
        assert_attends_to(spot_model(), x, 0, (58, 8, 82, 32), min_energy=0.9, **KW)


def test_not_attends_to_catches_a_map_on_the_watermark() -> None:
    x = scene((30, 20, 50, 40, 0.4), (82, 52, 90, 60, 1.0))
    watermark = Box.relative(0.9, 0.85, 1.0, 1.0)
    with pytest.raises(AssertionError, match=r"peak: IN the region.*\n.*lift .* allowed <= 1"):
        assert_not_attends_to(spot_model(), x, "blob", watermark, **KW)
    assert_not_attends_to(spot_model(), scene((30, 20, 50, 40, 0.4)), "blob", watermark, **KW)


def test_attends_more_to_separates_two_objects() -> None:
    x = scene((60, 10, 80, 30, 1.0), (5, 35, 25, 55, 0.2))
    dog, cat = (58, 8, 82, 32), (3, 33, 27, 57)
    assert_attends_more_to(spot_model(), x, "blob", dog, cat, **KW)
    with pytest.raises(AssertionError, match="density ratio .* <-- too low"):
        assert_attends_more_to(spot_model(), x, "blob", cat, dog, **KW)


@pytest.mark.parametrize("region,pattern", [
    ((10, 10, 10, 20), "empty|inverted|x1"),
    ((30, 10, 20, 20), "inverted|x1"),
    ((100, 70, 120, 90), "outside"),
    (np.zeros((H, W), bool), "selects no pixel"),
    (np.ones((5, 5), bool), "shape"),
])
def test_bad_regions_raise_a_clear_error(region: object, pattern: str) -> None:
    with pytest.raises(CamCheckError, match=pattern):
        assert_attends_to(spot_model(), scene((60, 10, 80, 30, 1.0)), 0, region, **KW)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1.5", True, np.array([1.0, 2.0])])
@pytest.mark.parametrize(("check", "name"), [
    (assert_attends_to, "min_lift"), (assert_attends_to, "tolerance"), (assert_attends_to, "min_energy"),
    (assert_not_attends_to, "max_lift"), (assert_not_attends_to, "tolerance"), (assert_attends_more_to, "min_ratio"),
])
def test_bad_thresholds_raise_the_same_clear_error(check, name: str, bad: object) -> None:
    regions = [(58, 8, 82, 32)] * (2 if check is assert_attends_more_to else 1)
    with pytest.raises(CamCheckError, match=rf"^{name}=.* is not a valid threshold; pass a finite number >= 0$"):
        check(spot_model(), scene((60, 10, 80, 30, 1.0)), 0, *regions, **{name: bad}, **KW)


def test_thresholds_of_any_real_number_type_are_accepted() -> None:
    result = assert_attends_to(spot_model(), scene((60, 10, 80, 30, 1.0)), 0, (58, 8, 82, 32), min_lift=np.float32(1.5),
                               tolerance=torch.tensor(15), min_energy=np.float64(0.1), **KW)
    assert result.target == 0


def test_a_batch_is_refused_with_a_hint() -> None:
    with pytest.raises(CamCheckError, match="one image and one target"):
        assert_attends_to(spot_model(), torch.stack([scene(), scene()]), 0, (0, 0, 10, 10), **KW)


def test_artifact_names_never_collide(artifacts: Path) -> None:
    x = scene((60, 10, 80, 30, 1.0))
    for _ in range(3):
        with pytest.raises(AssertionError):
            assert_attends_to(spot_model(), x, 0, (0, 40, 20, 60), **KW)
    assert len(list(artifacts.glob("*.png"))) == 3


def test_an_unwritable_artifacts_folder_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    context.set_artifacts_dir(blocker / "sub")
    with pytest.raises(AssertionError, match="overlay: not written"):
        assert_attends_to(spot_model(), scene((60, 10, 80, 30, 1.0)), 0, (0, 40, 20, 60), **KW)


CROPPED = T.Compose([T.CenterCrop((H, W)), T.ToTensor()])  # a 150 px wide picture: the model sees columns 30-119


def wide_picture(red: np.ndarray) -> Image.Image:
    """A (H, W + 60) picture whose red channel is ``red`` (values in [0, 1]); class 0's map is that channel."""
    rgb = np.zeros((H, W + 60, 3), np.uint8)
    rgb[..., 0] = np.round(red * 255)
    return Image.fromarray(rgb)


def test_a_region_the_crop_hides_is_refused_by_every_assertion() -> None:
    red = np.zeros((H, W + 60))
    red[20:30, 60:70] = 1.0
    picture = wide_picture(red)
    hidden = (0, 10, 25, 40)  # columns 0-24: the model never saw them (it would have 'missed' with energy 0)
    message = (r"the region lies entirely outside the part of the image the model saw \(columns 30-119, rows 0-59 of "
               r"the 150x60 image.*Fix: use preprocessing that keeps the region, e\.g\. resize the full image")
    for check in (lambda: assert_attends_to(spot_model(), picture, 0, hidden, preprocess=CROPPED, **KW),
                  lambda: assert_not_attends_to(spot_model(), picture, 0, hidden, preprocess=CROPPED, **KW),
                  lambda: assert_attends_more_to(spot_model(), picture, 0, (60, 20, 70, 30), hidden,
                                                 preprocess=CROPPED, **KW)):
        with pytest.raises(UnseenRegionError, match=message):
            check()
    with pytest.raises(CamCheckError, match=r"covers every pixel the model saw"):
        assert_attends_to(spot_model(), picture, 0, (20, 0, 130, 60), preprocess=CROPPED, **KW)


def test_chance_is_taken_over_what_the_model_saw(records: list) -> None:
    red = np.zeros((H, W + 60))
    red[:, 30:120] = 1.0  # a flat map on all the model saw (one darker pixel keeps it from being constant)
    red[0, 119] = 0.5
    with pytest.raises(AssertionError, match=r"lift 1\.00 .*too low(.|\n)*the model saw only columns 30-119, rows "
                                             r"0-59 of the 150x60 image"):
        assert_attends_to(spot_model(), wide_picture(red), 0, (40, 10, 70, 40), pointing=False, preprocess=CROPPED,
                          **KW)  # over the whole image its chance would be 0.1 and its lift 1.67: a pass
    assert records[-1].metrics["region.chance"] == pytest.approx(30 * 30 / (90 * 60))
    red = np.zeros((H, W + 60))
    red[10:40, 20:50] = 1.0  # a region partly cropped away is judged on its seen part, columns 30-49
    result = assert_attends_to(spot_model(), wide_picture(red), 0, (10, 10, 50, 40), preprocess=CROPPED, **KW)
    assert result.geometry.seen()[:, 30:120].all() and not result.geometry.seen()[:, :30].any()
    assert records[-1].metrics["region.chance"] == pytest.approx(20 * 30 / (90 * 60))
