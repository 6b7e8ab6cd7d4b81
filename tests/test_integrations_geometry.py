"""timm's eval transforms and Hugging Face image processors: their geometry is undone exactly.

Each pipeline is run on a picture whose red channel is a ramp ``x + 1`` and green channel ``y + 1`` (exact in
uint8 for pictures under 255 px): every input pixel then carries the original coordinate it was sampled at,
which must equal the geometry's prediction ``scale * (u + 0.5) + shift``, and padding (value 0) must sit exactly
where the geometry says the model input lies outside the picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_camcheck import CamCheckError, compute_cam
from pytest_camcheck.errors import GeometryError
from pytest_camcheck.geometry import Geometry, infer_geometry

timm_data = pytest.importorskip("timm.data")
transformers = pytest.importorskip("transformers")

SIZES = [(200, 150), (97, 250), (250, 97), (64, 64), (33, 47)]


def coordinate_picture(size: tuple[int, int]) -> Image.Image:
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xs + 1, ys + 1, np.zeros_like(xs)], axis=-1).astype(np.uint8))


def assert_positions(geom: Geometry, pixels: torch.Tensor, size: tuple[int, int], scale: float = 255.0) -> None:
    """``pixels`` (3, h, w) from the pipeline: the coordinates they carry are where ``geom`` says they came from."""
    assert tuple(pixels.shape[-2:]) == geom.input_size
    values = pixels[:2].double().numpy() * scale - 1  # original pixel index along x and y, -1 where padded
    inside, outside = [], []
    for axis, length, n in ((geom.x, size[1], values.shape[2]), (geom.y, size[0], values.shape[1])):
        u = np.arange(n) + 0.5
        expected = axis.scale * u + axis.shift - 0.5  # a linear ramp resampled at the source coordinate
        margin = 1.5 + abs(axis.scale)  # an antialiased downscale averages about one input pixel's width
        inside.append((expected, (expected > margin) & (expected < length - 1 - margin)))
        outside.append((axis.scale * (u + 0.5) + axis.shift < 0) | (axis.scale * (u - 0.5) + axis.shift > length))
    (ex, in_x), (ey, in_y) = inside
    core = in_y[:, None] & in_x[None, :]
    assert core.sum() >= 4
    np.testing.assert_allclose(values[0][core], np.broadcast_to(ex[None, :], core.shape)[core], atol=0.75)
    np.testing.assert_allclose(values[1][core], np.broadcast_to(ey[:, None], core.shape)[core], atol=0.75)
    padded = outside[1][:, None] | outside[0][None, :]
    assert np.all(values[:, padded] == -1.0)  # zero padding exactly where the geometry puts it


def timm_transform(mode: str, crop_pct: float, input_size: tuple[int, int]):
    return timm_data.create_transform(input_size=(3, *input_size), crop_pct=crop_pct, crop_mode=mode,
                                      interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
@pytest.mark.parametrize("crop_pct,input_size", [(0.875, (32, 32)), (1.0, (40, 40)), (0.9, (36, 48))])
@pytest.mark.parametrize("size", SIZES)
def test_timm_eval_transforms_put_every_pixel_where_the_geometry_says(mode: str, crop_pct: float,
                                                                     input_size: tuple[int, int],
                                                                     size: tuple[int, int]) -> None:
    tf = timm_transform(mode, crop_pct, input_size)
    pixels = tf(coordinate_picture(size))
    assert_positions(infer_geometry(tf, size), pixels, size)


def test_timm_border_mode_pads_and_the_pads_come_back_as_unseen() -> None:
    tf = timm_transform("border", 1.0, (48, 48))
    names = [type(t).__name__ for t in tf.transforms]
    assert names[:3] == ["ResizeKeepRatio", "CenterCropOrPad", "MaybeToTensor"]
    size = (60, 200)  # wide: the resized picture is 48 wide and 14 tall, padded above and below
    geom = infer_geometry(tf, size)
    back = geom.to_image(torch.ones(1, *geom.input_size)).numpy()[0]
    assert back.shape == size and back.min() > 1 - 1e-6  # the whole picture is seen
    seen_rows = (geom.y.scale * (np.arange(48) + 0.5) + geom.y.shift)
    assert (seen_rows < 0).sum() >= 10 and (seen_rows > 60).sum() >= 10


def test_timm_prefetcher_and_trim_border_steps() -> None:
    tf = timm_data.create_transform(input_size=(3, 32, 32), crop_pct=0.875, use_prefetcher=True,
                                    crop_border_pixels=5)
    assert [type(t).__name__ for t in tf.transforms][0] == "TrimBorder"
    assert type(tf.transforms[-1]).__name__ == "MaybePILToTensor"
    size = (90, 120)
    pixels = tf(coordinate_picture(size))
    assert pixels.dtype == torch.uint8
    assert_positions(infer_geometry(tf, size), pixels.float(), size, scale=1.0)


def test_timm_random_transforms_are_refused() -> None:
    train = timm_data.create_transform(input_size=(3, 32, 32), is_training=True)
    with pytest.raises(GeometryError, match="random"):
        infer_geometry(train, (64, 64))
    from timm.data.transforms import ResizeKeepRatio

    with pytest.raises(GeometryError, match="random_scale_prob"):
        infer_geometry(ResizeKeepRatio(32, random_scale_prob=0.5), (64, 64))


def hf_processors() -> dict[str, object]:
    from transformers import (CLIPImageProcessor, ConvNextImageProcessor, ConvNextImageProcessorPil,
                              DeiTImageProcessor, ViTImageProcessor, ViTImageProcessorPil)

    plain = dict(do_normalize=False)
    return {
        "vit": ViTImageProcessor(size={"height": 32, "width": 48}, **plain),
        "vit-pil": ViTImageProcessorPil(size={"height": 40, "width": 24}, **plain),
        "vit-shortest-edge": ViTImageProcessor(size={"shortest_edge": 30}, **plain),
        "convnext-crop-pct": ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875, **plain),
        "convnext-crop-pct-pil": ConvNextImageProcessorPil(size={"shortest_edge": 36}, crop_pct=0.8, **plain),
        "convnext-warp": ConvNextImageProcessor(size={"shortest_edge": 384}, **plain),
        "clip": CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 26, "width": 29}, **plain),
        # crops larger than the resized picture, with odd padding: the two backends pad differently
        "deit-pad": DeiTImageProcessor(size={"height": 30, "width": 25}, crop_size={"height": 37, "width": 28},
                                       **plain),
        "deit-pad-crop": DeiTImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 33, "width": 20},
                                            **plain),
    }


@pytest.mark.parametrize("name", sorted(hf_processors()))
@pytest.mark.parametrize("size", SIZES)
def test_hf_image_processors_put_every_pixel_where_the_geometry_says(name: str, size: tuple[int, int]) -> None:
    processor = hf_processors()[name]
    pixels = processor(images=coordinate_picture(size), return_tensors="pt")["pixel_values"][0]
    assert_positions(infer_geometry(processor, size), pixels, size)


def test_hf_pil_backend_pads_odd_crops_the_other_way() -> None:
    from transformers import DeiTImageProcessor
    from transformers.models.deit import DeiTImageProcessorPil

    kwargs = dict(size={"height": 30, "width": 30}, crop_size={"height": 35, "width": 35}, do_normalize=False)
    size = (64, 64)
    tv, pil = DeiTImageProcessor(**kwargs), DeiTImageProcessorPil(**kwargs)
    g_tv, g_pil = infer_geometry(tv, size), infer_geometry(pil, size)
    assert g_tv.y.shift != g_pil.y.shift
    for processor, geom in ((tv, g_tv), (pil, g_pil)):
        assert_positions(geom, processor(images=coordinate_picture(size), return_tensors="pt")["pixel_values"][0],
                         size)


def test_auto_image_processor_built_offline_from_a_config(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 40}, "crop_pct": 0.9,
        "do_normalize": False, "do_rescale": True, "do_resize": True, "resample": 3,
    }))
    processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path), local_files_only=True)
    size = (97, 250)
    pixels = processor(images=coordinate_picture(size), return_tensors="pt")["pixel_values"][0]
    assert_positions(infer_geometry(processor, size), pixels, size)


def test_a_processor_that_cannot_be_undone_gets_a_short_message() -> None:
    from transformers import LevitImageProcessor

    with pytest.raises(GeometryError) as err:
        infer_geometry(LevitImageProcessor(), (64, 64))
    message = str(err.value)
    assert "LevitImageProcessor" in message and "resize" in message and "Fix:" in message
    assert len(message) < 500 and "{" not in message and "image_mean" not in message


def test_compute_cam_with_a_processor_places_the_map_on_the_original_picture() -> None:
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                          num_labels=3)).eval()
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.5)  # keeps the middle half
    picture = Image.fromarray((np.random.default_rng(0).random((64, 128, 3)) * 255).astype(np.uint8))
    r = compute_cam(model, picture, target=1, preprocess=processor)
    assert r.heatmap.shape == (64, 128) and not r.empty
    assert r.heatmap[:, :30].max() == 0 and r.heatmap[:, -30:].max() == 0 and r.heatmap[:, 40:88].max() > 0
    assert r.preprocessing.startswith("given: ConvNextImageProcessor")
    pixels = processor(images=picture, return_tensors="pt")["pixel_values"]
    direct = compute_cam(model, pixels[0], target=1)
    np.testing.assert_allclose(r.raw, direct.raw, rtol=1e-4, atol=1e-5)


def test_a_processor_that_cannot_be_undone_is_refused_by_compute_cam() -> None:
    from transformers import LevitImageProcessor

    with pytest.raises(CamCheckError, match="LevitImageProcessor"):
        compute_cam(torch.nn.Conv2d(3, 2, 3), Image.new("RGB", (64, 64)), preprocess=LevitImageProcessor())


def test_a_float_tensor_is_not_given_to_a_processor_that_rescales() -> None:
    from transformers import ViTImageProcessor

    with pytest.raises(CamCheckError, match="would be scaled twice"):
        compute_cam(torch.nn.Conv2d(3, 2, 3), torch.rand(3, 40, 40), preprocess=ViTImageProcessor())
