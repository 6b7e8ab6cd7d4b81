"""Layer layouts: NCHW, NHWC and tokens become the same (N, C, H, W) grid, and what cannot be told is refused.

The token and channels-last models here are a convolutional network rewritten: the same numbers laid out as
tokens (with prefix tokens that carry nothing) or channels last must give exactly the map of the NCHW original,
for every method.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytest_camcheck import compute_cam
from pytest_camcheck.engine.methods import METHODS
from pytest_camcheck.errors import LayerError

from .test_engine_safety import assert_same, snapshot


class Grid(nn.Module):
    """conv (stride 4) -> the layer -> conv -> GAP -> Linear; the layer holds the grid in ``layout``."""

    def __init__(self, layout: str = "NCHW", prefix: int = 0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layout, self.prefix = layout, prefix
        self.stem = nn.Conv2d(3, 6, 4, stride=4)
        self.layer = nn.Identity()
        self.mix = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)
        self.cls_token = nn.Parameter(torch.randn(1, prefix, 6, generator=g)) if prefix else None
        with torch.no_grad():
            for p in (self.stem.weight, self.stem.bias, self.mix.weight, self.mix.bias, self.fc.weight, self.fc.bias):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.stem(x)
        n, c, h, w = a.shape
        if self.layout == "NHWC":
            a = self.layer(a.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        elif self.layout == "tokens":
            t = a.flatten(2).transpose(1, 2)
            if self.prefix:
                t = torch.cat([self.cls_token.expand(n, -1, -1), t], dim=1)
            t = self.layer(t)
            a = t[:, self.prefix:].transpose(1, 2).reshape(n, c, h, w)
        else:
            a = self.layer(a)
        return self.fc(torch.relu(self.mix(torch.relu(a))).mean(dim=(2, 3)))


X = torch.rand(3, 32, 24, generator=torch.Generator().manual_seed(3))


CASES = [(layout, prefix, method) for layout, prefix in [("NHWC", 0), ("tokens", 3)] for method in sorted(METHODS)]
CASES += [("tokens", prefix, method) for prefix in (0, 1) for method in ("gradcam", "ablationcam")]


@pytest.mark.parametrize("layout,prefix,method", CASES)
def test_every_method_gives_the_nchw_map_on_tokens_and_channels_last(layout: str, prefix: int,
                                                                     method: str) -> None:
    reference = Grid("NCHW")
    model = Grid(layout, prefix)
    model.load_state_dict(reference.state_dict(), strict=False)
    if method == "cam":  # CAM needs GAP -> Linear right after the layer: refused alike in every layout
        with pytest.raises(Exception, match="method 'cam' needs"):
            compute_cam(model, X, target=1, method=method, layer="layer")
        return
    ours = compute_cam(model, X, target=1, method=method, layer="layer")
    expected = compute_cam(reference, X, target=1, method=method, layer="layer")
    assert ours.raw.shape == (8, 6)
    np.testing.assert_allclose(ours.raw, expected.raw, rtol=1e-4, atol=1e-5 * np.abs(expected.raw).max())
    assert ours.layout == ("NHWC" if layout == "NHWC" else f"tokens ({prefix} prefix + 8x6)")
    assert expected.layout == "NCHW"


def test_reshape_gives_the_built_in_layout_map_and_is_checked() -> None:
    model = Grid("tokens", prefix=2)
    model.load_state_dict(Grid("NCHW").state_dict(), strict=False)
    grid = lambda t: t[:, 2:].reshape(t.shape[0], 8, 6, -1).permute(0, 3, 1, 2)  # noqa: E731
    for method in ("gradcam", "ablationcam", "scorecam"):
        own = compute_cam(model, X, target=2, method=method, layer="layer", reshape=grid)
        built_in = compute_cam(model, X, target=2, method=method, layer="layer")
        np.testing.assert_allclose(own.raw, built_in.raw, rtol=1e-5, atol=1e-6 * np.abs(built_in.raw).max())
        assert own.layout == "reshape"
    with pytest.raises(LayerError, match=r"reshape turned .* \(1, 50, 6\) into \(1, 300\).*Fix"):
        compute_cam(model, X, target=2, layer="layer", reshape=lambda t: t.flatten(1))


def test_a_token_count_that_is_no_grid_of_the_input_is_refused() -> None:
    """Two extra tokens the model does not declare: 50 tokens are no grid of the 32 x 24 input."""
    model = _Padded(Grid("NCHW"))
    before = snapshot(model)
    with pytest.raises(LayerError, match=r"50 tokens are not prefix tokens plus a grid.*Fix.*reshape="):
        compute_cam(model, X, target=0, layer="net.layer")
    assert_same(before, snapshot(model))


class _Padded(nn.Module):
    """Two extra tokens nobody declares."""

    def __init__(self, net: Grid) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        a = net.stem(x)
        n, c, h, w = a.shape
        t = torch.cat([torch.zeros(n, 2, c), a.flatten(2).transpose(1, 2)], dim=1)
        a = net.layer(t)[:, 2:].transpose(1, 2).reshape(n, c, h, w)
        return net.fc(a.mean(dim=(2, 3)))


class _Heads(nn.Module):
    """A toy self-attention whose (batch, heads, tokens, dim) queries are a module output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.q = nn.Linear(8, 8)
        self.split = nn.Identity()
        self.post = nn.Identity()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        q = self.split(self.q(t).reshape(t.shape[0], t.shape[1], 2, 4).transpose(1, 2))
        attn = torch.softmax(q @ q.transpose(-1, -2), dim=-1)
        out = self.post((attn @ q).transpose(1, 2).reshape(t.shape))
        return self.fc(out[:, 0])


def test_attention_internals_are_refused() -> None:
    model = _Heads()
    before = snapshot(model)
    with pytest.raises(LayerError, match=r"\(1, 2, 17, 4\).*internals of an attention layer.*Fix"):
        compute_cam(model, torch.rand(3, 32, 32), target=0, layer="split")
    assert_same(before, snapshot(model))


class _RoI(nn.Module):
    """A detector-like head: the layer's first dimension is 5 boxes, not the one image."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.Identity()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        crops = torch.cat([f[:, :, i:i + 4, i:i + 4] for i in range(5)])  # 5 "proposals" per image
        return self.fc(self.pool(crops).mean(dim=(2, 3))).sum(dim=0, keepdim=True)


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_outputs_whose_first_dimension_is_not_the_images_are_refused(method: str) -> None:
    model = _RoI()
    with pytest.raises(LayerError, match=r"shape \(5, 4, 4, 4\) for a batch of 1 image.*not the images.*Fix"):
        compute_cam(model, torch.rand(3, 16, 16), target=0, layer="pool", method=method)
    assert compute_cam(model, torch.rand(3, 16, 16), target=0).layer == "body"


def test_a_layer_whose_patch_tokens_do_not_reach_the_score_is_refused() -> None:
    """The score reads the prefix token only: the patch tokens' gradient is zero, an empty map would look like
    'no evidence'; it is refused with the fix."""
    model = _Heads()
    with pytest.raises(LayerError, match=r"only through its 1 prefix token.*Fix"):
        compute_cam(model, torch.rand(3, 32, 32), target=0, layer="post")
    assert compute_cam(model, torch.rand(3, 32, 32), target=0).layer == "q"


# --- CLIP's CLS token, undeclared prefix tokens, outputs that read both ways, Ablation-CAM's rounding noise ---------

_CLIP_VISION = dict(image_size=64, patch_size=16, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                    intermediate_size=64)


def test_clip_vision_towers_read_their_class_embedding_as_a_prefix_token() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPConfig(vision_config=_CLIP_VISION, num_labels=3, text_config=dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    clf = transformers.CLIPForImageClassification(config).eval()  # mean of the patch tokens
    x = torch.rand(3, 64, 64)
    r = compute_cam(clf, x, target=1)
    assert (r.layer, r.layout) == ("vision_model.encoder.layers.1", "tokens (1 prefix + 4x4)")

    class Probe(nn.Module):  # a user's head on CLIP's pooled CLS token
        def __init__(self) -> None:
            super().__init__()
            self.clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**_CLIP_VISION))
            self.fc = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.clip(pixel_values=x).pooler_output)

    probe = Probe().eval()
    r = compute_cam(probe, x, target=0)
    assert r.layer.endswith("encoder.layers.1.layer_norm1") and r.layout == "tokens (1 prefix + 4x4)"
    assert any(not compute_cam(probe, x, target=t).empty for t in range(3))


class _UndeclaredCLS(nn.Module):
    """A ViT whose CLS token has a name camcheck does not know: its token layers cannot be read."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patches = nn.Conv2d(3, 8, 8, stride=8)
        self.start = nn.Parameter(torch.randn(1, 1, 8))
        self.block = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patches(x).flatten(2).transpose(1, 2)
        t = self.block(torch.cat([self.start.expand(len(t), -1, -1), t], dim=1))
        return self.fc(t.mean(dim=1))


def test_the_automatic_layer_refuses_to_fall_back_to_the_patch_embedding() -> None:
    with pytest.raises(LayerError, match=r"token layers cannot be read as a grid .*would fall back to 'patches'"):
        compute_cam(_UndeclaredCLS().eval(), torch.rand(3, 32, 32), target=0)
    r = compute_cam(_UndeclaredCLS().eval(), torch.rand(3, 32, 32), target=0, layer="patches")  # asked for
    assert r.layout == "NCHW"


def test_the_automatic_layer_still_explains_pooled_transformers_and_cnn_trunks_before_a_transformer() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    # Swin pools its last tokens to (N, C, 1) with AdaptiveAvgPool1d: no token stage left unread
    swin = transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, num_labels=3))
    assert compute_cam(swin.eval(), torch.rand(3, 32, 32), target=0).layer == "swin.layernorm"

    class Hybrid(nn.Module):  # a CNN trunk, then a transformer head with a CLS token of its own, undeclared
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
            self.proj, self.cls = nn.Conv2d(8, 8, 1), nn.Parameter(torch.zeros(1, 1, 8))
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.proj(self.trunk(x)).flatten(2).transpose(1, 2)
            return self.head(self.encoder(torch.cat([self.cls.expand(len(t), -1, -1), t], 1))[:, 0])

    r = compute_cam(Hybrid().eval(), torch.rand(3, 32, 32), target=0)
    assert (r.layer, r.layout, r.empty) == ("proj", "NCHW", False)  # the trunk's last stage, a real one


def test_an_activation_after_a_linear_on_channels_last_is_read_channels_last() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    net = transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=5)).eval()
    x, layer = torch.rand(3, 128, 128), "convnext.encoder.stages.0.layers.0.act"  # (N, 32, 32, 32): both ways
    r = compute_cam(net, x, target=2, layer=layer)
    told = compute_cam(net, x, target=2, layer=layer, reshape=lambda t: t.permute(0, 3, 1, 2))
    assert r.layout == "NHWC"
    np.testing.assert_allclose(r.raw, told.raw, rtol=1e-5, atol=1e-6)
    assert compute_cam(net, x, target=2).layout in ("NCHW", "NHWC")  # the automatic choice is unaffected


def test_the_pass_that_tells_a_layout_runs_once_per_layer_and_size_not_per_call(monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    from pytest_camcheck.engine import forward

    passes = []
    real = forward.probe_flow
    monkeypatch.setattr(forward, "probe_flow", lambda *a: passes.append(1) or real(*a))
    torch.manual_seed(0)  # a ReLU's (N, 16, 16, 16) output: both readings are grids of the 64 px input
    net = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 ** 3, 3)).eval()
    for _ in range(3):
        assert compute_cam(net, torch.rand(3, 64, 64), 0, layer="2").layout == "NCHW"  # the BatchNorm's tensor
    assert len(passes) == 1


def test_an_output_that_reads_both_ways_with_nothing_to_tell_is_refused() -> None:
    class PermutedInCode(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.stem, self.act = nn.Conv2d(3, 16, 4, stride=4), nn.GELU()
            self.fc = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.act(self.stem(x).permute(0, 2, 3, 1))  # (N, 16, 16, 16), channels last
            return self.fc(a.mean(dim=(1, 2)))

    net = PermutedInCode().eval()
    with pytest.raises(LayerError, match=r"reads as a grid both as \(N, C, H, W\) and as \(N, H, W, C\).*reshape="):
        compute_cam(net, torch.rand(3, 64, 64), target=0, layer="act")
    r = compute_cam(net, torch.rand(3, 64, 64), target=0, layer="act", reshape=lambda t: t.permute(0, 3, 1, 2))
    assert r.layout == "reshape"


def test_ablation_cam_refuses_a_layer_reached_only_through_its_cls_token_as_gradcam_does() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=64, depth=2).eval()
    nn.init.normal_(vit.head.weight, std=0.5)
    for method in ("gradcam", "ablationcam"):
        with pytest.raises(LayerError, match="only through its 1 prefix token"):
            compute_cam(vit, torch.rand(3, 64, 64), target=1, method=method, layer="norm")


def test_ablation_cam_drops_within_rounding_noise_give_an_empty_map() -> None:
    class HugeOffset(nn.Module):  # score = 1e6 + drops below 1 per channel: float32 keeps only their rounding
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.features, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.features(x)).mean(dim=(2, 3))) + 1e6

    r = compute_cam(HugeOffset().eval(), torch.rand(3, 16, 16), target=0, method="ablationcam", layer="features")
    assert r.empty and not r.heatmap.any()


def test_ablation_cam_keeps_the_real_drops_of_a_bfloat16_model() -> None:
    import torchvision

    torch.manual_seed(0)
    net, x = torchvision.models.resnet18().eval(), torch.rand(3, 112, 112)  # its largest logit dwarfs the drops
    full = compute_cam(net, x, method="ablationcam", layer="layer4")
    half = compute_cam(net.to(torch.bfloat16), x, full.target, method="ablationcam", layer="layer4")
    assert not full.empty and not half.empty  # its rounding is coarser, its drops are too: not noise
    assert np.corrcoef(full.raw.ravel(), half.raw.ravel())[0, 1] > 0.9


def test_the_automatic_layer_is_remembered_per_output_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    class Mix(nn.Module):  # every token, CLS included, gets the mean of all tokens
        def __init__(self) -> None:
            super().__init__()
            self.own, self.mean = nn.Linear(6, 6), nn.Linear(6, 6)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.own(t) + self.mean(t.mean(dim=1, keepdim=True))

    class TwoHeads(nn.Module):  # head 0 reads the CLS token, head 1 the mean of the patch tokens
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.patches, self.cls_token = nn.Conv2d(3, 6, 4, stride=4), nn.Parameter(torch.randn(1, 1, 6))
            self.blocks = nn.Sequential(Mix(), Mix())
            self.cls_head, self.mean_head = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t = self.patches(x).flatten(2).transpose(1, 2)
            t = self.blocks(torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1))
            return self.cls_head(t[:, 0]), self.mean_head(t[:, 1:].mean(dim=1))

    from pytest_camcheck.engine import layers

    net, x = TwoHeads().eval(), torch.rand(3, 32, 32)
    probes = []
    real = layers._probe
    monkeypatch.setattr(layers, "_probe", lambda *a: probes.append(1) or real(*a))
    assert compute_cam(net, x, target=0, output=0).layer == "blocks.0"
    assert compute_cam(net, x, target=0, output=1).layer == "blocks"  # the Sequential ends with blocks.1
    assert compute_cam(net, x, target=0, output=0).layer == "blocks.0"
    assert compute_cam(net, x, target=1, output=1).layer == "blocks"
    assert len(probes) == 2  # once per pick: the later calls find their layer remembered
    for i in range(layers.AUTO_KEEP + 3):  # a new input size each call: the memory stays bounded
        compute_cam(net, torch.rand(3, 36 + 4 * i, 36), target=0, output=0)
    assert len(layers._AUTO[net]) == layers.AUTO_KEEP
    compute_cam(net, x, target=0, output=lambda out: out[0])  # a callable pick: probed, not kept
    assert len(layers._AUTO[net]) == layers.AUTO_KEEP and len(probes) == 2 + layers.AUTO_KEEP + 3 + 1


def test_cached_choices_are_made_again_when_the_model_changes() -> None:
    import gc
    import weakref as weak

    from torchvision.ops import Permute

    torch.manual_seed(0)
    x = torch.rand(3, 64, 64)
    # a layout told by the tensor's producer belongs to the model around the module: one ReLU in two models
    relu = nn.ReLU()
    a = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.BatchNorm2d(16), relu, nn.Flatten(), nn.Linear(16 ** 3, 3))
    b = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), Permute([0, 2, 3, 1]), relu, nn.Flatten(), nn.Linear(16 ** 3, 3))
    assert compute_cam(a.eval(), x, 0, layer="2").layout == "NCHW"
    assert compute_cam(b.eval(), x, 0, layer="2").layout == "NHWC"
    a[1] = Permute([0, 2, 3, 1])  # and a module replaced in place
    assert compute_cam(a, x, 0, layer="2").layout == "NHWC"
    # the automatic layer of a model whose module was replaced is probed again
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 64 * 64, 2)).eval()
    assert compute_cam(net, x, 0).layer == "3"
    net[3] = nn.Flatten()  # no grid any more: the last one is the convolution before it
    assert compute_cam(net, x, 0).layer == "2"
    # a callable output= pick (here the model's own method) is not kept, so it does not keep the model alive
    holder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 64 * 64, 2)).eval()
    holder.pick = lambda out: out  # type: ignore[attr-defined]
    compute_cam(holder, x, 0, output=holder.pick)
    gone = weak.ref(holder)
    del holder
    gc.collect()
    assert gone() is None
