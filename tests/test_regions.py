import math

import numpy as np
import pytest
import torch

from pytest_camcheck.errors import CamCheckError, RegionError
from pytest_camcheck.regions import Box, RelativeBox, describe, to_mask

H, W = 30, 50


def test_box_size_properties():
    box = Box(10, 20, 50, 80)
    assert (box.width, box.height, box.area) == (40, 60, 2400)
    assert box.resolve((100, 100)) is box


def test_integer_box_contains_exactly_its_columns_and_rows():
    mask = to_mask((10, 5, 20, 8), (H, W))
    expected = np.zeros((H, W), dtype=bool)
    expected[5:8, 10:20] = True
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.bool_ and mask.shape == (H, W)


def test_box_in_top_right_corner_of_wide_image_uses_x_for_columns():
    mask = to_mask(Box(40, 0, 50, 6), (H, W))
    assert mask[0:6, 40:50].all()
    assert mask.sum() == 60
    assert not mask[:, :40].any() and not mask[6:, :].any()


def test_box_in_bottom_left_corner_of_tall_image_uses_y_for_rows():
    mask = to_mask([0, 40, 6, 50], (50, 30))
    assert mask[40:50, 0:6].all() and mask.sum() == 60


def test_pixel_included_when_its_centre_is_inside():
    mask = to_mask(Box(0.6, 0.4, 3.5, 2.5), (4, 6))
    assert np.flatnonzero(mask.any(axis=0)).tolist() == [1, 2]
    assert np.flatnonzero(mask.any(axis=1)).tolist() == [0, 1]


def test_boxes_sharing_a_fractional_edge_split_the_pixels():
    left = to_mask(Box(0, 0, 2.5, 3), (4, 5))
    right = to_mask(Box(2.5, 0, 5, 3), (4, 5))
    assert not (left & right).any()
    assert (left | right)[:3].all() and left.sum() == 6 and right.sum() == 9


def test_sub_pixel_box_contains_the_pixel_under_its_centre():
    mask = to_mask(Box(3.2, 1.1, 3.4, 1.3), (6, 8))
    assert np.argwhere(mask).tolist() == [[1, 3]]


def test_box_thin_along_x_only_keeps_its_rows():
    mask = to_mask(Box(3.2, 0, 3.4, 4), (6, 8))
    assert np.argwhere(mask).tolist() == [[0, 3], [1, 3], [2, 3], [3, 3]]


def test_relative_box_on_non_square_image():
    mask = to_mask(Box.relative(0.5, 0, 1, 0.5), (H, W))
    assert mask[0:15, 25:50].all() and mask.sum() == 15 * 25


def test_relative_box_resolution_is_immune_to_float_noise():
    assert (0.07 * 50, 0.55 * 50) == (3.5000000000000004, 27.500000000000004)
    mask = to_mask(RelativeBox(0.07, 0, 0.55, 0.5), (2, 50))
    assert np.flatnonzero(mask[0]).tolist() == list(range(3, 27))


def test_numpy_mask_is_returned_as_a_copy():
    region = np.zeros((H, W), dtype=bool)
    region[3, 4] = True
    mask = to_mask(region, (H, W))
    mask[0, 0] = True
    assert not region[0, 0]


def test_torch_bool_mask_accepted():
    region = torch.zeros(H, W, dtype=torch.bool)
    region[2:4, 45:48] = True
    mask = to_mask(region, (H, W))
    assert isinstance(mask, np.ndarray) and mask.sum() == 6 and mask[2, 45]


def test_numpy_vector_of_four_is_a_box():
    assert to_mask(np.array([1, 2, 3, 4]), (H, W)).sum() == 4


def test_clip_keeps_the_part_inside():
    assert Box(-10, 5, 30, 500).clip((100, 200)) == Box(0, 5, 30, 100)
    assert to_mask(Box(45, 25, 60, 40).clip((H, W)), (H, W)).sum() == 5 * 5


@pytest.mark.parametrize(
    "args, message",
    [
        ((50, 20, 10, 80), r"inverted or empty: x1 \(10\) must be greater than x0 \(50\).*Box\(x, y, x \+ width"),
        ((10, 20, 10, 80), r"inverted or empty"),
        ((10, 80, 50, 20), r"y1 \(20\) must be greater than y0 \(80\)"),
        ((10, math.nan, 50, 80), r"y0 is nan; pass finite"),
        ((10, 20, math.inf, 80), r"x1 is inf"),
        (("10", 20, 50, 80), r"x0='10' \(str\) is not a number"),
        ((True, 20, 50, 80), r"x0=True \(bool\) is not a number"),
    ],
)
def test_invalid_box_raises_at_construction(args, message):
    with pytest.raises(RegionError, match=message):
        Box(*args)


@pytest.mark.parametrize(
    "args, message",
    [((0, 0, 1.2, 1), r"fx1=1.2 is outside \[0, 1\]"), ((0.5, 0, 0.5, 1), r"fx1 must be greater than fx0")],
)
def test_invalid_relative_box(args, message):
    with pytest.raises(RegionError, match=message):
        Box.relative(*args)


@pytest.mark.parametrize(
    "region, message",
    [
        ((60, 0, 70, 10), r"entirely outside the image of 50x30 px"),
        ((0, 30, 10, 40), r"entirely outside"),
        ((-5, -5, 0, 0), r"entirely outside"),
        ((40, 20, 55, 30), r"reaches outside the image of 50x30 px.*box.clip\(\(30, 50\)\)"),
        ((-1, 0, 10, 10), r"reaches outside"),
        ((1, 2, 3), r"has 3 values; a box needs 4"),
        ([1, 2, 3, 4, 5], r"has 5 values"),
        ((1, "a", 3, 4), r"y0='a' \(str\) is not a number"),
        ({"x0": 1}, r"region of type dict is not understood"),
        ((0, 0, 50, 30), r"covers the whole image .*cannot be measured against chance"),
        (Box.relative(0, 0, 1, 1), r"covers the whole image"),
    ],
)
def test_bad_box_regions(region, message):
    with pytest.raises(CamCheckError, match=message):
        to_mask(region, (H, W))


def test_mask_of_wrong_shape_names_both_shapes():
    with pytest.raises(RegionError, match=r"shape \(50, 30\) but the image is \(30, 50\) \(height, width\)"):
        to_mask(np.ones((50, 30), dtype=bool), (H, W))


def test_non_boolean_masks_say_how_to_convert():
    with pytest.raises(RegionError, match=r"dtype uint8, not bool.*mask.astype\(bool\)"):
        to_mask(np.ones((H, W), dtype=np.uint8), (H, W))
    with pytest.raises(RegionError, match=r"dtype torch.float32, not torch.bool.*mask.bool\(\)"):
        to_mask(torch.ones(H, W), (H, W))


def test_empty_and_full_masks_raise():
    with pytest.raises(RegionError, match="selects no pixel"):
        to_mask(np.zeros((H, W), dtype=bool), (H, W))
    with pytest.raises(RegionError, match=r"covers the whole image \(50x30 px\).*smaller than the image"):
        to_mask(np.ones((H, W), dtype=bool), (H, W))


@pytest.mark.parametrize("size", [(30,), (0, 50), (30.0, 50), "30x50"])
def test_bad_image_size(size):
    with pytest.raises(RegionError, match=r"\(height, width\) pair of positive integers"):
        to_mask((0, 0, 1, 1), size)


def test_clip_of_a_box_outside_raises():
    with pytest.raises(RegionError, match="entirely outside"):
        Box(60, 0, 70, 10).clip((H, W))


def test_describe():
    assert describe((10, 20, 50, 80)) == "box (10, 20)-(50, 80), 40x60 px"
    assert describe(Box(0.5, 1, 2.25, 3)) == "box (0.5, 1)-(2.25, 3), 1.75x2 px"
    assert describe(Box.relative(0.1, 0, 0.5, 1)) == "relative box (0.1, 0)-(0.5, 1) of the image"
    mask = np.zeros((H, W), dtype=bool)
    mask[2:4, 45:48] = True
    assert describe(mask) == "mask of 6 px within (45, 2)-(48, 4) of a 50x30 px image"
    assert describe(torch.from_numpy(mask)) == describe(mask)
    assert describe(np.zeros((2, 3), dtype=bool)) == "empty mask of shape (2, 3)"
