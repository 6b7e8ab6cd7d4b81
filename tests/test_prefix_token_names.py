"""Prefix tokens kept one set per stage (timm CoaT's cls_token1..4, CrossViT's cls_token_0 and cls_token_1).

Each map is checked against Grad-CAM computed here by hand: the layer's output hooked, the prefix tokens of the
layer's own stage dropped (one CLS token per CoaT stage or CrossViT branch, never the four or two of the whole
model), the rest laid on the grid that stage really has (CoaT: the input at stride 4, 8, 16 or 32; CrossViT: branch
0 at patch 12 on the input, branch 1 at patch 16 on the input resized to 224/240 of its size), and where the model
lays those tokens out itself (its next stage's input, ``forward_intermediates``) that split is checked to be the
model's own. The same tokens split one off (the CLS token read as the first patch) must give a clearly different
map, so a wrong split could not pass. Where the layout cannot be told the layer stays refused with ``reshape=``.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_camcheck import compute_cam
from pytest_camcheck.errors import LayerError

timm = pytest.importorskip("timm")

TARGET = 1


@functools.cache
def _timm(name: str, size: int, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, img_size=size, **kwargs).eval()


def _image(size: int) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(1))


def _layer_io(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output for ``x`` and the gradient of the target's score with respect to it."""
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        score = model(x[None])[0, TARGET]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score, seen[-1])
    return seen[-1].detach(), grad


def _split(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(1, T, C) tokens -> (1, C, h, w): ``prefix`` tokens dropped, the next h*w in row-major order."""
    h, w = grid
    return tokens[:, prefix:prefix + h * w].reshape(1, h, w, -1).permute(0, 3, 1, 2)


def _gradcam(acts: torch.Tensor, grads: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of (1, C, h, w) activations and gradients: the map before ReLU, and the ReLU'd, min-max normalised
    map upsampled (bilinear) to the input's size."""
    raw = (grads.mean(dim=(2, 3))[:, :, None, None] * acts).sum(dim=1)[0]
    m = torch.relu(raw)
    m = (m - m.min()) / (m.max() - m.min())
    up = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return raw.numpy(), up.numpy()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _input_of(module: str, call: int = 0) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """The model's own (1, C, h, w) grid of a stage's patch tokens: what ``module`` receives on its ``call``-th
    call (CoaT's next patch embedding gets the stage's tokens without the CLS token, laid out by CoaT itself)."""
    def own(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen = []
        handle = model.get_submodule(module).register_forward_pre_hook(lambda m, i: seen.append(i[0]))
        try:
            with torch.no_grad():
                model(x[None])
        finally:
            handle.remove()
        return seen[call]
    return own


def _intermediate(index: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """CrossViT's own (1, C, h, w) grid of a branch's patch tokens after a multi-scale block."""
    def own(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.forward_intermediates(x[None], indices=[index], intermediates_only=True)[0]
    return own


# model, its size, the layer asked for (None: automatic), the layer used, its stage's prefix tokens and grid (by
# hand from the architecture), and where the model lays the layer's patch tokens out itself (None: nowhere)
CoaT_LITE = ("coat_lite_tiny", 128, {})
CoaT = ("coat_tiny", 96, {"parallel_depth": 2})  # coat_tiny's blocks and names, two of its six parallel blocks
CROSSVIT = ("crossvit_tiny_240", 120, {})  # branch 0: 120 px at patch 12; branch 1: 112 px (120 * 224/240) at 16
CROPPED = ("crossvit_tiny_240", 120, {"crop_scale": True})  # branch 1 sees a centre crop instead
CASES = [
    (CoaT_LITE, None, "serial_blocks4.1.factoratt_crpe.qkv", 1, (4, 4), None),  # stride 32
    (CoaT_LITE, "serial_blocks3.1", "serial_blocks3.1", 1, (8, 8), _input_of("patch_embed4")),  # stride 16
    (CoaT, None, "serial_blocks4.1", 1, (3, 3), None),  # before the parallel blocks; CLS-pooled after them
    (CoaT, "serial_blocks2.1", "serial_blocks2.1", 1, (12, 12), _input_of("patch_embed3")),  # stride 8
    (CROSSVIT, None, "blocks.2.blocks.1", 1, (7, 7), _intermediate(3 * 1 + 2)),  # branch 1, last block
    (CROSSVIT, "blocks.1.blocks.0", "blocks.1.blocks.0", 1, (10, 10), _intermediate(3 * 0 + 1)),  # branch 0
    (CROPPED, None, "blocks.2.blocks.0", 1, (10, 10), _intermediate(3 * 0 + 2)),  # branch 1 refused, see below
]


@pytest.mark.parametrize("spec,layer,used,prefix,grid,own", CASES,
                         ids=[f"{spec[0]}{'-crop' if spec[2].get('crop_scale') else ''}-{layer or 'auto'}"
                              for spec, layer, *_ in CASES])
def test_the_map_of_a_stage_is_grad_cam_on_the_grid_of_that_stage(spec: tuple, layer: str | None, used: str,
                                                                   prefix: int, grid: tuple[int, int],
                                                                   own: Callable | None) -> None:
    name, size, kwargs = spec
    model, x = _timm(name, size, **kwargs), _image(size)
    r = compute_cam(model, x, target=TARGET, layer=layer)
    assert (r.layer, r.layout) == (used, f"tokens ({prefix} prefix + {grid[0]}x{grid[1]})")
    tokens, grads = _layer_io(model, x, used)
    if own is not None:  # the split is the model's own layout of these tokens
        torch.testing.assert_close(_split(tokens, prefix, grid), own(model, x), rtol=1e-5, atol=1e-6)
    raw, up = _gradcam(_split(tokens, prefix, grid), _split(grads, prefix, grid), size)
    np.testing.assert_allclose(r.raw, raw, rtol=1e-4, atol=1e-5 * np.abs(raw).max())
    assert _corr(r.heatmap, up) > 0.999
    # one token off: the stage's CLS token read as the first patch, so every patch one cell on
    wrong_raw, wrong = _gradcam(_split(tokens, prefix - 1, grid), _split(grads, prefix - 1, grid), size)
    assert _corr(r.heatmap, wrong) < 0.9
    assert not np.allclose(r.raw, wrong_raw, rtol=1e-2, atol=1e-3 * np.abs(raw).max())


def test_layers_that_no_single_stage_holds_stay_refused_with_reshape() -> None:
    coat = _timm(*CoaT[:2], **CoaT[2])
    x = _image(CoaT[1])
    for layer in ("parallel_blocks.0.norm12", "parallel_blocks.1.factoratt_crpe3"):  # stages 2 to 4 side by side
        with pytest.raises(LayerError, match=r"prefix tokens per stage \(cls_token1, .*cls_token4.*no single stage"
                                             r".*reshape="):
            compute_cam(coat, x, target=TARGET, layer=layer)
    cross = _timm(*CROSSVIT[:2], **CROSSVIT[2])
    # the cross-attention of branch 0: its own CLS token before branch 1's 7x7 patches, not its stage's 10x10
    with pytest.raises(LayerError, match=r"stage 0 .*cls_token_0: 1 prefix.*10x10 grid.*50 tokens are neither.*"
                                         r"reshape="):
        compute_cam(cross, _image(CROSSVIT[1]), target=TARGET, layer="blocks.0.fusion.0.norm1")
    cropped = _timm(*CROPPED[:2], **CROPPED[2])
    for layer in ("blocks.2.blocks.1", "norm.1"):  # branch 1's 7x7 grid covers a 112 px centre crop only
        with pytest.raises(LayerError, match=r"stage 1 .*sees a 112x112 crop of the 120x120 input.*reshape="):
            compute_cam(cropped, _image(CROPPED[1]), target=TARGET, layer=layer)


class _Embed(nn.Module):
    """A patch embedding that declares its grid, as timm's does: (N, C, H, W) -> (N, h*w, C')."""

    def __init__(self, cin: int, cout: int, stride: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.proj, self.grid_size = nn.Conv2d(cin, cout, stride, stride=stride), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Mix(nn.Module):
    """Every token, prefix tokens included, gets its own Linear and the mean of all tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.own, self.mean = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.own(t) + self.mean(t.mean(dim=1, keepdim=True)))


class _TwoStages(nn.Module):
    """Two serial stages with prefix tokens of their own: one cls_token1 before stage 1's 8 x 8 grid, two
    cls_token2 before stage 2's 4 x 4 grid (a 32 x 32 input); the head averages stage 2's patch tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed1, self.stage1 = _Embed(3, 6, 4, (8, 8)), _Mix(6)
        self.patch_embed2, self.stage2 = _Embed(6, 8, 2, (4, 4)), _Mix(8)
        self.cls_token1, self.cls_token2 = nn.Parameter(torch.randn(1, 1, 6)), nn.Parameter(torch.randn(1, 2, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        t = self.stage1(torch.cat([self.cls_token1.expand(n, -1, -1), self.patch_embed1(x)], dim=1))
        t = t[:, 1:].transpose(1, 2).reshape(n, 6, 8, 8)
        t = self.stage2(torch.cat([self.cls_token2.expand(n, -1, -1), self.patch_embed2(t)], dim=1))
        return self.head(t[:, 2:].mean(dim=1))


def test_each_stage_gets_its_own_prefix_count_not_the_models_total() -> None:
    model, x = _TwoStages().eval(), torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
    for layer, prefix, (h, w) in (("stage1", 1, (8, 8)), ("stage2", 2, (4, 4)), ("patch_embed2", 0, (4, 4))):
        r = compute_cam(model, x, target=0, layer=layer)
        assert r.layout == f"tokens ({prefix} prefix + {h}x{w})"
        told = compute_cam(model, x, target=0, layer=layer,
                           reshape=lambda t, p=prefix, h=h, w=w: t[:, p:].reshape(len(t), h, w, -1).permute(0, 3, 1, 2))
        np.testing.assert_allclose(r.raw, told.raw, rtol=1e-5, atol=1e-6 * np.abs(told.raw).max())
    # the model's three prefix tokens added up leave 15 tokens, no 4x4 grid; stage 1's one token instead of stage
    # 2's two shifts every patch by one cell
    off = compute_cam(model, x, target=0, layer="stage2",
                      reshape=lambda t: t[:, 1:17].reshape(len(t), 4, 4, -1).permute(0, 3, 1, 2))
    right = compute_cam(model, x, target=0, layer="stage2").raw
    assert not np.allclose(off.raw, right, rtol=1e-2, atol=1e-3 * np.abs(right).max())
    assert compute_cam(model, x, target=0).layer == "stage2"


class _SharedSequence(nn.Module):
    """Numbered CLS tokens that are no stages': cls_token_0 and cls_token_1 both before one sequence of 8 x 8
    patches, and a ModuleList with one block per number. Their names alone must not place them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = _Embed(3, 6, 4, (8, 8))
        self.cls_token_0, self.cls_token_1 = nn.Parameter(torch.randn(1, 1, 6)), nn.Parameter(torch.randn(1, 1, 6))
        self.blocks = nn.ModuleList([_Mix(6), _Mix(6)])
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        t = torch.cat([self.cls_token_0.expand(n, -1, -1), self.cls_token_1.expand(n, -1, -1), self.patch_embed(x)], 1)
        for block in self.blocks:
            t = block(t)
        return self.head(t[:, 2:].mean(dim=1))


def test_numbered_prefix_tokens_without_a_patch_embedding_per_stage_are_refused() -> None:
    model, x = _SharedSequence().eval(), torch.rand(3, 32, 32)
    for layer in ("blocks.0", "blocks.1"):
        with pytest.raises(LayerError, match=r"prefix tokens per stage \(cls_token_0, cls_token_1\) but no patch "
                                             r"embedding per stage.*reshape="):
            compute_cam(model, x, target=0, layer=layer)
    told = compute_cam(model, x, target=0, layer="blocks.1",
                       reshape=lambda t: t[:, 2:].reshape(len(t), 8, 8, -1).permute(0, 3, 1, 2))
    assert told.layout == "reshape"
