"""Explanation-quality checks: sanity (randomisation), faithfulness (deletion / insertion), stability.

Behaviour claims are measured on held-out scenes (seeds from HELD_OUT + 310_000, which neither training nor the
calibration in benchmarks/calibrate_quality.py used), with deliberately broken explanations as negative controls.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from benchmarks.quality_controls import EdgeExplained, NoisyGradients, inverted_map, random_map
from pytest_camcheck import (CamCheckError, assert_faithful, assert_sane, assert_stable, compute_cam, context,
                             quality)
from pytest_camcheck.bundled import ShapesNet, load_bundled
from pytest_camcheck.scenes import HELD_OUT, make_scene
from pytest_camcheck.zoo import ModelInfo, attach_info, model_info

from .models import SmallCNN

SEEDS = range(HELD_OUT + 310_000, HELD_OUT + 310_012)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes() -> nn.Module:
    return load_bundled("camcheck-shapes")


@pytest.fixture(scope="module")
def scenes() -> list:
    return [make_scene(s) for s in SEEDS]


@pytest.fixture(scope="module")
def small() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


# ------------------------------------------------------------------------------------------------- bad input

X = torch.rand(3, 32, 32)
BAD = [
    (assert_stable, dict(noise=-0.1), "noise=-0.1 is out of range"),
    (assert_stable, dict(noise=0), "noise=0 is out of range"),
    (assert_stable, dict(noise=float("nan")), "not a finite number"),
    (assert_stable, dict(samples=0), "samples=0 is not valid"),
    (assert_stable, dict(min_similarity=2), "min_similarity=2 is out of range"),
    (assert_faithful, dict(steps=1), "steps=1 is not valid"),
    (assert_faithful, dict(steps=2.5), "steps=2.5 is not valid"),
    (assert_faithful, dict(steps=True), "steps=True is not valid"),
    (assert_faithful, dict(baseline="black"), "unknown baseline 'black'; use one of: blur, mean, zero"),
    (assert_faithful, dict(metric="morf"), "unknown metric 'morf'"),
    (assert_faithful, dict(orderings=0), "orderings=0 is not valid"),
    (assert_faithful, dict(orderings=1), "orderings=1 gives no spread"),
    (assert_faithful, dict(confidence=1.0), "confidence=1.0 is not valid"),
    (assert_faithful, dict(confidence=float("nan")), "confidence=nan is not a finite number"),
    (assert_faithful, dict(confidence=-0.1), "confidence=-0.1 is out of range"),
    (assert_faithful, dict(heatmap=np.zeros((31, 32), np.float32)), r"heatmap= has shape \(31, 32\) but the image"),
    (assert_faithful, dict(heatmap=np.full((32, 32), np.nan, np.float32)), "heatmap= contains NaN"),
    (assert_faithful, dict(heatmap=np.zeros((32, 32, 1), np.float32)), "expected 2-D"),
    (assert_faithful, dict(heatmap=np.zeros((32, 32), np.int64)), "dtype int64"),
    (assert_faithful, dict(heatmap=[[0.0]]), "not a numpy array"),
    (assert_faithful, dict(target=lambda out: out.sum()), "callable target"),
    (assert_sane, dict(max_similarity=1.5), "max_similarity=1.5 is out of range"),
    (assert_sane, dict(seed=-1), "seed=-1 is not valid"),
    (assert_sane, dict(seed=2**62), "seed=4611686018427387904 is too large"),
    (assert_stable, dict(seed=2**64), "is too large; pass an integer from 0 to 2"),
    (assert_faithful, dict(seed=2**32), "seed=4294967296 is too large"),
    (assert_stable, dict(noise=1e39), "noise=1e\\+39 takes the image's values beyond float32"),
    (assert_faithful, dict(steps=32 * 32 + 1), "steps=1025 is more than the image's 1024 pixels"),
    (assert_faithful, dict(heatmap=torch.zeros(32, 32, dtype=torch.complex64)), "dtype complex64"),
    (assert_sane, dict(target=[0, 1]), "one target at a time"),
]


@pytest.mark.parametrize("check,kwargs,message", BAD, ids=[f"{c.__name__}-{m[:20]}" for c, _, m in BAD])
def test_bad_input_is_a_camcheck_error(small: nn.Module, check, kwargs: dict, message: str) -> None:
    kwargs = dict(kwargs)
    target = kwargs.pop("target", 0)
    with pytest.raises(CamCheckError, match=message):
        check(small, X, target, **kwargs)


@pytest.mark.parametrize("check", [assert_sane, assert_faithful, assert_stable])
def test_a_batch_is_refused(small: nn.Module, check) -> None:
    with pytest.raises(CamCheckError, match="one image at a time"):
        check(small, torch.rand(2, 3, 32, 32), 0)


def test_noise_below_one_grey_level_or_above_the_range_of_a_picture_is_refused(small: nn.Module) -> None:
    picture = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(CamCheckError, match="less than one grey level"):
        assert_stable(small, picture, 0, noise=0.003)
    for noise in (1.01, 129, 1e300):
        with pytest.raises(CamCheckError, match="more than the whole range of an 8-bit picture"):
            assert_stable(small, picture, 0, noise=noise)
    assert quality.stability(small, picture, 0, noise=1.0, samples=2).noise == 1.0  # the whole range is allowed


# ------------------------------------------------------------------------------------------------ the cascade

@pytest.mark.parametrize("make,expected", [
    (lambda: torchvision.models.resnet18(), 8),
    (lambda: torchvision.models.resnet50(), 9),
    (lambda: torchvision.models.vit_b_16(), 15),
    (lambda: torchvision.models.convnext_tiny(), 9),
    (lambda: torchvision.models.mobilenet_v3_small(), 15),
    (lambda: ShapesNet(), 7),
])
def test_cascade_groups_follow_top_level_blocks(make, expected: int) -> None:
    with torch.device("meta"):  # the structure is all that counts
        net = make()
    groups = quality.cascade_groups(net)
    assert len(groups) == expected and 5 <= len(groups) <= 16
    assert len(set(groups)) == len(groups)


def test_cascade_covers_every_parameter_once() -> None:
    with torch.device("meta"):
        net = torchvision.models.vit_b_16()
    units = quality._groups(net)
    ids = [id(p) for u in units for p in u.params]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))


class _Fragile(nn.Module):
    """Trained-looking BatchNorm statistics (tiny running variance) after every conv: with the statistics kept,
    re-initialised convolutions upstream overflow to inf and NaN within a few blocks."""

    def __init__(self) -> None:
        super().__init__()
        layers = []
        for _ in range(16):
            bn = nn.BatchNorm2d(8)
            bn.running_var.fill_(1e-8)
            layers += [nn.Conv2d(8, 8, 3, padding=1), bn]
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(self.stem(x)).mean(dim=(2, 3)))


def test_no_step_yields_nan_and_norms_are_reset_not_kept() -> None:
    torch.manual_seed(3)
    net = _Fragile().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1e-4)  # keeps the original model finite despite the tiny variances
    r = quality.sanity(net, torch.rand(3, 24, 24), 0, layer="features.2")
    assert all(math.isfinite(s.spearman) and math.isfinite(s.ssim) for s in r.curve)
    # the same randomisation with the statistics kept overflows: the reset is what prevents it
    twin = quality.copy.deepcopy(net)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
        out = twin(torch.rand(1, 3, 24, 24))
    assert not torch.isfinite(out).all()


def test_groups_that_are_single_modules_are_reset_as_in_a_new_network() -> None:
    """resnet18's bn1 and fc and the bundled ViT's final LayerNorm are groups of one module each: their own
    reset_parameters re-initialises them (running statistics 0 / 1, norm weights 1, biases 0, a Linear within its
    initialisation bound), not a normal draw of each parameter's spread that keeps the statistics."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4)
    with torch.no_grad():  # trained-looking values that a reset must replace
        net.bn1.running_mean.fill_(0.5), net.bn1.running_var.fill_(3.0), net.bn1.weight.fill_(2.0)
        net.bn1.bias.fill_(0.7), net.fc.weight.fill_(5.0)
    vit = load_bundled("camcheck-shapes-vit")
    assert not torch.equal(vit.fc_norm.weight, torch.ones_like(vit.fc_norm.weight))  # trained
    twins = [quality.copy.deepcopy(net), quality.copy.deepcopy(vit)]
    for twin, names in zip(twins, (("fc", "bn1"), ("fc_norm",))):
        units = {u.name: u for u in quality._groups(twin)}
        for step, name in enumerate(names, start=1):
            quality._randomise(units[name], step, torch.device("cpu"))
    bn, fc, ln = twins[0].bn1, twins[0].fc, twins[1].fc_norm
    assert torch.equal(bn.running_mean, torch.zeros(64)) and torch.equal(bn.running_var, torch.ones(64))
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))
    bound = 1 / math.sqrt(512)  # nn.Linear's reset: uniform within 1 / sqrt(fan_in)
    weight = fc.weight.detach()
    assert float(weight.abs().max()) <= bound and float(weight.std()) > bound / 4
    assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and torch.equal(ln.bias, torch.zeros_like(ln.bias))


class _AffineFreeNorm(nn.Module):
    """A BatchNorm without affine weights, between two layers: it has statistics but no parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4, affine=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x)).mean(dim=(2, 3)))


def test_statistics_without_parameters_are_reset_with_the_layer_they_normalise() -> None:
    net = _AffineFreeNorm()
    net.norm.running_mean.fill_(0.5), net.norm.running_var.fill_(3.0)
    units = {u.name: u for u in quality._groups(net)}
    assert list(units) == ["conv", "fc"] and units["conv"].stats == [net.norm]
    quality._randomise(units["fc"], 1, torch.device("cpu"))
    assert float(net.norm.running_mean[0]) == 0.5  # not yet: it goes with conv
    quality._randomise(units["conv"], 2, torch.device("cpu"))
    assert torch.equal(net.norm.running_mean, torch.zeros(4)) and torch.equal(net.norm.running_var, torch.ones(4))


def test_the_sanity_message_marks_steps_whose_map_is_empty(shapes: nn.Module) -> None:
    scene = make_scene(HELD_OUT + 320_000)  # a cascade step of this scene leaves no positive evidence
    with pytest.raises(AssertionError) as err:
        assert_sane(shapes, scene.image, scene.label, max_similarity=-1.0)
    r = quality.sanity(shapes, scene.image, scene.label)
    empty = [s.step for s, m in zip(r.curve, r.maps) if s.step and m.min() == m.max()]
    marked = [int(line.split("|")[0]) for line in str(err.value).splitlines() if "(map empty" in line]
    assert empty and marked == empty and all(r.curve[k].spearman == 0.0 for k in empty)


def test_sanity_fixes_the_original_target_and_leaves_the_global_rng_alone(shapes: nn.Module) -> None:
    scene = make_scene(SEEDS[0])
    state = torch.random.get_rng_state()
    top = quality.sanity(shapes, scene.image, None)
    assert torch.equal(state, torch.random.get_rng_state())
    named = quality.sanity(shapes, scene.image, top.original.target)
    assert [s.spearman for s in top.curve] == [s.spearman for s in named.curve]
    other = quality.sanity(shapes, scene.image, None, seed=1)
    assert [s.spearman for s in other.curve] != [s.spearman for s in top.curve]


def test_sanity_carries_categories_and_preprocessing_to_the_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that lost the model's info would refuse the class name or see an unprocessed picture."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    prep = torchvision.transforms.Compose([torchvision.transforms.Resize(64), torchvision.transforms.ToTensor()])
    attach_info(net, ModelInfo("toy", ("cat", "dog", "fox"), prep))
    monkeypatch.setattr(quality.copy, "deepcopy", lambda m, memo=None: _plain_copy(m))
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8))
    r = quality.sanity(net, picture, "dog")
    assert r.original.label == "dog" and len(r.maps) == 9
    assert all(m.shape == (80, 100) for m in r.maps)


@pytest.mark.parametrize("kind", ["picture", "tensor"])
def test_the_blur_baseline_is_torchvisions_gaussian_blur(small: nn.Module, kind: str) -> None:
    import torchvision.transforms.functional as TF

    rng = np.random.default_rng(3)
    image = (Image.fromarray(rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)) if kind == "picture"
             else torch.from_numpy(rng.standard_normal((3, 61, 83)).astype(np.float32)))
    source = quality._Source(small, image, {})
    ours = quality._baseline(source, "blur")
    chw = source.pixels.permute(2, 0, 1).float() if kind == "picture" else source.pixels
    sigma = quality.BLUR_SIGMA * 61
    kernel = 2 * math.ceil(3 * sigma) + 1
    theirs = TF.gaussian_blur(chw[None], [kernel, kernel], [sigma, sigma])[0]
    if kind == "picture":
        theirs = theirs.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        assert int((ours.int() - theirs.int()).abs().max()) <= 1 and float((ours != theirs).float().mean()) < 0.01
    else:
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_numpy_and_torch_scalars_are_accepted_as_numbers(small: nn.Module) -> None:
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert quality.sanity(small, x, 1, max_similarity=np.float32(0.7)).max_similarity == pytest.approx(0.7)
    f = quality.faithfulness(small, x, 1, steps=3, orderings=2, min_gain=np.float32(-1), confidence=np.float64(0.5))
    assert f.min_gain == -1.0 and f.confidence == 0.5
    st = quality.stability(small, x, 1, samples=1, noise=torch.tensor(0.05), min_similarity=np.float32(0.5))
    assert st.noise == pytest.approx(0.05) and st.min_similarity == 0.5


def _plain_copy(model: nn.Module) -> nn.Module:
    twin = torchvision.models.resnet18(num_classes=3).eval()
    twin.load_state_dict(model.state_dict())
    return twin  # no info attached, as a copy made by a library that does not know about it


# ------------------------------------------------------------------------------------------------ faithfulness

def test_a_given_heatmap_is_judged_like_the_computed_one(shapes: nn.Module) -> None:
    scene = make_scene(SEEDS[1])
    computed = quality.faithfulness(shapes, scene.image, scene.label, steps=8, orderings=2)
    given = quality.faithfulness(shapes, scene.image, scene.label, steps=8, orderings=2,
                                 heatmap=computed.heatmap * 7.0 - 2.0)  # another scale: only the order counts
    assert given.curve == computed.curve and given.gain == computed.gain


def test_a_flat_map_never_passes(shapes: nn.Module) -> None:
    """An empty or constant map ranks no pixel above another, so its order is the seeded tie-break: one more random
    ordering, which beats the others by chance now and then. It must fail, whatever its curve."""
    scene = make_scene(HELD_OUT + 123)
    shape = scene.image.shape[:2]
    for heatmap in (np.zeros(shape, np.float32), np.full(shape, 0.3), np.full(shape, 7.0)):
        for seed in range(3):
            r = quality.faithfulness(shapes, scene.image, scene.label, heatmap=heatmap, seed=seed)
            assert r.flat and not r.passed, (seed, r.gain, r.chance_gain)
    with pytest.raises(AssertionError, match="the map is CONSTANT: it ranks no pixel above another"):
        assert_faithful(shapes, scene.image, scene.label, steps=8, heatmap=np.full(shape, 0.3))
    one = np.zeros(shape)
    one[0, 0] = 1e-3  # all but one pixel tied: as random as a constant map (it passed with seed 1)
    column = np.zeros(shape)
    column[:, :1] = 0.5
    for heatmap in (one, column):
        r = quality.faithfulness(shapes, scene.image, scene.label, heatmap=heatmap, seed=1)
        assert r.flat and not r.passed and r.ranked == np.count_nonzero(heatmap)
    size = one.size
    with pytest.raises(AssertionError, match=f"ranks only {shape[0]} pixels above its minimum, fewer than one "
                                             f"step's {math.ceil(size / 20)}.*steps >= {math.ceil(size / shape[0])}"):
        assert_faithful(shapes, scene.image, scene.label, heatmap=column, seed=1)
    enough = np.zeros(shape)
    enough.ravel()[: math.ceil(size / 4)] = np.linspace(1, 0.5, math.ceil(size / 4))  # one step's worth, steps=4
    assert not quality.faithfulness(shapes, scene.image, scene.label, steps=4, heatmap=enough).flat
    blind = load_bundled("camcheck-shapes")
    with torch.no_grad():
        blind.fc.weight[scene.label].zero_()  # no evidence for the class: an empty Grad-CAM map
    r = quality.faithfulness(blind, scene.image, scene.label, steps=8)
    assert r.result.empty and r.flat and not r.passed


def test_heatmaps_of_any_float_type_and_range_are_judged_by_their_order(shapes: nn.Module) -> None:
    scene = make_scene(SEEDS[1])
    computed = quality.faithfulness(shapes, scene.image, scene.label, steps=4, orderings=2)
    h = torch.from_numpy(computed.heatmap)
    wide = np.where(computed.heatmap > 0.5, 1e308, -1e308) / (computed.heatmap.astype(np.float64) + 1)  # finite,
    # but its range (max - min) overflows
    for given in (h.bfloat16(), h.to(torch.float8_e4m3fn), wide, (h * 6e4).half()):
        r = quality.faithfulness(shapes, scene.image, scene.label, steps=4, orderings=2, heatmap=given)
        assert np.isfinite(r.heatmap).all() and 0 <= r.heatmap.min() < r.heatmap.max() <= 1
        values = (given.double().numpy() if isinstance(given, torch.Tensor) else given).ravel()
        order = np.argsort(values, kind="stable")
        judged = r.heatmap.ravel()[order]  # the judged map, in the order of the values given
        assert (np.diff(judged) >= 0).all()  # the same order of pixels
        assert (np.diff(judged)[np.diff(values[order]) > 0] > 0).mean() > 0.99  # distinct values stay distinct
    with pytest.raises(CamCheckError, match="meta device"):
        quality.faithfulness(shapes, scene.image, scene.label, steps=4, heatmap=torch.empty(h.shape, device="meta"))


def test_keywords_that_would_do_nothing_are_refused(small: nn.Module) -> None:
    import inspect

    from pytest_camcheck.assertions import CamCheck

    signature = inspect.signature(compute_cam).parameters.values()
    assert quality.CAM_KEYWORDS == tuple(p.name for p in signature if p.kind is p.KEYWORD_ONLY)
    x, h = torch.rand(3, 32, 32), np.random.default_rng(0).random((32, 32))
    for keywords, match in [({"layer": "features"}, "so layer= would do nothing"), ({"method": "cam"}, "method="),
                            ({"device": "cuda:0"}, "never moves your model"), ({"lyer": "x"}, "unknown keyword lyer")]:
        with pytest.raises(CamCheckError, match=match):
            quality.faithfulness(small, x, 1, steps=3, heatmap=h, **keywords)
    for check in (quality.sanity, quality.stability, quality.faithfulness):
        with pytest.raises(CamCheckError, match="unknown keywords lyer, mehtod"):
            check(small, x, 1, lyer="x", mehtod="cam")
    # the fixture's bound device holds for a given map too; its bound method is not the user's, so it is dropped
    with pytest.raises(CamCheckError, match="never moves your model"):
        CamCheck(device="cuda:0").faithful(small, x, 1, steps=3, heatmap=h)
    given = CamCheck(device="cpu", method="cam").faithful(small, x, 1, steps=3, heatmap=h, min_gain=-1.0,
                                                          confidence=0)
    assert given.result is None and len(given.curve) == 4


def test_insertion_runs_the_other_way(shapes: nn.Module) -> None:
    scene = make_scene(SEEDS[2])
    d = quality.faithfulness(shapes, scene.image, scene.label, steps=6, orderings=1, confidence=0, baseline="mean")
    i = quality.faithfulness(shapes, scene.image, scene.label, steps=6, orderings=1, confidence=0, baseline="mean",
                             metric="insertion")
    assert d.curve[0] == pytest.approx(i.curve[-1]) and d.curve[-1] == pytest.approx(i.curve[0])


def test_a_tensor_image_is_perturbed_in_its_own_units(small: nn.Module) -> None:
    x = torch.rand(3, 32, 32)
    r = quality.faithfulness(small, x, 1, steps=4, orderings=1, confidence=0, baseline="zero")
    with torch.inference_mode():
        p = torch.softmax(small(torch.stack([x, torch.zeros_like(x)])), dim=1)[:, 1]
    assert r.curve[0] == pytest.approx(float(p[0]), abs=1e-6) and r.curve[-1] == pytest.approx(float(p[1]), abs=1e-6)


def test_a_picture_goes_through_the_users_preprocessing() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    prep = torchvision.transforms.Compose([torchvision.transforms.Resize(48), torchvision.transforms.CenterCrop(48),
                                           torchvision.transforms.ToTensor(),
                                           torchvision.transforms.Normalize([0.5] * 3, [0.2] * 3)])
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    r = quality.faithfulness(net, picture, 2, steps=3, orderings=1, confidence=0, baseline="zero", preprocess=prep)
    assert r.heatmap.shape == (60, 90)
    with torch.inference_mode():
        x = torch.stack([prep(picture), prep(Image.new("RGB", (90, 60)))])
        p = torch.softmax(net(x), dim=1)[:, 2]
    assert r.curve[0] == pytest.approx(float(p[0]), abs=1e-5) and r.curve[-1] == pytest.approx(float(p[1]), abs=1e-5)


def test_a_hugging_face_image_processor_preprocesses_the_copies() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    r = quality.faithfulness(net, picture, 0, steps=3, orderings=2, baseline="zero", preprocess=processor)
    with torch.inference_mode():
        x = processor(images=[picture, Image.new("RGB", (48, 40))], return_tensors="pt")["pixel_values"]
        p = torch.softmax(net(x), dim=1)[:, 0]
    assert r.curve[0] == pytest.approx(float(p[0]), abs=1e-5) and r.curve[-1] == pytest.approx(float(p[1]), abs=1e-5)


# ------------------------------------------------------------------------------------------------- stability

def test_perturbations_stay_in_the_ball_and_change_pixels(shapes: nn.Module) -> None:
    scene = make_scene(SEEDS[3])
    source = quality._Source(shapes, scene.image, {})
    noisy = quality._perturb(source, 0.02, 6, 0)
    diff = (noisy.int() - source.pixels.int()[None]).abs()
    assert int(diff.max()) == math.floor(0.02 * 255) and float((diff > 0).float().mean()) > 0.5
    x = torch.rand(3, 8, 8)
    t = quality._perturb(quality._Source(SmallCNN().eval(), x, {}), 0.05, 4, 0)
    assert float((t - x).abs().max()) <= 0.05 and float((t - x).abs().max()) > 0.04


# -------------------------------------------------------------------------------------- failures and records

def test_failures_explain_with_the_curve_and_a_picture(shapes: nn.Module, tmp_path) -> None:
    scene = make_scene(SEEDS[4])
    seen: list = []
    context.set_artifacts_dir(tmp_path)
    context.add_listener(seen.append)
    try:
        with pytest.raises(AssertionError, match=r"(?s)camcheck sane failed.*cascade.*fc.*picture: .*\.png"):
            assert_sane(EdgeExplained(shapes), scene.image, scene.label, layer="edges")
        with pytest.raises(AssertionError, match=r"(?s)camcheck faithful failed.*gain.*softmax probability"):
            assert_faithful(shapes, scene.image, scene.label, steps=5, orderings=1, confidence=0,
                            heatmap=inverted_map(compute_cam(shapes, scene.image, scene.label).heatmap))
        with pytest.raises(AssertionError, match=r"(?s)camcheck stable failed.*the MAP is unstable"):
            assert_stable(shapes, scene.image, scene.label, samples=2, min_similarity=1.0)
    finally:
        context.remove_listener(seen.append)
        context.set_artifacts_dir(None)
    assert [r.check for r in seen] == ["sane", "faithful", "stable"] and not any(r.passed for r in seen)
    assert {r.image for r in seen} == {f"ndarray of shape {scene.image.shape}"}  # named as the attention checks are
    for rec in seen:
        with Image.open(rec.overlay) as img:
            assert img.width > 2 * img.height  # the maps and the curve side by side
    assert seen[0].metrics["similarity"] == pytest.approx(1.0) and len(seen[0].metrics["curve"]) == 8


# --------------------------------------------------------------------------- behaviour on held-out scenes

def test_sanity_passes_gradcam_and_fails_an_edge_detector(shapes: nn.Module, scenes: list) -> None:
    edges = EdgeExplained(shapes)
    good = [quality.sanity(shapes, s.image, s.label) for s in scenes]
    broken = [quality.sanity(edges, s.image, s.label, layer="edges") for s in scenes]
    assert np.mean([r.passed for r in good]) >= 0.8, [r.similarity for r in good]  # calibration: 97.5%
    assert not any(r.passed for r in broken) and min(r.similarity for r in broken) > 0.99


def test_stability_passes_gradcam_and_fails_a_noisy_method(shapes: nn.Module, scenes: list) -> None:
    noisy = NoisyGradients(shapes, scale=2.0)
    good = [quality.stability(shapes, s.image, s.label, samples=4) for s in scenes]
    broken = [quality.stability(noisy, s.image, s.label, samples=4, layer=noisy.layer) for s in scenes]
    assert np.mean([r.passed for r in good]) >= 0.8, [r.similarity for r in good]  # calibration: 100%
    assert np.mean([r.passed for r in broken]) <= 0.1, [r.similarity for r in broken]  # calibration: 0%
    assert all(r.prediction_stable for r in broken)  # the map moves, not the prediction: reported apart


def test_faithfulness_passes_gradcam_and_fails_inverted_and_random_maps(shapes: nn.Module, scenes: list) -> None:
    good = [quality.faithfulness(shapes, s.image, s.label, steps=16) for s in scenes]
    inverted = [quality.faithfulness(shapes, s.image, s.label, steps=16, heatmap=inverted_map(f.heatmap))
                for s, f in zip(scenes[:6], good)]
    rand = [quality.faithfulness(shapes, s.image, s.label, steps=16, heatmap=random_map(f.heatmap.shape, seed))
            for s, f in zip(scenes[:6], good) for seed in (s.seed, s.seed + 1)]
    # calibration: Grad-CAM passes 97.5% of 40 scenes, none of them confounded
    clear = [r for r in good if not r.confounded]
    assert len(clear) >= 6 and np.mean([r.passed for r in clear]) >= 0.75, [(r.gain, r.chance_gain) for r in clear]
    assert np.mean([r.passed for r in good]) >= 0.75
    assert all(r.confounded for r in good if r.passed is False and r.gain < 0), "a map worse than random, unexplained"
    assert not any(r.passed for r in inverted) and max(r.gain for r in inverted) < 0
    # a per-pixel random map is one more random ordering: it passes about 1 - confidence of the time (10%) whatever
    # the spread of this model's random AUCs, which min_gain alone does not bound
    assert np.mean([r.passed for r in rand]) <= 2 / 12, [(r.gain, r.chance_gain) for r in rand]
    assert all(r.chance_gain is not None and r.chance_gain > 0 for r in good + rand)


class GivesClassToAnything(nn.Module):
    """The bundled CNN with its logit of class ``k`` raised by 8: even a featureless image gets class ``k``."""

    def __init__(self, net: nn.Module, k: int) -> None:
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + 8.0 * nn.functional.one_hot(torch.tensor(self.k), 6).to(x.dtype)


def test_a_confounded_deletion_says_so_in_the_failure(shapes: nn.Module, scenes: list) -> None:
    # the bundled CNN was trained to call a featureless image no class, so none of its scenes is confounded; a model
    # that gives one class to anything is: deleting that class's evidence cannot lower its p
    s = scenes[0]
    biased = GivesClassToAnything(shapes, s.label)
    attach_info(biased, model_info(shapes))
    r = quality.faithfulness(biased, s.image, s.label, steps=16)
    assert r.confounded and not r.passed and r.baseline_probability >= r.featureless_floor, (r.gain, r.curve)
    assert not quality.faithfulness(shapes, s.image, s.label, steps=16).confounded
    with pytest.raises(AssertionError, match=r"(?s)deletion is confounded here: .*featureless.*metric='insertion'"):
        assert_faithful(biased, s.image, s.label, steps=16)


def test_the_chance_bound_is_what_stops_a_lucky_random_map(shapes: nn.Module, scenes: list) -> None:
    # without the bound (confidence=0) the random maps that clear min_gain pass; with it they must be more than
    # a random ordering reaches by chance, and the message says which criterion failed
    s = scenes[0]
    lucky = []
    for seed in range(10):
        heatmap = random_map(s.image.shape[:2], seed)
        loose = quality.faithfulness(shapes, s.image, s.label, steps=16, heatmap=heatmap, confidence=0)
        if loose.passed:
            lucky.append(heatmap)
    assert lucky, "no random map cleared min_gain alone on this scene; pick another scene"
    strict = [quality.faithfulness(shapes, s.image, s.label, steps=16, heatmap=h) for h in lucky]
    assert np.mean([r.passed for r in strict]) < 0.5, [(r.gain, r.chance_gain) for r in strict]
    failed = next(r for r in strict if not r.passed)
    with pytest.raises(AssertionError, match="not better than chance"):
        assert_faithful(shapes, s.image, s.label, steps=16, heatmap=lucky[strict.index(failed)])


FIXTURE_TEST = """
import torch
from tests_models import SmallCNN

def test_quality(camcheck):
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.rand(3, 32, 32)
    assert camcheck.sane(model, x, 1, max_similarity=1.0).curve[0].step == 0
    assert len(camcheck.faithful(model, x, 1, steps=3, orderings=1, confidence=0, min_gain=-1.0).curve) == 4
    camcheck.stable(model, x, 1, samples=2, min_similarity=1.0, noise=0.5)
"""


def test_the_fixture_records_the_checks_in_junit(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> None:
    import json
    import shutil
    import xml.etree.ElementTree as ET
    from pathlib import Path

    shutil.copy(Path(request.config.rootpath) / "tests" / "models.py", pytester.path / "tests_models.py")
    pytester.makepyfile(test_q=FIXTURE_TEST)
    result = pytester.runpytest("--junitxml=out.xml", "-p", "no:cacheprovider", "--camcheck-device=cpu")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*camcheck stable failed*", "*smallest SSIM*"])
    props = [(p.get("name"), json.loads(p.get("value"))) for p in ET.parse(pytester.path / "out.xml").iter("property")]
    assert [name for name, _ in props] == ["camcheck.sane", "camcheck.faithful", "camcheck.stable"]
    assert [v["passed"] for _, v in props] == [True, True, False]
    assert props[2][1]["threshold.min_similarity"] == 1.0 and props[2][1]["overlay"].endswith(".png")
    assert len(props[1][1]["curve"]) == 4 and "similarity" in props[0][1]


def test_a_class_the_model_does_not_predict_is_not_called_confounded(shapes: nn.Module, scenes: list) -> None:
    # a class with p ~ 0 on the clean image is not "given to a featureless image" unless the blurred image really
    # gets it (p >= CONFOUND_FLOOR); either way the message says the model does not predict it
    s = scenes[0]
    unlikely = [r for r in (quality.faithfulness(shapes, s.image, k, steps=8) for k in range(6))
                if r.curve[0] < quality.UNSURE]
    assert len(unlikely) >= 3
    for r in unlikely:
        featureless = any("featureless" in why for why in r.confounds)
        assert featureless == (r.baseline_probability >= r.featureless_floor), (r.target, r.confounds)
        assert "does not predict it here" in "\n".join(quality._faithful_message(r))
        # this model gives a featureless image about 1/6 for every class: chance, which is not keeping the class
        assert r.classes == 6 and r.featureless_floor >= quality.CONFOUND_CHANCE / 6
    assert any(quality.CONFOUND_FLOOR <= r.baseline_probability < r.featureless_floor for r in unlikely)


def test_the_chance_bound_is_students_prediction_bound() -> None:
    # two random AUCs 0.4 and 0.6 (spread 0.1414): t(0.9, 1) = 3.0777, times sqrt(1 + 1/2): 0.533
    assert quality._chance_gain([0.4, 0.6], 0.9) == pytest.approx(0.5331, abs=1e-4)
    assert quality._chance_gain([0.5, 0.5, 0.5], 0.9) == 0.0  # no spread: the map only has to beat their mean
    assert quality._chance_gain([0.4, 0.6], 0.0) is None


def test_the_featureless_floor_stays_reachable_for_two_classes(shapes: nn.Module, scenes: list) -> None:
    # twice chance is 1.0 for two classes, which no probability reaches: there the floor is chance + the margin
    from dataclasses import replace

    s = scenes[0]
    r = quality.faithfulness(GivesClassToAnything(shapes, s.label), s.image, s.label, steps=4, preprocess=None)
    for classes, floor in ((2, 0.5 + quality.CONFOUND_MARGIN), (6, 2 / 6), (1000, quality.CONFOUND_FLOOR)):
        two = replace(r, classes=classes, curve=[0.2, *r.curve[1:-1], floor])
        assert two.featureless_floor == pytest.approx(floor)
        assert two.confounded and any("featureless" in why for why in two.confounds)
        below = replace(two, curve=[*two.curve[:-1], floor - 0.01])
        assert not any("featureless" in why for why in below.confounds)


def test_the_sanity_copy_is_a_deep_copy_with_its_own_hook_tables() -> None:
    net = torchvision.models.resnet18(num_classes=3).eval()
    seen: list = []
    net.layer4.register_forward_hook(lambda m, i, o: seen.append(1))
    twin = quality._deep_copy(net)
    assert [type(m) for m in twin.modules()] == [type(m) for m in net.modules()]
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr()
               for a, b in zip(net.state_dict().values(), twin.state_dict().values()))
    for original, copied in zip(net.modules(), twin.modules()):  # no table of the copy is the model's
        for key, value in vars(original).items():
            if isinstance(value, (dict, set)):
                assert vars(copied)[key] is not value and list(vars(copied)[key]) == list(value), key
    twin.fc.register_forward_hook(lambda m, i, o: None)  # a hook on the copy stays on the copy
    assert not net.fc._forward_hooks and len(twin.layer4._forward_hooks) == 1  # the user's hook copied, as deepcopy
    with torch.no_grad():
        torch.testing.assert_close(twin(torch.ones(1, 3, 32, 32)), net(torch.ones(1, 3, 32, 32)))


@pytest.mark.parametrize("categories, match", [
    ("abcde", "categories is a string"),
    ([10, 11, 12, 13, 14], "categories must be strings, but item 0 is 10"),
    (["a", "b", "c"], "3 class names are known but the model has 5 outputs"),
])
def test_faithfulness_of_a_given_map_checks_the_class_names_as_compute_cam_does(categories: object,
                                                                                  match: str) -> None:
    from pytest_camcheck.errors import TargetError

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5).eval()
    heatmap = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    with pytest.raises(TargetError, match=match):
        quality.faithfulness(net, torch.rand(3, 32, 32), "c", heatmap=heatmap, steps=4, orderings=2, categories=categories)
