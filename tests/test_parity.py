"""Parity with pytorch-grad-cam (a test dependency only) on torchvision architectures, random init.

Deliberate differences, each checked here:
- EigenCAM: pytorch-grad-cam keeps the SVD's arbitrary sign; ours is fixed to correlate positively with the
  channel-mean activation. Compared after taking pytorch-grad-cam's sign.
- DenseNet: its forward applies ``F.relu(inplace=True)`` to the ``features`` output. On CPU pytorch-grad-cam's
  stored activations are that same tensor, so they are silently clipped to >= 0 after capture (on GPU, where it
  copies to CPU first, they are not). Ours are the layer's true output. Compared against our map of the
  post-ReLU output, and the clipping itself is shown.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pytest_camcheck import compute_cam

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

GC = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
}
ARCHS = ["resnet18", "vgg19", "densenet121", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]


class PostReLU(nn.Module):
    """DenseNet with the ReLU after ``features`` as a module, so its output can be the target layer."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.relu = net, nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.relu(self.net.features(x))
        return self.net.classifier(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))


def _gc_map(cls: type, model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> tuple[np.ndarray, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model=model, target_layers=[layer]) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 64
            out = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
            acts = cam.activations_and_grads.activations[0] if cam.activations_and_grads.activations else None
    return out, acts


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module", params=ARCHS)
def arch(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)(num_classes=1000).eval()
    return request.param, model, torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", sorted(GC))
def test_maps_match_pytorch_grad_cam(arch: tuple, method: str) -> None:
    name, model, x = arch
    ours = compute_cam(model, x[0], target=None, method=method)
    layer = dict(model.named_modules())[ours.layer]
    theirs, _ = _gc_map(GC[method], model, layer, x, ours.target)
    if name == "densenet121":
        ours = compute_cam(PostReLU(model), x[0], target=ours.target, method=method, layer="relu")
    if method == "eigencam" and _pearson(ours.heatmap, theirs) < 0:
        flipped = np.maximum(-ours.raw, 0)
        up = F.interpolate(torch.from_numpy(flipped)[None, None], size=x.shape[-2:], mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        assert _pearson(up, theirs) >= 0.99
        return
    assert _pearson(ours.heatmap, theirs) >= 0.99, (name, method)


def test_pytorch_grad_cam_densenet_activations_are_clipped_by_the_inplace_relu() -> None:
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    _, stored = _gc_map(pgc.XGradCAM, model, model.features, x, 3)
    with torch.no_grad():
        true = model.features(x)
    assert float(true.min()) < 0 and float(stored.min()) == 0.0
    ours = compute_cam(model, x[0], target=3, method="xgradcam")
    assert not ours.empty


@pytest.mark.parametrize("method,cls", [("scorecam", "ScoreCAM"), ("ablationcam", "AblationCAM")])
def test_perturbation_methods_match_pytorch_grad_cam(method: str, cls: str) -> None:
    """On resnet18's layer2 (128 channels, an 8 x 8 map at 64 px): one masked or ablated forward per channel, so
    a quarter of layer4's 512."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = compute_cam(model, x[0], method=method, layer="layer2")
    theirs, _ = _gc_map(getattr(pgc, cls), model, model.layer2, x, ours.target)
    assert _pearson(ours.heatmap, theirs) >= 0.99
