"""Bad input gets a CamCheckError that names the problem and the fix, never a raw torch traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pytest_camcheck import CamCheckError, compute_cam

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
SMALL = SmallCNN()
GAP = GapLinear()
X = torch.rand(3, 16, 16)
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
    "cam on a non-GAP head": (lambda: compute_cam(torchvision.models.vgg11(num_classes=4), torch.rand(3, 32, 32),
                                                  method="cam"), "method='gradcam'"),
    "cam with an activation between the layer and the head": (
        lambda: compute_cam(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                          nn.Linear(4, 5)), X, target=2, layer="0", method="cam"),
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_names_the_problem_and_the_fix(case: str) -> None:
    call, pattern = CASES[case]
    with pytest.raises(CamCheckError, match=pattern) as info:
        call()
    assert len(str(info.value)) > 30


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


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
