"""The bundled models: two small CNNs and a small vision transformer trained on :mod:`pytest_camcheck.scenes`,
shipped inside the package.

- ``camcheck-shapes``: trained on clean scenes (a third carry a corner watermark of random colour, which it
  learns to ignore); it looks at the shape.
- ``camcheck-shapes-shortcut``: trained on shortcut scenes where only the corner watermark predicts the
  label; it looks at the watermark, not at the shape.
- ``camcheck-shapes-vit``: :class:`ShapesViT`, trained on the same clean scenes as ``camcheck-shapes``.

``camcheck-shapes`` and the transformer also learned that an image whose pixels are partly replaced by its blur
holds that much less evidence (``deletion`` in :class:`pytest_camcheck.train.Recipe`), so their deletion curves
measure the evidence removed, not the perturbation.

The CNNs are ``features`` (convolutions, stride 8) -> ``pool`` (global average) -> ``fc`` (Linear), so every
CAM method applies, "cam" included, and ``features`` is their CAM layer. The transformer's layers output
tokens (B, 1 + 14 * 14, dim): a class token, then the patch tokens of a 14 x 14 grid. The weights live in
``pytest_camcheck/data/<name>.pt`` (float16 state dict, read with ``weights_only=True``) beside
``<name>.json`` (their sha256, checked on every load, and how they were trained). To rebuild them:
``python -m pytest_camcheck.train --model all --out pytest_camcheck/data``.

Example:
    >>> model = load_bundled("camcheck-shapes")
    >>> bundled_categories("camcheck-shapes")[:3]
    ('circle', 'square', 'triangle')
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

from .errors import CamCheckError
from .scenes import CLASSES
from .zoo import ModelInfo, attach_info, load_state_dict, sha256_of

__all__ = ["BUNDLED_MODELS", "DATA_DIR", "INPUT_SIZE", "ShapesNet", "ShapesViT", "TokensToGrid", "bundled_categories",
           "bundled_preprocess", "load_bundled", "weights_paths"]

BUNDLED_MODELS: tuple[str, ...] = ("camcheck-shapes", "camcheck-shapes-shortcut", "camcheck-shapes-vit")
DATA_DIR = Path(__file__).parent / "data"
INPUT_SIZE = (112, 112)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
_WIDTHS = (16, 32, 48, 96)
_VIT = {"dim": 96, "depth": 4, "heads": 3, "mlp_ratio": 4.0, "init_values": 1e-4}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _features() -> nn.Sequential:
    """Convolutions and max-pools to a stride-8, ``_WIDTHS[-1]``-channel map (ShapesNet's ``features``)."""
    w0, w1, w2, w3 = _WIDTHS
    return nn.Sequential(OrderedDict(
        stem=_block(3, w0),
        pool1=nn.MaxPool2d(2),
        stage1=_block(w0, w1),
        pool2=nn.MaxPool2d(2),
        stage2=nn.Sequential(_block(w1, w2), _block(w2, w2)),
        pool3=nn.MaxPool2d(2),
        stage3=nn.Sequential(_block(w2, w3), _block(w3, w3), _block(w3, w3)),
    ))


class ShapesNet(nn.Module):
    """Convolutions and max-pools to a stride-8 map (``features``), global average pool (``pool``), Linear
    (``fc``).

    Example:
        >>> net = ShapesNet()
        >>> net(torch.zeros(2, 3, *INPUT_SIZE)).shape
        torch.Size([2, 6])
    """

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = _features()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(_WIDTHS[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class PatchEmbed(nn.Module):
    """One token per 8 x 8 patch of the image: (B, 3, H, W) -> (B, grid_h * grid_w, dim) tokens in row-major
    order. ``img_size``, ``patch_size``, ``grid_size`` and ``num_patches`` are named as in timm, so the token
    grid can be read off the model.

    A hybrid embedding (the ViT paper's "hybrid", timm's ``HybridEmbed``): ``backbone`` is a stride-8 CNN
    (:class:`ShapesNet`'s ``features``), ``proj`` a 1 x 1 convolution from its channels to ``dim``, so token
    ``i`` describes the 8 x 8 patch ``i`` and its surroundings.

    Example:
        >>> embed = PatchEmbed(INPUT_SIZE, 96)
        >>> embed.grid_size, embed(torch.zeros(1, 3, *INPUT_SIZE)).shape
        ((14, 14), torch.Size([1, 196, 96]))
    """

    def __init__(self, img_size: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.img_size = tuple(img_size)
        self.patch_size = (8, 8)
        self.grid_size = (self.img_size[0] // 8, self.img_size[1] // 8)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.backbone = _features()
        self.proj = nn.Conv2d(_WIDTHS[-1], dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (fused ``qkv`` projection, then ``proj``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """``x * gamma``, one learned scale per channel (CaiT's LayerScale, timm's ``init_values``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale (timm's ``Block`` with ``init_values``): ``x + ls1(attn(norm1(x)))``,
    then ``x + ls2(mlp(norm2(x)))``; (B, N, dim) in and out."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, init_values: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class TokensToGrid(nn.Module):
    """Drop the ``prefix`` tokens and lay the patch tokens out as their grid: (B, prefix + h * w, C) ->
    (B, C, h, w), ``grid_size = (h, w)``.

    Example:
        >>> TokensToGrid((14, 14), 1)(torch.zeros(2, 197, 96)).shape
        torch.Size([2, 96, 14, 14])
    """

    def __init__(self, grid_size: tuple[int, int], prefix: int) -> None:
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.prefix = prefix

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, _, c = tokens.shape
        return tokens[:, self.prefix:].transpose(1, 2).reshape(b, c, *self.grid_size)


class ShapesViT(nn.Module):
    """A small vision transformer laid out like timm's ``VisionTransformer``: ``patch_embed`` (8 x 8 patches,
    a 14 x 14 grid at :data:`INPUT_SIZE`), a class token (``cls_token``, so ``num_prefix_tokens`` is 1) and
    learned ``pos_embed``, ``blocks.0`` ... ``blocks.3`` (each ``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp``,
    ``ls2``; the ``ls`` are LayerScale, timm's ``init_values``), then
    ``tokens_to_grid`` (:class:`TokensToGrid`: the class token dropped, the patch tokens as a (B, dim, 14, 14)
    map), their mean (``global_pool = "avg"``), ``fc_norm`` and ``head``.

    Every block outputs (B, 1 + 196, dim) tokens: the class token, then the patch tokens in row-major order.
    ``tokens_to_grid`` holds the last block's patch tokens as an (N, C, H, W) map, so the automatic layer of
    an engine that reads only such maps finds them; its Grad-CAM is the Grad-CAM of ``blocks.3``'s tokens.

    Example:
        >>> vit = ShapesViT()
        >>> vit.num_prefix_tokens, vit.patch_embed.grid_size, vit(torch.zeros(2, 3, *INPUT_SIZE)).shape
        (1, (14, 14), torch.Size([2, 6]))
    """

    def __init__(self, classes: int = len(CLASSES), *, dim: int = _VIT["dim"],
                 depth: int = _VIT["depth"], num_heads: int = _VIT["heads"], mlp_ratio: float = _VIT["mlp_ratio"],
                 init_values: float = _VIT["init_values"]) -> None:
        super().__init__()
        self.global_pool = "avg"
        self.num_prefix_tokens = 1
        self.embed_dim = dim
        self.patch_embed = PatchEmbed(INPUT_SIZE, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.patch_embed.num_patches, dim))
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_ratio, init_values) for _ in range(depth)))
        self.tokens_to_grid = TokensToGrid(self.patch_embed.grid_size, self.num_prefix_tokens)
        self.fc_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block, (B, 1 + grid_h * grid_w, dim)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.tokens_to_grid(self.forward_features(x))
        return self.head(self.fc_norm(grid.mean(dim=(2, 3))))


def _check_name(name: str) -> None:
    if name not in BUNDLED_MODELS:
        raise CamCheckError(f"unknown bundled model {name!r}; use one of: {', '.join(BUNDLED_MODELS)}")


def _architecture(name: str) -> type[nn.Module]:
    return ShapesViT if name == "camcheck-shapes-vit" else ShapesNet


def bundled_categories(name: str) -> tuple[str, ...]:
    """Class names of a bundled model, in output order.

    Example:
        >>> bundled_categories("camcheck-shapes-shortcut")
        ('circle', 'square', 'triangle', 'star', 'cross', 'ring')
    """
    _check_name(name)
    return CLASSES


def bundled_preprocess(name: str) -> transforms.Compose:
    """The evaluation preprocessing of a bundled model (a new Compose at each call): resize to
    :data:`INPUT_SIZE`, to tensor, normalise. Its geometry is exactly invertible.

    Example:
        >>> from PIL import Image
        >>> bundled_preprocess("camcheck-shapes")(Image.new("RGB", (150, 90))).shape
        torch.Size([3, 112, 112])
    """
    _check_name(name)
    return transforms.Compose([transforms.Resize(INPUT_SIZE), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def weights_paths(name: str, directory: Path | None = None) -> tuple[Path, Path]:
    """(weights file, metadata JSON) of a bundled model, in ``directory`` or :data:`DATA_DIR`.

    Example:
        >>> weights_paths("camcheck-shapes")[0].name
        'camcheck-shapes.pt'
    """
    _check_name(name)
    directory = DATA_DIR if directory is None else Path(directory)
    return directory / f"{name}.pt", directory / f"{name}.json"


def load_bundled(name: str, device: str | torch.device | None = None) -> nn.Module:
    """Load a bundled model in eval mode (on ``device``, CPU by default), its weights' hash checked, with its
    categories and preprocessing attached (so ``compute_cam`` needs neither).

    Example:
        >>> from pytest_camcheck import compute_cam
        >>> from pytest_camcheck.scenes import make_scene
        >>> model = load_bundled("camcheck-shapes")
        >>> scene = make_scene(1_000_000)
        >>> compute_cam(model, scene.image, scene.name).heatmap.shape == scene.image.shape[:2]
        True
    """
    weights, meta = weights_paths(name)
    rebuild = f"python -m pytest_camcheck.train --model {name} --out {weights.parent}"
    if not weights.is_file() or not meta.is_file():
        raise CamCheckError(
            f"the weights of bundled model {name!r} are missing ({weights} and {meta} are needed); reinstall "
            f"pytest-camcheck or rebuild them with: {rebuild}"
        )
    try:
        expected = json.loads(meta.read_text())["sha256"]
    except (ValueError, KeyError) as err:
        raise CamCheckError(
            f"{meta} is not valid metadata ({err}); reinstall pytest-camcheck or rebuild it with: {rebuild}"
        ) from err
    found = sha256_of(weights)
    if found != expected:
        raise CamCheckError(
            f"{weights} is corrupt or was modified: its sha256 is {found}, {meta.name} records {expected}. "
            f"Reinstall pytest-camcheck, or rebuild the weights (and their hash) with: {rebuild}"
        )
    state = load_state_dict(weights)
    model = _architecture(name)(len(CLASSES))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as err:
        raise CamCheckError(
            f"{weights} does not fit the {type(model).__name__} architecture of this version ({err}); rebuild it "
            f"with: {rebuild}"
        ) from err
    model.eval()
    if device is not None:
        model.to(device)
    attach_info(model, ModelInfo(name=name, categories=bundled_categories(name), preprocess=bundled_preprocess(name)))
    return model
