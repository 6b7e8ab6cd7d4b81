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
