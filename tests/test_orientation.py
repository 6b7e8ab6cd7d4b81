"""Phone photos store their pixels sideways with an EXIF orientation tag; every viewer shows them turned. Maps,
boxes, overlays and the sample-image catalogue use the pixels people see, for all eight orientations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pytest_camcheck import Box, assert_attends_to, assert_not_attends_to, compute_cam
from pytest_camcheck.images import load_annotated, load_image
from pytest_camcheck.render import overlay

W, H = 48, 32  # as displayed
OBJECT = Box(4, 4, 16, 12)  # a bright patch near the top-left corner, as displayed

# Stored pixels = the displayed picture put through the inverse of what the tag asks a viewer to do
# (EXIF 2.3, tag 0x0112: 6 = "rotate 90 degrees clockwise to display", 8 = "rotate 90 counter-clockwise").
STORED_FROM_SHOWN = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),  # shown = stored turned clockwise, so stored = shown turned counter-clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


class Brightness(nn.Module):
    """features = the image's brightness; class 0 = its mean, class 1 = minus it: Grad-CAM of class 0 is the
    brightness itself, so the map is bright where the picture is."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def shown_picture() -> np.ndarray:
    a = np.full((H, W, 3), 20, np.uint8)
    a[OBJECT.y0:OBJECT.y1, OBJECT.x0:OBJECT.x1] = 240
    return a


def phone_jpeg(folder: Path, orientation: int) -> Path:
    stored = np.ascontiguousarray(STORED_FROM_SHOWN[orientation](shown_picture()))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = folder / f"photo-{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=100, subsampling=0, exif=exif)
    return path


ORIENTATIONS = list(range(1, 9))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("given", ["path", "PIL image"])
def test_the_map_is_in_the_pixels_people_see(tmp_path: Path, orientation: int, given: str) -> None:
    path = phone_jpeg(tmp_path, orientation)
    model = Brightness()
    image = path if given == "path" else Image.open(path)
    r = compute_cam(model, image, 0, layer="features")
    assert r.image_size == (H, W) and r.heatmap.shape == (H, W)
    assert r.orientation == orientation
    assert np.abs(np.asarray(r.image, np.int16) - shown_picture()).max() < 16
    y, x = np.unravel_index(np.argmax(r.heatmap), r.heatmap.shape)
    assert OBJECT.x0 <= x < OBJECT.x1 and OBJECT.y0 <= y < OBJECT.y1
    assert_attends_to(model, path, 0, OBJECT, layer="features")
    with pytest.raises(AssertionError):
        assert_not_attends_to(model, path, 0, OBJECT, layer="features")


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_annotations_and_overlays_use_the_displayed_pixels(tmp_path: Path, orientation: int) -> None:
    path = phone_jpeg(tmp_path, orientation)
    spec = {"image": path.name, "regions": {"object": [OBJECT.x0, OBJECT.y0, OBJECT.x1, OBJECT.y1], "wide": [0, 0, W, 4]}}
    (tmp_path / "photo.json").write_text(json.dumps(spec))
    sample = load_annotated(tmp_path / "photo.json")  # "wide" lies inside only the displayed W x H picture
    assert sample.size == (H, W)
    patch = np.asarray(sample.image)[OBJECT.y0:OBJECT.y1, OBJECT.x0:OBJECT.x1]
    assert patch.min() > 200
    heatmap = np.zeros((H, W), np.float32)
    turned, upright = overlay(path, heatmap), overlay(shown_picture(), heatmap)
    assert turned.size == upright.size
    assert np.abs(np.asarray(turned, np.int16) - np.asarray(upright, np.int16)).mean() < 4
    assert load_image(Image.open(path)).size == (W, H)


def test_an_image_already_turned_is_not_turned_again(tmp_path: Path) -> None:
    from PIL import ImageOps

    with Image.open(phone_jpeg(tmp_path, 6)) as img:
        upright = ImageOps.exif_transpose(img)
    assert compute_cam(Brightness(), upright, 0, layer="features").orientation == 1
    assert load_image(upright).size == (W, H)
