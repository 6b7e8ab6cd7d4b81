"""Image inputs that were read wrongly or refused with a raw traceback: random transform
containers, 8-bit values in 16/32-bit containers, 16-bit transparency, channels-first look-alikes, multi-frame
files, premultiplied alpha, symbolic-link loops, EXIF-turned masks, odd EXIF orientation values, byte-order marks."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import v2

from pytest_camcheck import Box, assert_attends_to, compute_cam, load_dataset
from pytest_camcheck.datasets.core import image_size
from pytest_camcheck.errors import AnnotationError, CamCheckWarning, GeometryError, InputError, RegionError
from pytest_camcheck.geometry import infer_geometry
from pytest_camcheck.images import exif_orientation, load_annotated, load_image
from pytest_camcheck.regions import to_mask


class Bright(nn.Module):
    """A 1x1 conv whose class-0 map is the input's brightness (class 1: its darkness)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.zero_()
            self.features.weight[0, :, 0, 0] = 1 / 3
            self.features.weight[1, :, 0, 0] = -1 / 3
            self.features.bias[1] = 1.0
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def bright() -> nn.Module:
    return Bright().eval()


def rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


# 1. containers other than Compose / nn.Sequential ------------------------------------------------------------


class MyPipeline:  # a container of its own: runs its steps in reverse
    def __init__(self, transforms: list) -> None:
        self.transforms = transforms

    def __call__(self, img: object) -> object:
        for t in reversed(self.transforms):
            img = t(img)
        return img


class MyCompose(T.Compose):
    def __call__(self, img: object) -> object:
        return super().__call__(img) if torch.rand(()) < 0.5 else img


class MySequential(nn.Sequential):
    def forward(self, x: object) -> object:
        return x


INNER = [T.CenterCrop((30, 45)), T.Resize((30, 45))]
CONTAINERS = {
    "v1 RandomChoice": (lambda: T.RandomChoice(INNER), r"preprocess step RandomChoice cannot be used"),
    "v1 RandomApply": (lambda: T.RandomApply(INNER, p=0.5), r"preprocess step RandomApply cannot be used"),
    "v1 RandomOrder": (lambda: T.RandomOrder(INNER), r"preprocess step RandomOrder cannot be used"),
    "v2 RandomChoice": (lambda: v2.RandomChoice([v2.CenterCrop((30, 45)), v2.Resize((30, 45))]),
                        r"preprocess step RandomChoice cannot be used"),
    "v2 RandomApply": (lambda: v2.RandomApply([v2.CenterCrop((30, 45))], p=0.5),
                       r"preprocess step RandomApply cannot be used"),
    "v2 RandomOrder": (lambda: v2.RandomOrder([v2.CenterCrop((30, 45)), v2.Resize((30, 45))]),
                       r"preprocess step RandomOrder cannot be used"),
    "own container": (lambda: MyPipeline(INNER), r"is a container of its own .*MyPipeline.*which of its 2 steps "
                                                 r"run, and in which order, cannot be known"),
    "Compose subclass": (lambda: MyCompose(INNER), r"MyCompose, a subclass of torchvision's Compose"),
    "Sequential subclass": (lambda: MySequential(*INNER), r"MySequential, a subclass of torch.nn.Sequential"),
}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_a_container_that_may_skip_or_reorder_its_steps_is_refused(name: str) -> None:
    """They were opened as if every inner step ran in order: the map landed on the wrong pixels."""
    make, problem = CONTAINERS[name]
    with pytest.raises(GeometryError, match=problem + r".*Fix: .*pass the tensor"):
        infer_geometry(T.Compose([make(), T.ToTensor()]), (60, 90))


def test_a_random_choice_no_longer_passes_a_check_on_a_patch_the_model_never_saw() -> None:
    a = np.zeros((60, 90, 3), np.uint8)
    a[35:55, 5:25] = 255
    torch.manual_seed(0)
    with pytest.raises(GeometryError, match="RandomChoice"):
        assert_attends_to(bright(), a, 0, Box(24, 32, 36, 44), layer="features",
                          preprocess=T.Compose([T.RandomChoice(INNER), T.ToTensor()]))


def test_compose_and_sequential_themselves_are_still_opened() -> None:
    nested = T.Compose([nn.Sequential(v2.Resize((30, 45))), v2.Compose([v2.CenterCrop((20, 30))])])
    assert infer_geometry(nested, (60, 90)).input_size == (20, 30)


# 2. 8-bit values in 16/32-bit containers ------------------------------------------------------------------------


RAMP = np.tile(np.arange(256, dtype=np.int32), (4, 1))


def test_an_int32_array_and_mode_i_of_it_read_alike() -> None:
    """The array was 8-bit, Image.fromarray of it (mode I) was divided by 257: a black picture."""
    pil = Image.fromarray(RAMP)
    assert pil.mode == "I"
    np.testing.assert_array_equal(rgb(load_image(pil)), rgb(load_image(RAMP)))
    assert rgb(load_image(pil))[0, :, 0].tolist() == list(range(256))


@pytest.mark.parametrize("make", [lambda: RAMP.astype(np.uint16), lambda: Image.fromarray(RAMP.astype(np.uint16)),
                                  lambda: Image.fromarray(RAMP.astype(">u2"))],
                         ids=["uint16 array", "I;16", "I;16B"])
def test_a_sixteen_bit_image_holding_eight_bit_values_is_refused_as_ambiguous(make) -> None:
    with pytest.raises(InputError, match=r"holds values from 0 to 255 only, so it has two readings: 8-bit values in "
                                         r"a 16-bit container .* or a 16-bit picture .*Fix: for 8-bit values pass "
                                         r".*astype\(np.uint8\); for a 16-bit picture pass np.rint\("):
        load_image(make())


def test_a_sixteen_bit_png_holding_eight_bit_values_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ramp16.png"
    Image.fromarray(RAMP.astype(np.uint16)).save(path)
    with pytest.raises(InputError, match=r"ramp16.png \(PIL mode I;16\) holds values from 0 to 255 only.*"
                                         r"np.asarray\(PIL.Image.open\("):
        compute_cam(bright(), path, 0, layer="features")


def test_sixteen_bit_data_over_the_eight_bit_range_is_still_read() -> None:
    full = (RAMP * 257).astype(np.uint16)
    assert rgb(load_image(full))[0, :, 0].tolist() == list(range(256))
    assert rgb(load_image(Image.fromarray(full)))[0, :, 0].tolist() == list(range(256))
    assert rgb(load_image(Image.fromarray(RAMP * 257)))[0, :, 0].tolist() == list(range(256))  # mode I, 16-bit
    assert rgb(load_image(np.zeros((2, 2), np.uint16))).max() == 0  # all black: both readings agree


# 3. 16-bit transparency -----------------------------------------------------------------------------------------


def test_a_sixteen_bit_grey_png_with_a_transparency_key_is_composited_on_white(tmp_path: Path) -> None:
    a = np.zeros((8, 8), np.uint16)
    a[:, 4:] = 40000
    Image.fromarray(a).save(tmp_path / "g16t.png", transparency=0)
    b = np.zeros((8, 8), np.uint8)
    b[:, 4:] = 156
    Image.fromarray(b).save(tmp_path / "g8t.png", transparency=0)
    sixteen, eight = load_image(tmp_path / "g16t.png"), load_image(tmp_path / "g8t.png")
    assert sixteen.getpixel((0, 0)) == eight.getpixel((0, 0)) == (255, 255, 255)
    assert sixteen.getpixel((7, 0)) == eight.getpixel((7, 0)) == (156, 156, 156)


# 4. arrays that read both as (H, W, C) and (C, H, W) ------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 8, 4), (3, 8, 3), (4, 6, 4), (4, 3, 3)])
def test_an_array_that_also_reads_as_channels_first_is_read_hwc_with_a_warning(shape: tuple) -> None:
    with pytest.warns(CamCheckWarning, match=re.escape(f"array of shape {shape} is read as arrays always are, "
                                                       "(H, W, C)") + r".*If it is channels first.*Image.fromarray"):
        out = load_image(np.zeros(shape, np.uint8))
    assert out.size == (shape[1], shape[0])


def test_a_pil_image_says_which_layout_is_meant_without_a_warning(recwarn: pytest.WarningsRecorder) -> None:
    chw = np.zeros((3, 8, 4), np.uint8)
    chw[:, 0:2, :] = 255
    result = compute_cam(bright(), Image.fromarray(np.ascontiguousarray(np.moveaxis(chw, 0, -1))), 0,
                         layer="features")
    assert result.heatmap.shape == (8, 4) and not [w for w in recwarn if w.category is CamCheckWarning]


# 5. multi-frame files --------------------------------------------------------------------------------------------


def _two_frames(path: Path) -> None:
    f0 = np.zeros((32, 32, 3), np.uint8)
    f0[0:8, 0:8] = 255
    f1 = np.zeros((32, 32, 3), np.uint8)
    f1[24:32, 24:32] = 255
    extra = {"lossless": True} if path.suffix == ".webp" else {}
    Image.fromarray(f0).save(path, save_all=True, append_images=[Image.fromarray(f1)], **extra)


@pytest.mark.parametrize("suffix", [".gif", ".tif", ".png", ".webp"])
def test_a_path_to_a_multi_frame_file_is_refused(tmp_path: Path, suffix: str) -> None:
    """Frame 0 was used silently."""
    path = tmp_path / f"anim{suffix}"
    _two_frames(path)
    with pytest.raises(InputError, match=rf"anim\{suffix} holds 2 frames .*which one is meant cannot be known.*Fix: "
                                         r"open it with Pillow.*img.seek\(k\).*current frame"):
        compute_cam(bright(), path, 0, layer="features")


def test_a_pil_image_of_a_multi_frame_file_is_used_at_its_current_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    _two_frames(path)
    with Image.open(path) as img:
        img.seek(1)
        heatmap = compute_cam(bright(), img, 0, layer="features").heatmap
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert x >= 24 and y >= 24


def test_a_one_frame_gif_and_an_mpo_photo_are_read(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (200, 200, 200)).save(tmp_path / "still.gif")
    assert load_image(tmp_path / "still.gif").size == (8, 8)
    Image.new("RGB", (8, 8), (250, 0, 0)).save(tmp_path / "photo.mpo", format="MPO", save_all=True,
                                                append_images=[Image.new("RGB", (4, 4))])
    with Image.open(tmp_path / "photo.mpo") as img:
        assert img.format == "MPO" and img.n_frames == 2
    assert load_image(tmp_path / "photo.mpo").size == (8, 8)


def test_a_tiff_whose_later_pages_are_previews_is_its_first_page(tmp_path: Path) -> None:
    from PIL import TiffImagePlugin

    photo = np.zeros((32, 40, 3), np.uint8)
    photo[0:8, 0:8] = 255
    first, preview = Image.fromarray(photo), Image.fromarray(photo).resize((10, 8))

    def save(path: Path, kind: int) -> None:  # a second page with NewSubfileType (tag 254) = kind
        with open(path, "w+b") as fp, TiffImagePlugin.AppendingTiffWriter(fp) as tiff:
            first.save(tiff, format="TIFF")
            tiff.newFrame()
            preview.save(tiff, format="TIFF", tiffinfo={254: kind})
            tiff.newFrame()

    save(tmp_path / "thumb.tif", 1)  # reduced-resolution version of the first page: one picture
    assert np.array_equal(np.asarray(load_image(tmp_path / "thumb.tif")), photo)
    save(tmp_path / "pages.tif", 0)  # a second page of its own: which one is meant cannot be known
    with pytest.raises(InputError, match="pages.tif holds 2 frames"):
        load_image(tmp_path / "pages.tif")


def test_a_dataset_image_of_several_frames_is_refused(tmp_path: Path) -> None:
    _two_frames(tmp_path / "anim.gif")
    coco = {"images": [{"id": 1, "file_name": "anim.gif"}], "categories": [{"id": 1, "name": "bright"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "iscrowd": 0}]}
    (tmp_path / "i.json").write_text(json.dumps(coco))
    with pytest.raises(AnnotationError, match=r"anim.gif holds 2 frames.*Fix: save the frame the annotations are for"):
        load_dataset(tmp_path / "i.json")


# 6. premultiplied alpha ------------------------------------------------------------------------------------------


def test_a_premultiplied_grey_image_is_read_like_its_straight_alpha_twin() -> None:
    """Mode La gave a raw ValueError from Pillow."""
    la = Image.new("La", (16, 16), (100, 255))
    assert load_image(la).getpixel((0, 0)) == (100, 100, 100)
    assert load_image(Image.new("La", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert compute_cam(bright(), la, 0, layer="features").heatmap.shape == (16, 16)


# 7. symbolic-link loops ------------------------------------------------------------------------------------------


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    return tmp_path / "a.png"


@pytest.mark.parametrize("use", [lambda p: compute_cam(bright(), p, 0, layer="features"), load_annotated, load_image],
                         ids=["compute_cam", "load_annotated", "load_image"])
def test_a_symlink_loop_is_refused_naming_the_loop(loop: Path, use) -> None:
    """Path.resolve() raised a raw RuntimeError."""
    with pytest.raises(InputError, match=r"a.png is a symbolic-link loop.*Fix: point the link at the real file"):
        use(loop)


def test_a_symlink_loop_as_a_dataset_or_its_image_is_refused(loop: Path) -> None:
    with pytest.raises(AnnotationError, match=r"the dataset path .*a.png is a symbolic-link loop"):
        load_dataset(loop)
    (loop.parent / "i.json").write_text(json.dumps({"image": "a.png", "regions": {"x": [0, 0, 2, 2]}}))
    with pytest.raises(AnnotationError, match=r"i.json, \"image\": the image .*a.png is a symbolic-link loop"):
        load_dataset(loop.parent / "i.json")


# 8. a mask of an EXIF-turned photo's stored pixels --------------------------------------------------------------


def test_a_mask_of_the_stored_pixels_of_a_turned_photo_is_refused_with_the_exif_fix(tmp_path: Path) -> None:
    """The fix said to resize the mask with nearest neighbour, which would give a distorted, unturned mask."""
    shown = np.zeros((40, 64, 3), np.uint8)
    shown[2:12, 48:62] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "o6.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "o6.jpg") as img:
        stored_mask = np.asarray(img)[..., 0] > 128
        with pytest.raises(RegionError, match=r"mask has shape \(64, 40\) but the image is \(40, 64\).*EXIF "
                                              r"orientation 6.*turned by 90 degrees.*PIL.ImageOps.exif_transpose\(img\)"
                           ) as err:
            assert_attends_to(bright(), img, 0, stored_mask, layer="features")
        assert "nearest neighbour" not in str(err.value)
        assert "the image has EXIF orientation 6" in str(err.value)  # the assertion knows the turn it applied
        shown_mask = np.asarray(ImageOps.exif_transpose(img))[..., 0] > 128
        assert_attends_to(bright(), img, 0, shown_mask, layer="features")
    with pytest.raises(RegionError, match=r"the image has EXIF orientation 6, so it is shown turned by 90 degrees"):
        to_mask(stored_mask, (40, 64), orientation=6)
    with pytest.raises(RegionError, match=r"resize it with nearest neighbour"):  # another size: resizing is right
        to_mask(np.ones((20, 32), bool), (40, 64), orientation=6)


# 9. EXIF orientation values exif_transpose ignores ---------------------------------------------------------------


def _exif(typ: int, count: int, value4: bytes) -> bytes:
    return (b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHI", 0x0112, typ, count) + value4
            + struct.pack("<I", 0))


ORIENTATIONS = {"ascii '6'": _exif(2, 2, b"6\0\0\0"), "short 6": _exif(3, 1, struct.pack("<HH", 6, 0)),
                "long 6": _exif(4, 1, struct.pack("<I", 6)), "short 0": _exif(3, 1, struct.pack("<HH", 0, 0)),
                "signed -1": _exif(8, 1, struct.pack("<hh", -1, 0)), "short 9": _exif(3, 1, struct.pack("<HH", 9, 0))}


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_the_orientation_is_read_once_exactly_as_exif_transpose_reads_it(tmp_path: Path, name: str) -> None:
    """An ASCII "6" left the pixels as stored but was reported as 6, and load_dataset swapped the size."""
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[2:12, 48:62] = 255
    path = tmp_path / "a.jpg"
    Image.fromarray(stored).save(path, exif=ORIENTATIONS[name], quality=95)
    with Image.open(path) as img:
        w, h = ImageOps.exif_transpose(img).size
        orientation = 6 if (w, h) != img.size else 1
        assert exif_orientation(img) == orientation
    result = compute_cam(bright(), path, 0, layer="features")
    assert result.heatmap.shape == (h, w) and result.orientation == orientation
    assert image_size(path, "here") == (h, w, orientation)


# 10. byte-order marks --------------------------------------------------------------------------------------------


BOM = b"\xef\xbb\xbf"


def test_a_byte_order_mark_never_joins_a_class_name_or_breaks_json(tmp_path: Path) -> None:
    """A classes.txt saved as 'UTF-8 with BOM' named its first class '\\ufeffbright'; COCO JSON was refused."""
    picture = np.zeros((40, 64, 3), np.uint8)
    picture[2:12, 48:62] = 255
    (tmp_path / "yolo" / "images").mkdir(parents=True)
    (tmp_path / "yolo" / "labels").mkdir()
    Image.fromarray(picture).save(tmp_path / "yolo" / "images" / "a.png")
    (tmp_path / "yolo" / "classes.txt").write_bytes(BOM + b"bright\ndark\n")
    (tmp_path / "yolo" / "labels" / "a.txt").write_bytes(BOM + b"0 0.859375 0.175 0.21875 0.25\n")
    assert load_dataset(tmp_path / "yolo").labels == ["bright"]
    Image.fromarray(picture).save(tmp_path / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "bright"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [48, 2, 14, 10], "iscrowd": 0}]}
    (tmp_path / "coco.json").write_bytes(BOM + json.dumps(coco).encode())
    assert load_dataset(tmp_path / "coco.json").labels == ["bright"]
    (tmp_path / "a.json").write_bytes(BOM + json.dumps({"image": "a.png", "regions": {"sq": [48, 2, 62, 12]}}).encode())
    assert load_annotated(tmp_path / "a.json").regions["sq"] == Box(48, 2, 62, 12)
