import numpy as np
import pytest
from PIL import Image

from pytest_camcheck.errors import CamCheckError
from pytest_camcheck.render import (
    COLORMAPS,
    MAX_SIDE,
    OTHER_REGION_COLOUR,
    PEAK_COLOUR,
    REGION_COLOUR,
    colorize,
    overlay,
    save_png,
    side_by_side,
)


def pixel(img: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    return img.getpixel((int(x), int(y)))


def test_colorize_shape_and_endpoints():
    h = np.array([[0.0, 0.5, 1.0]])
    out = colorize(h, "jet")
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 128] and out[0, 2].tolist() == [128, 0, 0]
    assert colorize(h, "gray")[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    assert colorize(h, "viridis")[0, [0, 2]].tolist() == [[68, 1, 84], [253, 231, 37]]
    mid = colorize(np.array([[0.5]]), "coolwarm")[0, 0].tolist()
    assert mid[0] == mid[1] == mid[2] > 200


def test_every_colormap_is_a_256_colour_ramp():
    ramp = np.linspace(0, 1, 256)[None, :]
    for name in COLORMAPS:
        colours = colorize(ramp, name)[0]
        assert len({tuple(c) for c in colours}) > 100, name


def test_colorize_rejects_unknown_map_and_bad_heatmap():
    with pytest.raises(CamCheckError, match=r"unknown colour map 'hot'; use one of: jet, viridis"):
        colorize(np.zeros((2, 2)), "hot")
    with pytest.raises(CamCheckError, match=r"expected \[0, 1\]"):
        colorize(np.full((2, 2), 3.0))


def black(h: int, w: int) -> np.ndarray:
    return np.zeros((h, w, 3), dtype=np.uint8)


def test_overlay_keeps_size_of_large_images():
    out = overlay(black(300, 400), np.zeros((300, 400)))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (400, 300)


def test_overlay_enlarges_small_images_by_a_whole_factor():
    assert overlay(black(40, 60), np.zeros((40, 60))).size == (60 * 7, 40 * 7)
    assert overlay(black(20, 300), np.zeros((20, 300))).size == (300 * (MAX_SIDE // 300), 20 * (MAX_SIDE // 300))


def test_overlay_blends_with_alpha():
    image = np.full((300, 260, 3), 200, dtype=np.uint8)
    h = np.ones((300, 260))
    assert pixel(overlay(image, h, alpha=0.0), 5, 5) == (200, 200, 200)
    assert pixel(overlay(image, h, alpha=1.0), 5, 5) == (128, 0, 0)
    assert pixel(overlay(image, h, alpha=0.5), 5, 5) == (164, 100, 100)


def test_region_outline_pixels_get_the_outline_colour():
    out = overlay(black(300, 400), np.zeros((300, 400)), region=(10, 5, 30, 20))
    for x, y in [(10, 5), (10, 12), (29, 19), (20, 5), (20, 19), (9, 12), (30, 12), (20, 4), (20, 20)]:
        assert pixel(out, x, y) == REGION_COLOUR, (x, y)
    for x, y in [(20, 12), (8, 12), (31, 12), (100, 100)]:
        assert pixel(out, x, y) != REGION_COLOUR, (x, y)


def test_outline_is_drawn_along_the_image_edge():
    out = overlay(black(300, 400), np.zeros((300, 400)), region=(0, 0, 10, 10))
    assert pixel(out, 0, 5) == REGION_COLOUR and pixel(out, 5, 0) == REGION_COLOUR


def test_outline_on_enlarged_image_and_mask_region():
    mask = np.zeros((40, 60), dtype=bool)
    mask[5:15, 30:50] = True
    out = overlay(black(40, 60), np.zeros((40, 60)), region=mask)
    assert pixel(out, 30 * 7, 10 * 7) == REGION_COLOUR
    assert pixel(out, 50 * 7 - 1, 5 * 7) == REGION_COLOUR
    assert pixel(out, 40 * 7, 10 * 7) != REGION_COLOUR


def test_other_region_has_its_own_colour_and_region_wins_where_they_meet():
    out = overlay(black(300, 400), np.zeros((300, 400)), region=(10, 10, 50, 50), other_region=(50, 10, 90, 50))
    assert pixel(out, 70, 10) == OTHER_REGION_COLOUR
    assert pixel(out, 49, 30) == REGION_COLOUR


def test_peak_marker_is_drawn_at_the_peak():
    out = overlay(black(300, 400), np.zeros((300, 400)), peak=(200, 100))
    assert pixel(out, 200.5, 100.5) == PEAK_COLOUR
    assert pixel(out, 150, 150) != PEAK_COLOUR
    small = overlay(black(40, 60), np.zeros((40, 60)), peak=(10, 20))
    assert pixel(small, 10.5 * 7, 20.5 * 7) == PEAK_COLOUR


def test_overlay_accepts_pil_images():
    out = overlay(Image.new("L", (260, 300), 90), np.zeros((300, 260)), alpha=0.0)
    assert out.size == (260, 300) and pixel(out, 1, 1) == (90, 90, 90)


def test_overlay_shape_mismatch_names_both_shapes():
    with pytest.raises(CamCheckError, match=r"image is 30x40 \(height x width\) but the heatmap is 40x30"):
        overlay(black(30, 40), np.zeros((40, 30)))


def test_overlay_rejects_bad_alpha():
    with pytest.raises(CamCheckError, match=r"alpha is 1.5; pass the heatmap's weight in \[0, 1\]"):
        overlay(black(30, 40), np.zeros((30, 40)), alpha=1.5)


def test_side_by_side_lays_tiles_out_in_a_row_under_captions():
    red, blue = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (50, 20), (0, 0, 255))
    sheet = side_by_side([red, blue], ["baseline", "current"])
    assert sheet.width >= 90 and sheet.height > 30
    colours = {c for _, c in sheet.getcolors(maxcolors=100_000)}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours
    reds = np.argwhere(np.all(np.asarray(sheet) == (255, 0, 0), axis=-1))
    blues = np.argwhere(np.all(np.asarray(sheet) == (0, 0, 255), axis=-1))
    assert len(reds) == 40 * 30 and len(blues) == 50 * 20
    assert reds[:, 1].max() < blues[:, 1].min()
    assert reds[:, 0].min() == blues[:, 0].min() > 0


def test_side_by_side_needs_one_label_per_image():
    with pytest.raises(CamCheckError, match=r"got 2 images and 1 labels"):
        side_by_side([Image.new("RGB", (4, 4))] * 2, ["only one"])
    with pytest.raises(CamCheckError, match=r"at least one"):
        side_by_side([], [])


def test_save_png_creates_folders_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "a" / "b" / "map.png"
    written = save_png(Image.new("RGB", (3, 2), (1, 2, 3)), target)
    assert written == target and written.is_absolute()
    with Image.open(written) as img:
        assert img.size == (3, 2) and img.getpixel((0, 0)) == (1, 2, 3)
    save_png(Image.new("RGB", (5, 5)), target)
    with Image.open(target) as img:
        assert img.size == (5, 5)
    assert [p.name for p in target.parent.iterdir()] == ["map.png"]


def test_save_png_failure_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "map.png"
    save_png(Image.new("RGB", (3, 2)), target)
    with pytest.raises(AttributeError):
        save_png(object(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]
    with Image.open(target) as img:
        assert img.size == (3, 2)
