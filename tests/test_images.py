import re
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from pytest_camcheck.errors import CamCheckError, InputError, RegionError
from pytest_camcheck.images import (
    Regions,
    SampleImage,
    available_images,
    load_annotated,
    load_image,
    sample_image,
)
from pytest_camcheck.regions import Box, to_mask

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BUILTIN = ["astronaut", "camera", "chelsea", "coffee", "horse", "motorcycle", "rocket"]


def rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def test_rgb_pil_image_is_copied():
    src = Image.new("RGB", (4, 3), (10, 20, 30))
    out = load_image(src)
    assert out is not src and out.size == (4, 3) and out.getpixel((0, 0)) == (10, 20, 30)
    out.putpixel((0, 0), (0, 0, 0))
    assert src.getpixel((0, 0)) == (10, 20, 30)


def test_grey_pil_modes_are_replicated():
    assert load_image(Image.new("L", (2, 2), 77)).getpixel((1, 1)) == (77, 77, 77)
    assert load_image(Image.new("1", (2, 2), 1)).getpixel((1, 1)) == (255, 255, 255)


def test_palette_image_without_and_with_transparency():
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((1, 0), 1)
    assert rgb(load_image(p)).tolist() == [[[255, 0, 0], [0, 0, 255]]]
    p.info["transparency"] = 0
    assert rgb(load_image(p)).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (2, 1), (255, 0, 0, 128))
    img.putpixel((1, 0), (0, 0, 0, 0))
    r, g, b = load_image(img).getpixel((0, 0))
    assert r == 255 and g == b and abs(g - 127) <= 1
    assert load_image(img).getpixel((1, 0)) == (255, 255, 255)
    assert load_image(Image.new("LA", (1, 1), (0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_modes_are_scaled():
    a = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img16 = Image.fromarray(a)
    assert img16.mode == "I;16"
    assert rgb(load_image(img16))[0, :, 0].tolist() == [0, 100, 255]
    assert rgb(load_image(img16.convert("I")))[0, :, 0].tolist() == [0, 100, 255]
    with pytest.raises(InputError, match=r"values from 0 to 70000; it is read as 16-bit"):
        load_image(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))


def test_float_pil_mode_follows_the_float_array_rule():
    assert load_image(Image.new("F", (1, 1), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(InputError, match=r"range from 200 to 200; expected \[0, 1\]"):
        load_image(Image.new("F", (1, 1), 200.0))


def test_cmyk_is_converted():
    assert load_image(Image.new("CMYK", (1, 1), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_uint8_arrays_are_never_shared_or_modified():
    a = np.zeros((5, 4, 3), dtype=np.uint8)  # not (3, 4, 3), which also reads as channels first (and warns)
    a[0, 0] = (1, 2, 3)
    before = a.copy()
    out = load_image(a)
    assert out.size == (4, 5) and out.getpixel((0, 0)) == (1, 2, 3)
    a[0, 0] = (9, 9, 9)
    assert out.getpixel((0, 0)) == (1, 2, 3)
    a[0, 0] = (1, 2, 3)
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((2, 3), 40, dtype=np.uint8), (40, 40, 40)),
        (np.full((2, 3, 1), 40, dtype=np.uint8), (40, 40, 40)),
        (np.full((2, 3, 3), 0.5, dtype=np.float32), (128, 128, 128)),
        (np.full((2, 3, 3), 1.0), (255, 255, 255)),
        (np.full((2, 3, 3), 200, dtype=np.int64), (200, 200, 200)),
        (np.full((2, 3), 257 * 7, dtype=np.uint16), (7, 7, 7)),
        (np.zeros((2, 3, 4), dtype=np.uint8), (255, 255, 255)),
        (np.full((2, 3, 4), 255, dtype=np.uint8), (255, 255, 255)),
    ],
)
def test_arrays(array, expected):
    before = array.copy()
    out = load_image(array)
    assert out.mode == "RGB" and out.size == (3, 2) and out.getpixel((2, 1)) == expected
    np.testing.assert_array_equal(array, before)


def test_rgba_array_composites_on_white():
    a = np.array([[[0, 0, 255, 255], [0, 0, 255, 0]]], dtype=np.uint8)
    assert rgb(load_image(a)).tolist() == [[[0, 0, 255], [255, 255, 255]]]


def test_read_only_arrays_are_fine():
    a = np.zeros((2, 2, 3), dtype=np.uint8)
    a.setflags(write=False)
    assert load_image(a).size == (2, 2)


@pytest.mark.parametrize(
    "array, message",
    [
        (
            np.zeros((3, 32, 32), dtype=np.uint8),
            r"shape \(3, 32, 32\); expected an HxWx3.*np.transpose\(a, \(1, 2, 0\)\)",
        ),
        (np.zeros((4, 4, 2), dtype=np.uint8), r"shape \(4, 4, 2\); expected an HxWx3"),
        (np.zeros((1, 4, 4, 3), dtype=np.uint8), r"shape \(1, 4, 4, 3\)"),
        (np.zeros(5, dtype=np.uint8), r"shape \(5,\)"),
        (np.zeros((0, 5, 3), dtype=np.uint8), r"empty \(shape \(0, 5, 3\), 0 px\)"),
        (np.full((2, 2, 3), np.nan), r"NaN or infinite"),
        (np.full((2, 2, 3), np.inf, dtype=np.float32), r"NaN or infinite"),
        (np.array([[[-0.5, 0, 2.0]]]), r"float image values range from -0.5 to 2; expected \[0, 1\]"),
        (np.full((2, 2), 300, dtype=np.int32), r"integer image values range from 300 to 300; expected 0..255"),
        (np.ones((2, 2), dtype=bool), r"boolean array \(a mask\?\).*astype\(np.uint8\)"),
        (np.empty((2, 2), dtype=object), r"dtype object"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(InputError, match=message):
        load_image(array)


def test_empty_pil_image():
    with pytest.raises(InputError, match=r"empty \(0x3 px\)"):
        load_image(Image.new("RGB", (0, 3)))


def test_paths(tmp_path):
    Image.new("RGBA", (5, 4), (0, 0, 0, 0)).save(tmp_path / "x.png")
    for path in (tmp_path / "x.png", str(tmp_path / "x.png")):
        out = load_image(path)
        assert out.size == (5, 4) and out.getpixel((0, 0)) == (255, 255, 255)


def test_missing_file_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=rf"image file not found: {tmp_path / 'nope.png'}"):
        load_image("nope.png")


def test_directory_and_non_image_files(tmp_path):
    with pytest.raises(InputError, match=r"is not a file"):
        load_image(tmp_path)
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(InputError, match=r"notes.png is not an image Pillow can read"):
        load_image(tmp_path / "notes.png")


def test_an_image_over_pillows_pixel_limit_is_an_input_error(tmp_path, monkeypatch):
    Image.new("RGB", (20, 20)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses more than twice this many pixels
    with pytest.raises(InputError, match=r"big.png is larger than Pillow opens by default .* Fix: downscale"):
        load_image(tmp_path / "big.png")


def test_truncated_file(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.jpg", quality=95)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    with pytest.raises(InputError, match=r"could not read the image .*cut.jpg.*truncated"):
        load_image(tmp_path / "cut.jpg")


def test_unknown_types():
    with pytest.raises(InputError, match=r"type Tensor is not understood.*t.permute\(1, 2, 0\)"):
        load_image(torch.zeros(3, 4, 4))
    with pytest.raises(InputError, match=r"type list is not understood"):
        load_image([[0, 0], [0, 0]])


@pytest.mark.parametrize("name", BUILTIN)
def test_catalogue_images_load_and_regions_lie_inside(name):
    s = sample_image(name)
    assert isinstance(s, SampleImage) and s.name == name and s.image.mode == "RGB"
    h, w = s.size
    assert (w, h) == s.image.size
    assert s.regions and s.source
    for region, box in s.regions.items():
        assert isinstance(box, Box)
        assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h, region
        assert box.area < w * h


def test_catalogue_lists_the_promised_regions():
    promised = {
        "chelsea": {"cat", "face"},
        "coffee": {"cup", "saucer"},
        "astronaut": {"helmet", "face", "flag", "person"},
        "rocket": {"rocket"},
        "camera": {"person", "camera"},
    }
    for name, regions in promised.items():
        assert regions <= set(sample_image(name).regions), name
    assert sample_image("chelsea").size == (300, 451)


def test_horse_box_is_the_silhouette_bounding_box():
    s = sample_image("horse")
    ys, xs = np.nonzero(~skimage.data.horse())
    assert s.regions["horse"] == Box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def brightness(s: SampleImage, region: str) -> float:
    grey = np.asarray(s.image.convert("L"), dtype=float)
    return float(grey[to_mask(s.regions[region], s.size)].mean())


def test_annotations_are_not_transposed():
    rocket = sample_image("rocket")
    assert brightness(rocket, "rocket") > 2 * brightness(rocket, "sky")
    camera = sample_image("camera")
    assert brightness(camera, "sky") > 2 * brightness(camera, "person")
    astronaut = sample_image("astronaut")
    r, g, b = np.asarray(astronaut.image, dtype=float)[to_mask(astronaut.regions["face"], astronaut.size)].mean(axis=0)
    assert r > g > b


def test_unknown_region_lists_the_names():
    with pytest.raises(CamCheckError, match=r"'chelsea' has no region 'dog'; its regions are: cat, eyes, face, nose"):
        sample_image("chelsea").regions["dog"]
    assert sample_image("chelsea").regions.get("dog") is None


def test_sample_images_are_independent_copies():
    first = sample_image("coffee")
    first.image.putpixel((0, 0), (1, 2, 3))
    assert sample_image("coffee").image.getpixel((0, 0)) != (1, 2, 3)


def test_regions_given_as_a_plain_dict_become_regions():
    s = SampleImage("mine", Image.new("RGB", (4, 4)), {"a": Box(0, 0, 2, 2)})
    assert isinstance(s.regions, Regions)
    with pytest.raises(RegionError, match=r"'mine' has no region 'b'; its regions are: a"):
        s.regions["b"]


def test_fixture_annotation():
    s = load_annotated(FIXTURES / "disc_and_square.json")
    assert s.name == "disc_and_square" and s.size == (120, 160)
    assert s.regions == {"disc": Box(15, 25, 65, 75), "square": Box(100, 60, 140, 100)}
    assert s.image.getpixel((40, 50)) == (220, 30, 30)
    assert s.image.getpixel((120, 80)) == (30, 60, 220)
    assert "Pillow" in s.source


def test_sample_image_searches_dirs(tmp_path):
    assert sample_image("disc_and_square", [FIXTURES]).name == "disc_and_square"
    assert sample_image("disc_and_square", str(FIXTURES)).size == (120, 160)
    assert sample_image("chelsea", [FIXTURES, tmp_path]).size == (300, 451)


@pytest.mark.parametrize("name", ["coffee", "shapes-single-7"])
def test_an_annotation_file_named_like_a_builtin_is_refused_as_ambiguous(tmp_path, name):
    # the user's own photo annotated as fixtures/coffee.json was shadowed by scikit-image's coffee
    Image.new("RGB", (10, 10)).save(tmp_path / "mine.png")
    (tmp_path / f"{name}.json").write_text(json.dumps({"image": "mine.png", "regions": {"cup": [1, 1, 5, 5]}}))
    with pytest.raises(CamCheckError, match=rf"'{name}' names both .* and your annotation file .*{name}.json, so "
                                            r"which image is meant is ambiguous\. Fix: rename your file") as err:
        sample_image(name, [FIXTURES, tmp_path])
    assert f"sample_image('{name}') without search_dirs" in str(err.value)
    assert sample_image(name).size != (10, 10)  # without folders: the built-in, as documented
    (tmp_path / f"my-{name}.json").write_text((tmp_path / f"{name}.json").read_text())
    assert sample_image(f"my-{name}", [tmp_path]).size == (10, 10)


def test_a_json_that_is_no_annotation_does_not_clash_with_a_builtin(tmp_path):
    (tmp_path / "camera.json").write_text('{"iso": 200}')
    assert sample_image("camera", [tmp_path]).name == "camera"


def test_unknown_sample_lists_names_and_how_to_add_one(tmp_path):
    missing = tmp_path / "nowhere"
    expected = r"no sample image named 'dog'; available: .*chelsea.*disc_and_square"
    with pytest.raises(CamCheckError, match=expected) as err:
        sample_image("dog", [FIXTURES, missing])
    assert "add dog.json next to your image" in str(err.value)
    assert f"{missing} (missing)" in str(err.value)
    assert '"regions": {"dog": [x0, y0, x1, y1]}' in str(err.value)


def test_available_images(tmp_path):
    (tmp_path / "settings.json").write_text('{"threshold": 0.5}')
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "dog.json").write_text('{"image": "dog.jpg"}')
    names = available_images([FIXTURES, tmp_path, tmp_path / "missing"])
    assert names == sorted(BUILTIN + ["disc_and_square", "dog"])
    assert available_images() == BUILTIN


def write(tmp_path: Path, spec: object, size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size).save(tmp_path / "pic.png")
    path = tmp_path / "pic.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ('{"image": ', InputError, r"pic.json is not valid JSON"),
        ({"regions": {}}, InputError, r'has no "image" entry naming the image file'),
        ({"image": "other.png"}, InputError, r"the image named in .*pic.json: image file not found: .*other.png"),
        ({"image": "pic.png", "regions": []}, InputError, r'"regions" in .* is list, not an object'),
        ({"image": "pic.png", "regions": {"a": [1, 2, 3]}}, RegionError, r"region 'a' in .* is \[1, 2, 3\]; expected"),
        (
            {"image": "pic.png", "regions": {"a": [30, 0, 45, 10]}},
            RegionError,
            r"region 'a' in .*pic.json: box \(30, 0\)-\(45, 10\), 15x10 px reaches outside the image of 40x30 px",
        ),
        ({"image": "pic.png", "regions": {"a": [5, 0, 1, 10]}}, RegionError, r"region 'a' .* inverted"),
    ],
)
def test_bad_annotation_files(tmp_path, spec, error, message):
    with pytest.raises(error, match=message):
        load_annotated(write(tmp_path, spec))


def test_missing_annotation_file(tmp_path):
    with pytest.raises(InputError, match=r"annotation file not found: .*dog.json"):
        load_annotated(tmp_path / "dog.json")


def test_annotation_source_defaults_to_the_image_path(tmp_path):
    s = load_annotated(write(tmp_path, {"image": "pic.png", "regions": {"a": [0, 0, 5, 5]}}))
    assert s.source == str(tmp_path / "pic.png") and s.regions["a"] == Box(0, 0, 5, 5)


def test_synthetic_scenes_are_served_with_their_exact_boxes() -> None:
    from pytest_camcheck.images import sample_image
    from pytest_camcheck.scenes import make_scene

    served = sample_image("shapes-pair-1000003")
    made = make_scene(1000003, "pair")
    assert np.array_equal(np.asarray(served.image), made.image)
    for obj in made.objects:
        assert tuple(served.regions[obj.name].__dict__.values()) == obj.box
    assert served.regions["object"] == served.regions[made.objects[0].name]
    shortcut = sample_image("shapes-shortcut-1000003")
    assert "watermark" in shortcut.regions
    with pytest.raises(CamCheckError, match=re.escape("shapes-<single|pair|shortcut>-<seed>")):
        sample_image("shapes-triple-1")
