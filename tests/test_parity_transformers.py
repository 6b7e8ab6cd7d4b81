"""Parity with pytorch-grad-cam on transformers, given the reshape_transform its documentation has users write.

Ours decides the layout (tokens with 1, 2 or 5 prefix tokens, channels last) from the model; pytorch-grad-cam is
handed the hand-written reshape for the same layer. Small configs of the same classes, random weights.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pytest_camcheck import compute_cam

pgc = pytest.importorskip("pytorch_grad_cam")
timm = pytest.importorskip("timm")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TINY_VIT = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def _tokens(prefix: int, side: int = 4) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's vit_reshape_transform with the prefix and grid written for this model."""
    return lambda t: t[:, prefix:].reshape(t.shape[0], side, side, t.shape[2]).transpose(2, 3).transpose(1, 2)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)


def _tv_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # zero-initialised by torchvision
    return model


CASES = {
    "timm_vit": (lambda: timm.create_model("vit_tiny_patch16_224", **TINY_VIT), "blocks.1.norm1", _tokens(1)),
    "timm_deit_distilled": (lambda: timm.create_model("deit_tiny_distilled_patch16_224", **TINY_VIT),
                            "blocks.1.norm1", _tokens(2)),
    "timm_vit_registers": (lambda: timm.create_model("vit_tiny_patch16_224", reg_tokens=4, **TINY_VIT),
                           "blocks.1.norm1", _tokens(5)),
    "tv_vit": (_tv_vit, "encoder.layers.encoder_layer_1.ln_1", _tokens(1)),
    "tv_swin": (lambda: torchvision.models.SwinTransformer(  # swin_t's class, a smaller config
        patch_size=[4, 4], embed_dim=16, depths=[1, 1, 1], num_heads=[1, 1, 1], window_size=[2, 2], num_classes=5),
        "features.5", _channels_last),
    "timm_swin": (lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=2,
                                            embed_dim=16, depths=(1, 1, 1), num_heads=(1, 1, 1), num_classes=5),
                  "norm", _channels_last),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradcam_matches_pytorch_grad_cam_with_its_reshape_transform(case: str) -> None:
    make, layer, reshape = CASES[case]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    top = compute_cam(model, x[0], layer=layer).top
    ours = next(r for r in compute_cam(model, x[0], target=[c for c, _, _ in top], layer=layer) if not r.empty)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pgc.GradCAM(model=model, target_layers=[model.get_submodule(layer)], reshape_transform=reshape) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(ours.target)])[0]
    assert ours.layout != "NCHW"
    assert np.corrcoef(ours.heatmap.ravel(), theirs.ravel())[0, 1] >= 0.99, case
