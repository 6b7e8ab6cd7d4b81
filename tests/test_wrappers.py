"""Copies, pickles and wrappers of a model keep what is known about it and give the plain model's map;
TorchScript models are refused with the fix."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from pytest_camcheck import CamCheckError, compute_cam
from pytest_camcheck import zoo
from pytest_camcheck.zoo import load_model, model_info, register_model

CATEGORIES = ("round", "square", "thin")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.features(x)).mean(dim=(2, 3)))


PREPROCESS = T.Compose([T.Resize(24), T.CenterCrop(20), T.ToTensor()])


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    monkeypatch.setattr(zoo, "_REGISTRY", {})
    register_model("tiny-served", Tiny, categories=list(CATEGORIES), preprocess=PREPROCESS)
    return load_model("tiny-served")


def picture() -> Image.Image:
    return Image.fromarray((np.random.default_rng(3).random((30, 45, 3)) * 255).astype(np.uint8))


def same_map(a: nn.Module, b: nn.Module, layer_b: str | None = None) -> None:
    """``b`` gives ``a``'s map (auto layer, or ``layer_b`` naming ``a``'s layer features.2 through b)."""
    ra = compute_cam(a, picture(), "square", layer="features.2" if layer_b else None)
    rb = compute_cam(b, picture(), "square", layer=layer_b)
    assert rb.heatmap.shape == (30, 45) and (rb.label, rb.layer) == ("square", ra.layer)
    np.testing.assert_allclose(rb.heatmap, ra.heatmap, atol=1e-6)
    assert rb.preprocessing == ra.preprocessing


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_a_served_model_keeps_its_categories_and_preprocessing(served: nn.Module, how: str) -> None:
    other = copy.deepcopy(served) if how == "deepcopy" else pickle.loads(pickle.dumps(served))
    assert other is not served and model_info(other) == model_info(served)
    assert model_info(other).preprocess is PREPROCESS or how == "pickle"
    same_map(served, other)


def test_a_pickle_loaded_elsewhere_rebuilds_the_information_from_its_recipe(served: nn.Module,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = pickle.dumps(served)
    monkeypatch.setattr(zoo, "_SERVED", {})  # as in a process that never served this model
    other = pickle.loads(data)
    assert model_info(other).categories == CATEGORIES and model_info(other).preprocess is PREPROCESS
    same_map(served, other)


def test_copies_of_torchvision_and_bundled_models_keep_their_information(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, weights in (("squeezenet1_1", None), ("camcheck-shapes", "DEFAULT")):
        model = load_model(name, weights=weights)
        monkeypatch.setattr(zoo, "_SERVED", {})
        other = pickle.loads(pickle.dumps(model))
        assert model_info(other).categories == model_info(model).categories
        assert repr(model_info(other).preprocess) == repr(model_info(model).preprocess)


def test_data_parallel_is_explained_through_the_module_it_wraps(served: nn.Module) -> None:
    wrapped = nn.DataParallel(served)
    assert model_info(wrapped) == model_info(served)
    same_map(served, wrapped)
    same_map(served, wrapped, "module.features.2")
    assert compute_cam(wrapped, picture(), "square", layer="module.features.2").layer == "features.2"
    assert not served.features[2]._forward_hooks


def test_distributed_data_parallel_is_explained_through_the_module_it_wraps(served: nn.Module) -> None:
    # a real DistributedDataParallel needs a process group; the unwrapping only depends on the class and .module
    ddp = nn.parallel.DistributedDataParallel.__new__(nn.parallel.DistributedDataParallel)
    nn.Module.__init__(ddp)
    ddp.module = served
    assert model_info(ddp) == model_info(served)
    same_map(served, ddp)


def test_a_compiled_model_is_explained_through_its_original_module(served: nn.Module) -> None:
    compiled = torch.compile(served)  # never called: nothing is compiled
    assert compiled._orig_mod is served
    assert model_info(compiled) == model_info(served)
    same_map(served, compiled)
    same_map(served, nn.DataParallel(compiled), "module._orig_mod.features.2")


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_models_are_refused_with_the_fix(how: str) -> None:
    net = Tiny().eval()
    scripted = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.rand(1, 3, 8, 8))
    with pytest.raises(CamCheckError) as err:
        compute_cam(scripted, torch.rand(3, 16, 16), target=0)
    message = str(err.value)
    assert "TorchScript" in message and "cannot be hooked" in message and "Fix: explain the eager model" in message
