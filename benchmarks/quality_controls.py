"""Deliberately broken explanations, the negative controls of the explanation-quality checks.

- :class:`EdgeExplained`: the model with a fixed, parameter-free edge filter (``edges``) whose mean is added to
  every logit (predictions and probabilities unchanged). Grad-CAM at ``layer="edges"`` is the edge magnitude of the
  image whatever the weights: what :func:`pytest_camcheck.assert_sane` must reject.
- :func:`inverted_map`, :func:`random_map`, :func:`smooth_random_map`: maps for ``heatmap=`` that
  :func:`pytest_camcheck.assert_faithful` must reject.
- :class:`NoisyGradients`: a copy of the model with seeded noise added to the gradient reaching a layer (a method
  made noisy, as a stochastic explanation with too few samples is); Grad-CAM at ``layer=noisy.layer`` is what
  :func:`pytest_camcheck.assert_stable` must reject.

Example:
    >>> from pytest_camcheck.bundled import load_bundled
    >>> broken = EdgeExplained(load_bundled("camcheck-shapes"))
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytest_camcheck.zoo import attach_info, model_info


class SobelMagnitude(nn.Module):
    """Gradient magnitude of the grey image, (N, 1, H, W); no parameters."""

    def __init__(self) -> None:
        super().__init__()
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernels", torch.stack([kx, kx.T])[:, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(dim=1, keepdim=True)
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.kernels)
        return g.pow(2).sum(dim=1, keepdim=True).add(1e-12).sqrt()


class EdgeExplained(nn.Module):
    """``model(x) + mean(edges(x))`` on every logit; explain it at ``layer="edges"``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.edges = SobelMagnitude()
        info = model_info(model)
        if info is not None:
            attach_info(self, info)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.edges(x).mean(dim=(1, 2, 3))[:, None]


class _Noise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float, seed: int) -> torch.Tensor:  # type: ignore[override]
        ctx.scale, ctx.seed = scale, seed
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        gen = torch.Generator().manual_seed(ctx.seed)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        spread = weights.std(dim=1, keepdim=True)
        noise = torch.randn(weights.shape, generator=gen).to(grad) * spread * ctx.scale
        return grad + noise, None, None


class _NoisyOutput(nn.Module):
    """``inner``'s output, with seeded noise added to the gradient that flows back into it (a new seed per call)."""

    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale
        self.calls = itertools.count()

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return _Noise.apply(self.inner(*args, **kwargs), self.scale, next(self.calls))

    def __deepcopy__(self, memo: dict) -> "_NoisyOutput":
        import copy

        return _NoisyOutput(copy.deepcopy(self.inner, memo), self.scale)


class NoisyGradients(nn.Module):
    """A copy of ``model`` whose module ``layer`` (an (N, C, H, W) map) gets per-channel noise of ``scale``
    times the spread of Grad-CAM's channel weights added to the gradient reaching it (a new seed at each call):
    a method made noisy. Explain it at ``layer=noisy.layer`` (``"model.<layer>.inner"``, the original module); the
    predictions are the model's own. The model handed over is not changed.

    Example:
        >>> from pytest_camcheck.bundled import load_bundled
        >>> noisy = NoisyGradients(load_bundled("camcheck-shapes-vit"), layer="tokens_to_grid")
        >>> noisy.layer
        'model.tokens_to_grid.inner'
    """

    def __init__(self, model: nn.Module, scale: float = 1.0, layer: str = "features") -> None:
        super().__init__()
        import copy

        self.model = copy.deepcopy(model)
        parent_name, _, child = layer.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        setattr(parent, child, _NoisyOutput(getattr(parent, child), scale))
        self.layer = f"model.{layer}.inner"
        info = model_info(model)
        if info is not None:
            attach_info(self, info)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def inverted_map(heatmap: np.ndarray) -> np.ndarray:
    """1 - map: the least relevant pixels first."""
    return (1.0 - heatmap).astype(np.float32)


def random_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Uniform noise per pixel."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def smooth_random_map(shape: tuple[int, int], seed: int, cells: int = 6) -> np.ndarray:
    """Random blobs: a cells x cells grid of uniform noise, bilinearly enlarged (a map that looks like a map)."""
    grid = torch.from_numpy(np.random.default_rng(seed).random((1, 1, cells, cells)).astype(np.float32))
    return F.interpolate(grid, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()
