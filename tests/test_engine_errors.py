"""Bad input gets a CamCheckError that names the problem and the fix, never a raw torch traceback."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pytest_camcheck import CamCheckError, assert_attends_to, compute_cam
from pytest_camcheck.errors import InputError, LayerError, TargetError
from pytest_camcheck.zoo import load_state_dict

from .models import GapLinear, SmallCNN


class NoLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> object:
        return {"features": self.features(x)}


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)).detach())


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.side = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return self.fc(self.features(x).mean(dim=(2, 3)))


class NanModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3)) * float("nan")


torch.manual_seed(0)
def vgg_like() -> nn.Module:
    """VGG's head in miniature: a fixed-size pool, flatten, then a two-layer MLP (no global average pooling)."""
    model = nn.Sequential()
    model.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model.avgpool, model.flatten = nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten()
    model.classifier = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 4))
    return model.eval()


SMALL = SmallCNN()
GAP = GapLinear()
X = torch.rand(3, 16, 16)
class TwoOutputs(nn.Module):
    """(embedding, logits): two tensors that could be the logits."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.embed = nn.Linear(4, 6)
        self.fc = nn.Linear(4, 5)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> object:
        pooled = self.features(x).mean(dim=(2, 3))
        if self.as_dict:
            return {"embedding": self.embed(pooled), "scores": self.fc(pooled)}
        return self.embed(pooled), self.fc(pooled)


def closed_picture() -> object:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PNG")
    picture = Image.open(io.BytesIO(buffer.getvalue()))
    picture.close()
    return picture


def _tanh_between_layer_and_head() -> nn.Module:
    """Conv -> Tanh -> GAP -> Linear, seeded and with activations large enough that Tanh is far from linear
    (an unseeded net could be nearly linear and pass CAM's head check, depending on test order)."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 3)
    return net

HERE = Path(__file__).parent
NAMES = ["a", "b", "c", "d", "e"]
CASES = {
    "not a model": (lambda: compute_cam("resnet", X), "must be a torch.nn.Module"),
    "rank 2 tensor": (lambda: compute_cam(SMALL, torch.rand(16, 16)), r"expected \(C, H, W\)"),
    "rank 5 tensor": (lambda: compute_cam(SMALL, torch.rand(1, 1, 3, 16, 16)), r"expected \(C, H, W\)"),
    "integer tensor": (lambda: compute_cam(SMALL, torch.zeros(3, 16, 16, dtype=torch.uint8)), "floating point"),
    "wrong channels": (lambda: compute_cam(SMALL, torch.rand(1, 16, 16), layer="features"), "model failed.*channels"),
    "empty batch": (lambda: compute_cam(SMALL, torch.rand(0, 3, 16, 16)), "empty"),
    "empty list": (lambda: compute_cam(SMALL, []), "empty"),
    "zero-size image": (lambda: compute_cam(SMALL, torch.rand(3, 0, 16)), "empty"),
    "nan pixels": (lambda: compute_cam(SMALL, torch.full((3, 16, 16), float("nan"))), "NaN"),
    "inf pixels": (lambda: compute_cam(SMALL, X.clone().index_fill_(1, torch.tensor([2]), float("inf"))), "infinite"),
    "nan in one image of a batch tensor": (
        lambda: compute_cam(SMALL, torch.rand(4, 3, 16, 16).index_fill_(0, torch.tensor([2]), float("nan"))),
        "image 2 of the batch contains NaN"),
    "integer batch tensor": (lambda: compute_cam(SMALL, torch.zeros(2, 3, 16, 16, dtype=torch.int64)),
                             "image 0 of the batch has dtype torch.int64.*floating point"),
    "mixed shapes in a batch": (lambda: compute_cam(SMALL, [torch.rand(3, 16, 16), torch.rand(3, 20, 16)]),
                                "different shapes"),
    "unknown image type": (lambda: compute_cam(SMALL, {"image": 1}), "not understood"),
    "class index out of range": (lambda: compute_cam(SMALL, X, target=5), r"out of range.*5 classes"),
    "negative class index": (lambda: compute_cam(SMALL, X, target=-1), "out of range"),
    "float target": (lambda: compute_cam(SMALL, X, target=1.5), "not a class index"),
    "unknown class name": (lambda: compute_cam(SMALL, X, target="tigr", categories=["dog", "tiger", "a", "b", "c"]),
                           "unknown class name 'tigr'; close matches: 'tiger'"),
    "name without categories": (lambda: compute_cam(SMALL, X, target="dog"), "no class names are known.*categories="),
    "categories of the wrong length": (lambda: compute_cam(SMALL, X, target="dog", categories=["dog"]),
                                       "1 class names are known but the model has 5"),
    "targets not matching the batch": (lambda: compute_cam(SMALL, torch.rand(3, 3, 16, 16), target=[0, 1]),
                                       "2 targets were given for a batch of 3"),
    "empty target list": (lambda: compute_cam(SMALL, X, target=[]), "list of targets is empty"),
    "layer not found": (lambda: compute_cam(SMALL, X, layer="featurs"), "not found.*close matches: features"),
    "layer of another model": (lambda: compute_cam(SMALL, X, layer=nn.Conv2d(3, 3, 1)), "not part of this model"),
    "layer without spatial output": (lambda: compute_cam(SMALL, X, layer="pool"), "no spatial"),
    "layer of the wrong type": (lambda: compute_cam(SMALL, X, layer=3), "dotted module name"),
    "layer the score does not depend on": (lambda: compute_cam(Unused(), X, layer="side"), "does not depend on"),
    "score detached from the layer": (lambda: compute_cam(Detached(), X, layer="features"), "does not depend"),
    "unknown method": (lambda: compute_cam(SMALL, X, method="gradcam+++"), "unknown method.*gradcam\\+\\+"),
    "cam on a non-GAP head": (lambda: compute_cam(vgg_like(), torch.rand(3, 32, 32), method="cam"),
                              "needs a head that is global average pooling.*method='gradcam'"),
    "cam with an activation between the layer and the head": (
        lambda: compute_cam(_tanh_between_layer_and_head(), X, target=2, layer="0", method="cam"),
        "something else sits between them.*method='gradcam'"),
    "target callable returning a non-scalar": (lambda: compute_cam(SMALL, X, target=lambda out: out * 2),
                                               "returned a tensor of shape \\(5,\\).*scalar"),
    "model output without logits": (lambda: compute_cam(NoLogits(), X, target=0), "cannot find logits"),
    "index target on a segmentation output": (
        lambda: compute_cam(nn.Sequential(nn.Conv2d(3, 2, 1)), X, target=1, layer="0"), "callable"),
    "model producing NaN": (lambda: compute_cam(NanModel(), X), "NaN"),
    "device the model is not on": (lambda: compute_cam(SMALL, X, device="meta"), "never moves"),
    "invalid device string": (lambda: compute_cam(SMALL, X, device="gpu0"), "not a valid torch device"),
    "random preprocessing": (lambda: compute_cam(SMALL, np.zeros((16, 16, 3), np.uint8),
                                                 preprocess=torchvision.transforms.RandomCrop(8)), "random"),
    # class names
    "categories given as one string": (lambda: compute_cam(SMALL, X, target="a", categories="abcde"),
                                       "categories is a string.*each character a class name"),
    "categories that are not strings": (lambda: compute_cam(SMALL, X, target=0, categories=[1, 2, 3, 4, 5]),
                                        r"must be strings, but item 0 is 1 \(int\)"),
    "categories that are not a sequence": (lambda: compute_cam(SMALL, X, categories=5), "not a sequence"),
    "class name matching two names when case is ignored": (
        lambda: compute_cam(SMALL, X, target="cross", categories=["Cross", "b", "c", "d", "CROSS"]),
        "matches 2 categories when case is ignored"),
    "class name given twice": (lambda: compute_cam(SMALL, X, target="a", categories=["a", "b", "a", "d", "e"]),
                               r"given 2 times in the categories \(indices 0, 2\)"),
    # which output holds the logits
    "two tensors that could be the logits": (lambda: compute_cam(TwoOutputs(), X, target=1, layer="features"),
                                             r"could be the logits.*output=<index>"),
    "class names matching no candidate logits": (
        lambda: compute_cam(TwoOutputs(), X, target=1, layer="features", categories=list("abc")),
        "none of them has 3 columns"),
    "output index out of range": (lambda: compute_cam(TwoOutputs(), X, target=1, layer="features", output=2),
                                  "output=2 is out of range: the model returns 2 items"),
    "output key not in the dict": (lambda: compute_cam(TwoOutputs(True), X, target=1, layer="features",
                                                       output="logits"), "not a key.*'embedding', 'scores'"),
    "output picker of the wrong type": (lambda: compute_cam(TwoOutputs(), X, target=1, output=1.5), "not understood"),
    "output callable returning no tensor": (
        lambda: compute_cam(TwoOutputs(), X, target=1, layer="features", output=lambda out: out[1].tolist()),
        "returned list, not a tensor"),
    "output callable failing": (
        lambda: compute_cam(TwoOutputs(), X, target=1, layer="features", output=lambda out: out["logits"]),
        "failed on the model output of type tuple.*TypeError"),
    # images
    "closed PIL image": (lambda: compute_cam(SMALL, closed_picture()), "closed before its pixels were read"),
    "meta-device image tensor": (lambda: compute_cam(SMALL, torch.empty(3, 16, 16, device="meta")),
                                 "meta device.*no values"),
    "meta-device batch tensor": (lambda: compute_cam(SMALL, torch.empty(2, 3, 16, 16, device="meta")),
                                 "image 0 of the batch is a tensor on the meta device"),
    "meta-device model": (lambda: compute_cam(SmallCNN().to("meta"), X), "meta device.*to_empty"),
    "image path that is a folder": (lambda: compute_cam(SMALL, HERE), "is not a file"),
    "image path that does not exist": (lambda: compute_cam(SMALL, HERE / "no-such.png"), "image file not found"),
    "file that is not an image": (lambda: compute_cam(SMALL, Path(__file__)), "not an image Pillow can read"),
    "boolean array as image": (lambda: compute_cam(SMALL, np.zeros((16, 16), bool)), "boolean array"),
    "float array outside [0, 1]": (lambda: compute_cam(SMALL, np.full((16, 16, 3), 2.0)), r"expected \[0, 1\]"),
    "channels-first array": (lambda: compute_cam(SMALL, np.zeros((3, 16, 16), np.uint8)), "channels-first"),
    "preprocess returning no tensor": (lambda: compute_cam(SMALL, np.zeros((16, 16, 3), np.uint8),
                                                           preprocess=torchvision.transforms.Resize(8)), "not a tensor"),
    "preprocess failing": (lambda: compute_cam(SMALL, np.zeros((16, 16, 3), np.uint8),
                                               preprocess=torchvision.transforms.Normalize([0.5], [0.5])),
                           "preprocess failed"),
    # targets, methods, regions, checkpoints
    "boolean target": (lambda: compute_cam(SMALL, X, target=True), "not a class index"),
    "method that is not a string": (lambda: compute_cam(SMALL, X, method=3), "method must be a string"),
    "1-D tensor box of 3 values": (lambda: assert_attends_to(SMALL, X, 0, torch.tensor([1, 2, 3])),
                                   "has 3 values; a box needs 4"),
    "meta-device region": (lambda: assert_attends_to(SMALL, X, 0, torch.empty(16, 16, device="meta")),
                           "region is a tensor on the meta device"),
    "checkpoint path that is a folder": (lambda: load_state_dict(HERE), "is a folder, not a checkpoint file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_names_the_problem_and_the_fix(case: str) -> None:
    call, pattern = CASES[case]
    with pytest.raises(CamCheckError, match=pattern) as info:
        call()
    assert len(str(info.value)) > 30


def test_there_are_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60


def test_the_finite_check_is_exact_when_the_sum_overflows() -> None:
    from pytest_camcheck.engine.inputs import all_finite

    big = torch.full((8,), 3e38)
    assert all_finite(big)  # the sum overflows to inf, the elements are finite
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = big.clone()
        x[5] = bad
        assert not all_finite(x)
    both = torch.zeros(4)
    both[0], both[1] = float("inf"), -float("inf")
    assert not all_finite(both)
    assert all_finite(torch.tensor([1, 2])) and all_finite(torch.empty(0))


class OwnError(nn.Module):
    """A model whose own code refuses the input after the target layer ran."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        feats = self.features(x)
        if feats.shape[0] > 1:
            raise RuntimeError("this model takes one image at a time")
        return self.fc(feats.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["gradcam", "ablationcam"])
def test_the_models_own_error_is_reported_as_its_own_and_not_retried(method: str) -> None:
    model = OwnError()
    with pytest.raises(RuntimeError, match="^this model takes one image at a time$") as info:
        compute_cam(model, torch.rand(2, 3, 16, 16) if method == "gradcam" else X, method=method, layer="features")
    assert not isinstance(info.value, CamCheckError)
    assert model.calls == (1 if method == "gradcam" else 2)  # ablation: the forward, then one suffix run, no retry


class ZeroScore(nn.Module):
    """Class 0's score is exactly 0 for the checkerboard input below (mean of 0.5 / 1.5 pixels, minus 1), while
    zeroing channel 0 moves it: Ablation-CAM must explain the drop, not divide 0 by 0."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        return torch.stack([a[:, 0].mean(dim=(1, 2)) - 1.0, a[:, 1].mean(dim=(1, 2))], dim=1)


def test_ablation_cam_on_a_score_of_exactly_zero_is_the_drop_map() -> None:
    x = torch.rand(3, 16, 16)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2
    x[0] = 0.5 + checker.float()
    r = compute_cam(ZeroScore(), x, 0, method="ablationcam", layer="features")
    assert r.score == 0.0 and not r.empty
    assert np.array_equal(r.heatmap, checker.numpy().astype(np.float32))  # relu(1 * A_0), min-max normalised


def test_a_full_resolution_picture_without_resizing_warns() -> None:
    from pytest_camcheck.errors import CamCheckWarning

    big = np.zeros((2100, 2000, 3), np.uint8)
    net = nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with pytest.warns(CamCheckWarning, match=r"full 2000x2100 px \(4.2 megapixels\): no preprocessing resized it"):
        compute_cam(net, big, 0, layer="0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_cam(net, big, 0, layer="0", preprocess=torchvision.transforms.Compose([
            torchvision.transforms.Resize(64), torchvision.transforms.ToTensor()]))


def test_a_box_given_as_a_1d_tensor_is_a_box() -> None:
    from pytest_camcheck.regions import describe, to_mask

    box = torch.tensor([2, 3, 10, 12])
    assert np.array_equal(to_mask(box, (16, 16)), to_mask((2, 3, 10, 12), (16, 16)))
    assert describe(box) == describe((2, 3, 10, 12))


# --- a layer that runs twice, library asserts, class names that do not fit the outputs ---------------------------

def _tiny_cnn(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()


class _TwoViews(nn.Module):
    """Test-time augmentation: the network runs on the image and its mirror image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) + self.net(x.flip(-1))) / 2


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam",
                                    "eigencam", "ablationcam"])
def test_a_layer_that_runs_twice_in_the_forward_is_refused_by_every_method(method: str) -> None:
    tta = _TwoViews(_tiny_cnn())
    with pytest.raises(LayerError, match=r"layer 'net.3' runs 2 times in one forward pass.*Fix: pass layer="):
        compute_cam(tta, torch.rand(3, 32, 32), target=1, method=method, layer="net.3")


def test_the_automatic_layer_skips_modules_that_run_twice_or_refuses() -> None:
    with pytest.raises(LayerError, match="runs more than once per forward pass, so layer=None has none"):
        compute_cam(_TwoViews(_tiny_cnn()), torch.rand(3, 32, 32), target=1)

    class SharedReLU(nn.Module):  # one ReLU module after both convolutions: its last call is not its only one
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.relu, self.fc = nn.ReLU(), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.relu(self.conv2(self.relu(self.conv1(x)))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    assert compute_cam(SharedReLU().eval(), torch.rand(3, 16, 16), target=0).layer == "conv2"


def test_an_assert_in_library_code_is_an_input_error_but_the_models_own_assert_propagates() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=64, depth=1).eval()

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = vit

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    with pytest.raises(InputError, match=r"input of shape \(1, 3, 96, 96\).*doesn't match model \(64\)"):
        compute_cam(Wrapped(), torch.rand(3, 96, 96), target=0)

    class OwnAssert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _tiny_cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.shape[-1] == 64, "this model takes 64 pixels"
            return self.net(x)

    with pytest.raises(AssertionError, match="this model takes 64 pixels") as info:
        compute_cam(OwnAssert(), torch.rand(3, 32, 32), target=0)
    assert not isinstance(info.value, CamCheckError)


def test_a_wrapped_hugging_face_vit_given_another_size_is_an_input_error() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=16,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = transformers.ViTForImageClassification(config)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.vit(pixel_values=x).logits

    with pytest.raises(InputError, match=r"input of shape \(1, 3, 48, 48\)"):
        compute_cam(Wrapped().eval(), torch.rand(3, 48, 48), target=0)


def test_class_names_that_do_not_match_the_outputs_are_refused_not_used_as_labels() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False).eval()
    net.fc = nn.Linear(512, 3)  # the metadata still says 1000 ImageNet classes
    x = torch.rand(3, 64, 64)
    for target in (None, 1, lambda out: out[2]):
        with pytest.raises(TargetError, match=r"1000 class names are known but the model has 3 outputs.*"
                                              r"Fix: pass categories= with 3 names"):
            compute_cam(net, x, target=target)
    assert compute_cam(net, x, target=1, categories=[]).label is None
    r = compute_cam(net, x, target=1, categories=["a", "b", "c"])
    assert r.label == "b" and {label for _, label, _ in r.top} <= {"a", "b", "c"}


def test_hugging_face_names_that_do_not_match_the_classifier_are_refused() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                         id2label={0: "cat", 1: "dog", 2: "cow"})
    net = transformers.ConvNextForImageClassification(config).eval()
    net.classifier = nn.Linear(16, 2)
    with pytest.raises(TargetError, match="3 class names are known but the model has 2 outputs"):
        compute_cam(net, torch.rand(3, 64, 64))
