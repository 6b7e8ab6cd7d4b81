import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from pytest_camcheck.errors import CamCheckError
from pytest_camcheck.metrics import (
    RegionMetrics,
    chance,
    check_heatmap,
    energy,
    lift,
    map_similarity,
    measure,
    peak,
    peak_distance,
    pointing_game,
    rank_accuracy,
)
from pytest_camcheck.regions import to_mask

H, W = 30, 50
CORNER = (40, 0, 50, 6)


def corner_mask() -> np.ndarray:
    return to_mask(CORNER, (H, W))


def corner_map() -> np.ndarray:
    """Mass 3 in the top-right box (x 40..49, y 0..5), mass 1 outside, maximum at (45, 2)."""
    h = np.zeros((H, W))
    h[2, 45] = 1.0
    h[0:2, 40:44] = 0.25
    h[29, 0:2] = 0.5
    return h


def test_energy_exact_share_inside():
    assert energy(corner_map(), corner_mask()) == 0.75


def test_energy_uses_x_for_columns_and_y_for_rows():
    h = np.zeros((H, W))
    h[2, 45] = 1.0
    assert energy(h, corner_mask()) == 1.0
    tall = np.zeros((W, H))
    tall[45, 2] = 1.0
    assert energy(tall, to_mask((0, 40, 6, 50), (W, H))) == 1.0
    assert energy(tall, to_mask((0, 0, 6, 10), (W, H))) == 0.0


def test_energy_of_all_zero_map_is_zero_not_nan():
    assert energy(np.zeros((H, W)), corner_mask()) == 0.0


def test_peak_is_x_y():
    assert peak(corner_map()) == (45, 2)


def test_peak_on_odd_plateau_is_its_centre():
    h = np.zeros((H, W))
    h[10:15, 20:27] = 0.8
    assert peak(h) == (23, 12)


def test_peak_on_even_plateau_takes_first_nearest_in_row_major_order():
    h = np.zeros((H, W))
    h[10:14, 20:24] = 0.8
    assert peak(h) == (21, 11)


def test_peak_on_l_shaped_plateau_is_a_maximum_pixel():
    h = np.zeros((H, W))
    h[0, 0] = h[0, 4] = h[4, 0] = 1.0
    assert peak(h) == (0, 0)


def test_peak_of_all_zero_map_is_none():
    assert peak(np.zeros((H, W))) is None


def single_pixel_mask(x: int = 5, y: int = 5) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y, x] = True
    return m


def map_peaking_at(x: int, y: int) -> np.ndarray:
    h = np.full((H, W), 0.1)
    h[y, x] = 1.0
    return h


def test_pointing_game_tolerance_boundary():
    at_15 = map_peaking_at(5 + 9, 5 + 12)
    assert peak_distance(at_15, single_pixel_mask()) == 15.0
    assert pointing_game(at_15, single_pixel_mask())
    assert not pointing_game(at_15, single_pixel_mask(), tolerance=14.9)
    assert pointing_game(at_15, single_pixel_mask(), tolerance=15.1)
    assert pointing_game(map_peaking_at(5 + 10, 5 + 11), single_pixel_mask())
    assert not pointing_game(map_peaking_at(5 + 15, 5 + 2), single_pixel_mask())


def test_pointing_game_inside_hits_with_zero_tolerance():
    assert pointing_game(corner_map(), corner_mask(), tolerance=0)
    assert peak_distance(corner_map(), corner_mask()) == 0.0


def test_pointing_game_on_both_axes():
    m = corner_mask()
    assert peak_distance(map_peaking_at(45, 25), m) == 20.0
    assert peak_distance(map_peaking_at(20, 2), m) == 20.0


def test_empty_map_misses_the_pointing_game_even_with_a_huge_region():
    m = np.ones((H, W), dtype=bool)
    m[0, 0] = False
    assert not pointing_game(np.zeros((H, W)), m, tolerance=1000)
    assert peak_distance(np.zeros((H, W)), m) == math.inf


def test_chance_and_lift():
    assert chance(corner_mask()) == 60 / 1500
    assert lift(corner_map(), corner_mask()) == pytest.approx(0.75 / (60 / 1500))
    assert lift(np.full((H, W), 0.5), corner_mask()) == pytest.approx(1.0)


def test_rank_accuracy_counts_top_region_size_pixels():
    h = np.zeros((H, W))
    m = corner_mask()
    h[0:3, 40:50] = 1.0
    h[10:13, 0:10] = 0.9
    assert rank_accuracy(h, m) == 0.5
    h[10:13, 0:10] = 0.1
    h[3:6, 40:50] = 0.2
    assert rank_accuracy(h, m) == 1.0


def test_rank_accuracy_shares_ties_at_the_cut_off():
    h = np.array([[0.9, 0.5, 0.5, 0.5, 0.0]])
    m = np.array([[False, True, False, False, True]])
    assert rank_accuracy(h, m) == pytest.approx((0 + 1 / 3) / 2)
    assert rank_accuracy(np.full((H, W), 0.3), corner_mask()) == pytest.approx(chance(corner_mask()))
    assert rank_accuracy(np.zeros((H, W)), corner_mask()) == 0.0


def test_measure_gathers_every_metric():
    r = measure(corner_map(), corner_mask())
    assert r == RegionMetrics(
        energy=0.75,
        chance=0.04,
        lift=pytest.approx(18.75),
        hit=True,
        peak=(45, 2),
        peak_distance=0.0,
        rank_accuracy=pytest.approx((9 + 49 * 51 / 1489) / 60),
        empty=False,
    )
    assert json.loads(json.dumps(r.as_dict()))["peak"] == [45, 2]


def test_measure_of_empty_map():
    r = measure(np.zeros((H, W)), corner_mask())
    got = (r.energy, r.hit, r.peak, r.peak_distance, r.rank_accuracy, r.empty)
    assert got == (0.0, False, None, math.inf, 0.0, True)
    d = r.as_dict()
    assert d["peak"] is None and d["peak_distance"] is None
    json.dumps(d, allow_nan=False)


def test_map_similarity_is_2d_ssim_and_spearman():
    rng = np.random.default_rng(0)
    a = rng.random((H, W))
    b = np.clip(a + 0.1 * rng.standard_normal((H, W)), 0, 1)
    got = map_similarity(a, b)
    assert got["ssim"] == pytest.approx(structural_similarity(a, b, data_range=1.0))
    assert 0.5 < got["spearman"] < 1.0
    assert got["spearman"] == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    tied = np.round(a, 1)
    assert map_similarity(tied, b)["spearman"] == pytest.approx(spearmanr(tied.ravel(), b.ravel()).statistic)
    assert map_similarity(a, 1 - a)["spearman"] == pytest.approx(-1.0)
    assert map_similarity(a, a) == {"ssim": 1.0, "spearman": 1.0}


def test_map_similarity_of_constant_maps():
    a = np.linspace(0, 1, H * W).reshape(H, W)
    assert map_similarity(a, np.zeros((H, W)))["spearman"] == 0.0
    assert map_similarity(np.zeros((H, W)), np.zeros((H, W)))["spearman"] == 1.0


def test_map_similarity_small_maps_use_a_smaller_window():
    a = np.linspace(0, 1, 20).reshape(4, 5)
    assert map_similarity(a, a)["ssim"] == pytest.approx(1.0)
    with pytest.raises(CamCheckError, match=r"too small for SSIM"):
        map_similarity(np.zeros((2, 5)), np.zeros((2, 5)))


def test_map_similarity_names_both_shapes():
    with pytest.raises(CamCheckError, match=r"different shapes, \(30, 50\) and \(50, 30\)"):
        map_similarity(np.zeros((H, W)), np.zeros((W, H)))


@pytest.mark.parametrize(
    "heatmap, message",
    [
        (np.zeros((1, H, W)), r"shape \(1, 30, 50\); expected 2-D"),
        (np.zeros((H, W), dtype=np.uint8), r"dtype uint8; expected float.*astype\(np.float32\)"),
        (np.full((H, W), np.nan), r"NaN or infinite"),
        (np.full((H, W), 2.0), r"values range from 2 to 2; expected \[0, 1\]"),
        (np.full((H, W), -0.5), r"from -0.5 to -0.5"),
        (torch.zeros(H, W), r"Tensor, not a numpy array.*detach\(\).cpu\(\).numpy\(\)"),
        ([[0.0]], r"list, not a numpy array"),
        (np.zeros((0, 5)), r"empty"),
    ],
)
def test_bad_heatmaps(heatmap, message):
    with pytest.raises(CamCheckError, match=message):
        energy(heatmap, corner_mask())


def test_rounding_excursions_are_clipped():
    h = np.full((H, W), 1 + 1e-7, dtype=np.float64)
    assert check_heatmap(h).max() == 1.0
    assert energy(h, corner_mask()) == pytest.approx(0.04)


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones((H, W), dtype=np.uint8), r"dtype uint8; expected a boolean numpy array"),
        (np.ones((W, H), dtype=bool), r"mask has shape \(50, 30\) but the heatmap has shape \(30, 50\)"),
        (np.zeros((H, W), dtype=bool), r"selects no pixel"),
    ],
)
def test_bad_masks(mask, message):
    with pytest.raises(CamCheckError, match=message):
        measure(corner_map(), mask)


def test_negative_tolerance():
    with pytest.raises(CamCheckError, match=r"tolerance is -1"):
        pointing_game(corner_map(), corner_mask(), tolerance=-1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.longdouble, ">f4"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense-mask", "mask-in-a-corner"])
def test_fast_peak_distance_and_rank_accuracy_equal_their_definitions_on_maps_with_ties(dtype, sparse) -> None:
    """The distance to the nearest mask pixel equals a full Euclidean distance transform, the rank accuracy's
    cut-off equals a full sort, and the peak is the tied maximum nearest the ties' centroid, on 200 random maps
    with many exact ties (read-only; float64, float32, float16, long double and big-endian; half or nearly all
    zeros), with masks spread over the image or a few pixels in a sub-rectangle (where only the mask's bounding
    box is searched)."""
    from scipy import ndimage

    from pytest_camcheck.metrics import measure

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        zeros = rng.choice([0.5, 0.95])  # some maps have fewer positive pixels than the mask has pixels
        h = (np.round(rng.random((13, 17)), 1) * (rng.random((13, 17)) > zeros)).astype(dtype)
        h.setflags(write=False)
        m = rng.random((13, 17)) > (0.7 if not sparse else 0.9)
        if sparse:
            top, left = rng.integers(0, 10), rng.integers(0, 14)
            m[:top] = False
            m[:, :left] = False
            m[top + 3:] = False
        if not m.any() or h.max() <= 0:
            continue
        got = measure(h, m, tolerance=2)
        k = int(m.sum())
        cut = np.sort(h.ravel())[::-1][k - 1]
        above, tied = h > cut, h == cut
        expected_rank = ((above & m).sum() + (k - above.sum()) * (tied & m).sum() / tied.sum()) / k
        assert got.rank_accuracy == pytest.approx(expected_rank, abs=1e-12)
        x, y = got.peak
        ys, xs = np.nonzero(h == h.max())
        nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
        assert (x, y) == (xs[nearest], ys[nearest])
        assert got.peak_distance == pytest.approx(ndimage.distance_transform_edt(~m)[y, x], abs=1e-12)
        assert got.energy == pytest.approx(h[m].sum(dtype=np.float64) / h.sum(dtype=np.float64), abs=1e-12)
        assert got.hit == (got.peak_distance <= 2)
        checked += 1
    assert checked > (150 if not sparse else 100)


def test_a_region_is_judged_on_the_pixels_the_model_saw():
    """Under Resize(112) + CenterCrop(112) of a 245x149 image the model sees columns 48-196; a flat map there got
    lift 1.64 on any visible box when chance was taken over the whole image."""
    from pytest_camcheck.errors import UnseenRegionError

    h, w = 149, 245
    seen = np.zeros((h, w), dtype=bool)
    seen[:, 48:197] = True
    flat = seen.astype(np.float32)
    box = to_mask((100, 40, 140, 80), (h, w))
    m = measure(flat, box, 15, seen=seen)
    assert m.chance == pytest.approx(40 * 40 / (149 * 149)) and m.lift == pytest.approx(1.0)
    assert chance(box, seen=seen) == m.chance and lift(flat, box, seen=seen) == pytest.approx(1.0)
    straddling = to_mask((30, 40, 70, 80), (h, w))  # columns 30-69, of which 48-69 were seen
    part = measure(flat, straddling, 15, seen=seen)
    assert part.chance == pytest.approx(22 * 40 / (149 * 149)) and part.lift == pytest.approx(1.0)
    assert part.rank_accuracy == pytest.approx(measure(flat, straddling & seen, 15, seen=seen).rank_accuracy)
    with pytest.raises(UnseenRegionError, match=r"entirely outside the part of the image the model saw \(columns "
                                                r"48-196, rows 0-148 of the 245x149 image") as err:
        measure(flat, to_mask((200, 40, 240, 80), (h, w)), seen=seen)
    assert err.value.reason == "never seen by the model: the preprocessing crops it away"
    with pytest.raises(UnseenRegionError, match="covers every pixel the model saw"):
        measure(flat, to_mask((40, 0, 200, 149), (h, w)), seen=seen)


def test_seen_everywhere_changes_no_number():
    rng = np.random.default_rng(3)
    heatmap = rng.random((30, 40)).astype(np.float32)
    mask = to_mask((5, 5, 20, 15), (30, 40))
    everything = np.ones((30, 40), dtype=bool)
    assert measure(heatmap, mask, 15, seen=everything) == measure(heatmap, mask, 15)
    assert chance(mask, seen=everything) == chance(mask) and lift(heatmap, mask, everything) == lift(heatmap, mask)
