"""The preprocessing geometry is undone exactly: heatmaps land on the original image's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from pytest_camcheck import CamCheckError, compute_cam, geometry_neutral
from pytest_camcheck.geometry import Geometry, infer_geometry

SIZES = [(300, 400), (400, 300), (224, 224), (97, 513), (513, 97), (50, 60), (257, 255)]
PIPELINES = {
    "resize-int+crop": lambda: T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]),
    "resize-hw": lambda: T.Compose([T.Resize((120, 90)), T.ToTensor()]),
    "resize-max": lambda: T.Compose([T.Resize(100, max_size=150), T.ToTensor()]),
    "crop-larger-than-image": lambda: T.Compose([T.CenterCrop((260, 300)), T.ToTensor()]),
    "v2": lambda: v2.Compose([v2.ToImage(), v2.Resize(160), v2.CenterCrop((128, 144)),
                              v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.2] * 3)]),
    "preset": lambda: torchvision.models.ResNet18_Weights.DEFAULT.transforms(),
    "sequential": lambda: torch.nn.Sequential(T.Resize(64), T.CenterCrop(48)),
    "identity": lambda: T.Compose([torch.nn.Identity(), T.Resize(64), T.ToTensor()]),  # a placeholder step
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize("size", SIZES)
def test_input_size_matches_what_torchvision_produces(name: str, size: tuple[int, int]) -> None:
    prep = PIPELINES[name]()
    image = Image.new("RGB", (size[1], size[0]))
    tensor = prep(image if name != "sequential" else T.functional.to_tensor(image))
    assert infer_geometry(prep, size).input_size == tuple(tensor.shape[-2:])


def _ramp(size: tuple[int, int], axis: int) -> np.ndarray:
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    return ((xs + 0.5) / w if axis == 1 else (ys + 0.5) / h).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ["resize-int+crop", "resize-hw", "v2", "preset", "crop-larger-than-image"])
@pytest.mark.parametrize("size", [(300, 400), (400, 300), (97, 250)])
def test_a_map_pushed_through_the_preprocessing_comes_back_in_place(name: str, size: tuple[int, int],
                                                                     axis: int) -> None:
    """A ramp along x (or y) is preprocessed like an image, then mapped back: it must equal the original ramp
    wherever the model saw the image, and be 0 where it did not."""
    prep = PIPELINES[name]()
    ramp = _ramp(size, axis)
    geom = infer_geometry(prep, size)
    pushed = T.functional.center_crop(
        T.functional.resize(torch.from_numpy(ramp)[None], list(_resize_for(prep, size)), antialias=True),
        list(geom.input_size)) if name != "crop-larger-than-image" else T.functional.center_crop(
        torch.from_numpy(ramp)[None], list(geom.input_size))
    back = geom.to_image(pushed).numpy()[0]
    seen = back > 0
    assert seen.mean() > 0.2
    inner = seen & np.pad(np.ones((size[0] - 8, size[1] - 8), bool), 4)
    ys, xs = np.nonzero(inner)
    core = (slice(ys.min() + 4, ys.max() - 3), slice(xs.min() + 4, xs.max() - 3))
    np.testing.assert_allclose(back[core], ramp[core], atol=0.02)
    rows, cols = np.nonzero(seen)
    if name in ("resize-int+crop", "preset", "v2"):
        assert (rows.min() > 0) or (cols.min() > 0)


def _resize_for(prep: object, size: tuple[int, int]) -> tuple[int, int]:
    geom = Geometry.identity(size)
    for step in getattr(prep, "transforms", []) or [prep]:
        if type(step).__name__ == "Resize":
            return infer_geometry(step, size).input_size
        if type(step).__name__ == "ImageClassification":
            return infer_geometry(T.Resize(step.resize_size), size).input_size
    return geom.input_size


def test_unseen_pixels_are_zero_and_the_crop_window_is_where_torchvision_puts_it() -> None:
    prep = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    geom = infer_geometry(prep, (300, 600))
    back = geom.to_image(torch.ones(1, 7, 7)).numpy()[0]
    cols = np.nonzero(back.max(axis=0) > 0)[0]
    rows = np.nonzero(back.max(axis=1) > 0)[0]
    # Resize(256): 300x600 -> 256x512; CenterCrop(224): top 16, left 144, i.e. original x in [168.75, 431.25]
    # and y in [18.75, 281.25]: the pixels whose centres fall inside are columns 169..430 and rows 19..280.
    assert (cols.min(), cols.max()) == (169, 430)
    assert (rows.min(), rows.max()) == (19, 280)
    np.testing.assert_allclose(back[19:281, 169:431], 1.0, atol=1e-6)


def test_the_heatmap_comes_back_at_the_original_size_through_compute_cam() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3)
    image = Image.fromarray((np.random.default_rng(0).random((180, 260, 3)) * 255).astype(np.uint8))
    prep = T.Compose([T.Resize(128), T.CenterCrop(112), T.ToTensor()])
    r = compute_cam(net, image, target=1, preprocess=prep)
    assert r.heatmap.shape == (180, 260)
    assert r.heatmap[:, :20].max() == 0.0 and r.heatmap[:, -20:].max() == 0.0


@pytest.mark.parametrize("size,input_size", [((224, 224), (224, 224)), ((300, 400), (120, 90)), ((97, 513), (64, 64))])
def test_the_plain_resize_shortcut_equals_the_general_resampling(size: tuple[int, int],
                                                                 input_size: tuple[int, int]) -> None:
    geom = Geometry.identity(size).resized(input_size)
    assert geom.is_plain_resize()
    maps = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(0))
    # a shift far below float resolution takes the general grid path but describes the same geometry
    shifted = Geometry(geom.image_size, geom.input_size, type(geom.y)(geom.y.scale, 1e-300), geom.x)
    assert not shifted.is_plain_resize()
    np.testing.assert_allclose(geom.to_image(maps).numpy(), shifted.to_image(maps).numpy(), atol=1e-5)
    assert not infer_geometry(T.Compose([T.Resize(256), T.CenterCrop(224)]), (300, 400)).is_plain_resize()


def test_a_batch_of_pictures_of_several_sizes_places_each_map_on_its_own_picture() -> None:
    """Maps of pictures with the same geometry are resampled together; each must still come back on its own
    picture, in order, exactly as when the picture is explained alone."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    rng = np.random.default_rng(1)
    sizes = [(180, 260), (90, 70), (180, 260), (64, 64), (90, 70)]
    pictures = [Image.fromarray((rng.random(s + (3,)) * 255).astype(np.uint8)) for s in sizes]
    prep = T.Compose([T.Resize((96, 96)), T.ToTensor()])
    targets = [0, 2, 1, 1, 0]
    together = compute_cam(net, pictures, target=targets, preprocess=prep)
    for picture, target, size, r in zip(pictures, targets, sizes, together):
        alone = compute_cam(net, picture, target=target, preprocess=prep)
        assert r.heatmap.shape == size and r.target == target
        np.testing.assert_allclose(r.heatmap, alone.heatmap, atol=1e-4)


def test_tensor_input_gives_a_map_at_tensor_size() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3)
    assert compute_cam(net, torch.rand(3, 70, 90), target=0).heatmap.shape == (70, 90)


@pytest.mark.parametrize("step", [T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ColorJitter(0.2),
                                  T.Lambda(lambda im: im)])
def test_unknown_or_random_steps_are_refused(step: object) -> None:
    with pytest.raises(CamCheckError, match="preprocess|transforms"):
        infer_geometry(T.Compose([step, T.ToTensor()]), (40, 40))


def test_a_callable_declared_neutral_is_accepted() -> None:
    prep = T.Compose([T.Resize(32), geometry_neutral(lambda im: T.functional.to_tensor(im) * 2 - 1)])
    assert infer_geometry(prep, (64, 128)).input_size == (32, 64)


class CenterCrop:  # albumentations-style: height and width, no .size
    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def __call__(self, im: Image.Image) -> Image.Image:
        return T.functional.center_crop(im, [self.height, self.width])


class Resize(torch.nn.Module):  # PIL's (width, height) order
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, im: Image.Image) -> Image.Image:
        return im.resize(self.size)


class _TopLeftCrop:  # torchvision's attribute, another crop
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, im: Image.Image) -> Image.Image:
        return im.crop((0, 0, self.size, self.size))


TopLeftCrop = type("CenterCrop", (_TopLeftCrop,), {})


class SubclassedCrop(T.CenterCrop):  # torchvision's class, another crop
    def forward(self, im: Image.Image) -> Image.Image:
        return T.functional.crop(im, 0, 0, *self.size)


class ToTensor:
    def __call__(self, im: Image.Image) -> torch.Tensor:
        return T.functional.to_tensor(im).flip(-1)


@pytest.mark.parametrize("step", [CenterCrop(100, 100), Resize((120, 120)), TopLeftCrop(112), SubclassedCrop(112),
                                  ToTensor()],
                         ids=["albumentations-style", "pil-size-order", "same-name-top-left", "subclass-top-left",
                              "same-name-flipped"])
def test_a_step_named_like_torchvisions_is_refused_naming_its_class(step: object) -> None:
    """Steps are recognised by class, not name: a look-alike gave an AttributeError, or a map at the wrong columns."""
    image = Image.new("RGB", (225, 134), "gray")
    prep = T.Compose([T.Resize(112), step, T.ToTensor()][int(isinstance(step, ToTensor)):])
    how = "a subclass of torchvision's CenterCrop" if isinstance(step, T.CenterCrop) else (
        f"not torchvision's {type(step).__name__}")
    with pytest.raises(CamCheckError, match=rf"is {__name__}\.{type(step).__qualname__}, {how}, so where it moves "
                                            r"pixels cannot be known.*Fix: build preprocess from torchvision's own "
                                            r".*geometry_neutral.*pass the tensor"):
        compute_cam(torchvision.models.resnet18(num_classes=3), image, target=0, preprocess=prep)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_torchvision_pipeline_is_still_known(name: str) -> None:
    assert infer_geometry(PIPELINES[name](), (97, 250)).input_size[0] > 0


def test_a_tensor_through_a_preprocess_that_changes_its_size_unexpectedly_is_refused() -> None:
    prep = T.Compose([T.Resize(32), geometry_neutral(lambda t: t[..., :20])])
    with pytest.raises(CamCheckError, match=r"preprocess produced a tensor of size \(32, 20\) but its transforms "
                                            r"describe \(32, 64\)"):
        compute_cam(torchvision.models.resnet18(num_classes=3), torch.rand(3, 64, 128), target=0, preprocess=prep)


def test_seen_is_where_the_map_can_be_nonzero() -> None:
    geom = infer_geometry(T.Compose([T.Resize(256), T.CenterCrop(224)]), (300, 600))
    seen = geom.seen()
    back = geom.to_image(torch.ones(1, 7, 7)).numpy()[0]
    assert seen.dtype == bool and seen.shape == (300, 600)
    np.testing.assert_array_equal(seen, back > 0)
    assert Geometry.identity((5, 7)).seen().all() and Geometry.identity((5, 7)).resized((3, 3)).seen().all()
    assert infer_geometry(T.CenterCrop((260, 300)), (97, 250)).seen().all()  # padding: all of the image is seen


@pytest.mark.parametrize("size", [(60, 80), (61, 79), (97, 131), (224, 224), (40, 300)])
def test_seen_box_is_the_rectangle_of_seen(size) -> None:
    from torchvision import transforms as T

    for steps in ([T.Resize(48), T.CenterCrop(40)], [T.Resize((50, 70)), T.CenterCrop((33, 71))], [T.CenterCrop(400)],
                  [T.CenterCrop((20, 21))], [T.Resize((32, 32))]):
        geometry = infer_geometry(T.Compose(steps), size)
        seen, box = geometry.seen(), geometry.seen_box()
        if box is None:
            assert seen.all()
        else:
            expected = np.zeros(size, dtype=bool)
            expected[box] = True
            assert not seen.all() and np.array_equal(seen, expected)
