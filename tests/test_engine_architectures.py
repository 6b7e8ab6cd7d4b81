"""layer=None on every model family: torchvision, timm and Hugging Face, CNNs, ViTs, Swin and hybrids.

Each model is a small variant or a tiny config with random weights (fixed seed) on a small input. For each one
the automatic layer must give a finite, non-empty map in the original image's pixels, from a layer the score
depends on (a Grad-CAM map is non-empty only when the score's gradient reaches the layer's grid), never the
patch embedding or stem, and leave the model exactly as it was.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pytest_camcheck import compute_cam

from .test_engine_safety import assert_same, snapshot

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

CLASSES = 5


def _small_head(model: nn.Module, width: int = 32) -> nn.Module:
    """AlexNet / VGG with their 4096-wide classifier narrowed (same structure, a fraction of the weights)."""
    first = model.classifier[1] if isinstance(model.classifier[1], nn.Linear) else model.classifier[0]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    mapping = {id(linears[0]): nn.Linear(first.in_features, width), id(linears[1]): nn.Linear(width, width),
               id(linears[2]): nn.Linear(width, CLASSES)}
    model.classifier = nn.Sequential(*[mapping.get(id(m), m) for m in model.classifier])
    return model


def _tv(name: str, **kw: object) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models, name)(num_classes=CLASSES, **kw)


def _tv_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=CLASSES)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises it: no score would vary
    return model


def _timm(name: str, **kw: object) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, num_classes=CLASSES, **kw)


TINY_VIT = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)


def _hf(kind: str) -> nn.Module:
    common = dict(image_size=64, num_labels=CLASSES)
    vit = dict(patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if kind == "vit":
        return transformers.ViTForImageClassification(transformers.ViTConfig(**common, **vit))
    if kind == "deit":
        return transformers.DeiTForImageClassification(transformers.DeiTConfig(**common, **vit))
    if kind == "swin":
        return transformers.SwinForImageClassification(transformers.SwinConfig(
            **common, patch_size=4, embed_dim=16, depths=[1, 1, 1], num_heads=[1, 1, 1], window_size=2))
    return transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        **common, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]))


# name: (builder, input size, pattern the automatic layer must match, or None)
ARCHS: dict[str, tuple[Callable[[], nn.Module], int, str | None]] = {
    "tv_alexnet": (lambda: _small_head(_tv("alexnet")()), 64, None),
    "tv_vgg11_bn": (lambda: _small_head(_tv("vgg11_bn")()), 32, None),
    "tv_resnet18": (_tv("resnet18"), 64, r"^layer4$"),
    "tv_resnext": (lambda: torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], groups=8,
                                                     width_per_group=4, num_classes=CLASSES), 64, r"^layer4$"),
    "tv_densenet": (lambda: torchvision.models.DenseNet(8, (2, 2, 2), 8, num_classes=CLASSES), 64, None),
    "tv_squeezenet": (_tv("squeezenet1_1"), 64, None),
    "tv_googlenet": (_tv("googlenet", aux_logits=False, init_weights=False), 64, None),
    "tv_inception_v3": (_tv("inception_v3", aux_logits=False, init_weights=False), 75, None),
    "tv_mobilenet_v2": (_tv("mobilenet_v2"), 64, None),
    "tv_mobilenet_v3": (_tv("mobilenet_v3_small"), 64, None),
    "tv_mnasnet": (_tv("mnasnet0_5"), 64, None),
    "tv_shufflenet": (_tv("shufflenet_v2_x0_5"), 64, None),
    "tv_efficientnet": (_tv("efficientnet_b0"), 64, None),
    "tv_regnet": (_tv("regnet_y_400mf"), 64, None),
    "tv_convnext": (lambda: torchvision.models.ConvNeXt(
        [torchvision.models.convnext.CNBlockConfig(16, 32, 1), torchvision.models.convnext.CNBlockConfig(32, None, 1)],
        num_classes=CLASSES), 64, None),
    "tv_vit": (_tv_vit, 64, r"^encoder\.layers\.encoder_layer_1\.ln_1$"),
    "tv_swin": (lambda: torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1, 1], num_heads=[1, 1, 1], window_size=[2, 2],
        num_classes=CLASSES), 64, None),
    "tv_maxvit": (lambda: torchvision.models.MaxVit(
        input_size=(64, 64), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 1],
        head_dim=4, stochastic_depth_prob=0.0, num_classes=CLASSES), 64, r"^blocks\.1"),
    "timm_vit": (_timm("vit_tiny_patch16_224", **TINY_VIT), 64, r"^blocks\.1\.norm1$"),
    "timm_vit_gap": (_timm("vit_tiny_patch16_224", **TINY_VIT, global_pool="avg", class_token=False), 64,
                     r"^(norm|blocks\.1)$"),
    "timm_deit_distilled": (_timm("deit_tiny_distilled_patch16_224", **TINY_VIT), 64, r"^blocks\.1\.norm1$"),
    "timm_vit_registers": (_timm("vit_tiny_patch16_224", **TINY_VIT, reg_tokens=4), 64, r"^blocks\.1\.norm1$"),
    "timm_swin": (_timm("swin_tiny_patch4_window7_224", img_size=64, window_size=2, embed_dim=16,
                        depths=(1, 1, 1), num_heads=(1, 1, 1)), 64, r"^(norm|layers\.2)"),
    "timm_convnext": (_timm("test_convnext"), 64, None),
    "timm_efficientnet": (_timm("test_efficientnet"), 64, None),
    "timm_resnet_d": (_timm("resnet18d"), 64, r"^layer4$"),
    "timm_regnet": (_timm("regnetx_002"), 64, None),
    "timm_mobilevit": (_timm("mobilevit_xxs"), 64, None),
    "timm_levit": (_timm("levit_128s", img_size=128), 128, r"^stages(\.2)?$"),
    "timm_efficientvit": (_timm("efficientvit_b0"), 64, None),
    "timm_fastvit": (_timm("fastvit_t8"), 64, None),
    "timm_mobilenetv4": (_timm("mobilenetv4_conv_small"), 64, None),
    "hf_vit": (lambda: _hf("vit"), 64, r"^vit\.(encoder\.)?layers?\.1\.layernorm_before$"),
    "hf_deit": (lambda: _hf("deit"), 64, r"layers?\.1\.layernorm_before$"),
    "hf_swin": (lambda: _hf("swin"), 64, None),
    "hf_convnext": (lambda: _hf("convnext"), 64, None),
}
# randomly initialised LeViT gives every token of its last stages the same vector (measured: standard deviation 0
# across tokens), so every map is constant and rightly flagged empty; only its layer choice is checked
CONSTANT = {"timm_levit"}
STEMS = re.compile(r"(^|\.)(patch_embed|patch_embeddings|conv_proj|stem|conv1|embeddings|features\.0)(\.|$)")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_the_automatic_layer_gives_a_map_the_score_depends_on(arch: str) -> None:
    make, size, expected = ARCHS[arch]
    torch.manual_seed(0)
    model = make().eval()
    picture = (np.random.default_rng(1).random((size + 8, size, 3)) * 255).astype(np.uint8)
    import torchvision.transforms as T

    prep = T.Compose([T.Resize((size, size)), T.ToTensor()])
    before = snapshot(model)
    results = compute_cam(model, picture, target=list(range(CLASSES)), preprocess=prep)
    assert_same(before, snapshot(model))
    for result in results:
        assert result.heatmap.shape == (size + 8, size) and np.isfinite(result.heatmap).all()
    assert any(np.abs(r.raw).max() > 0 for r in results), arch  # the score's gradient reaches the grid
    # random weights: a class's map may be all negative (no positive evidence), but not every class's
    assert arch in CONSTANT or not all(r.empty for r in results), (arch, results[0].layer, results[0].layout)
    layer = results[0].layer
    assert not STEMS.search(layer), (arch, layer)
    if expected is not None:
        assert re.search(expected, layer), (arch, layer)
