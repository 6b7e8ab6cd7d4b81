"""Tiny hand-built models whose maps can be computed by hand."""

from __future__ import annotations

import torch
from torch import nn


class TinyClassifier(nn.Module):
    """The smallest classifier with a conv layer to explain: conv (``features``, with dropout) -> mean -> Linear
    (``fc``); fixed weights from ``seed``."""

    def __init__(self, classes: int = 3, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.5))
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class GapLinear(nn.Module):
    """features (a fixed 1x1 conv) -> global average pool -> Linear: CAM's exact setting."""

    def __init__(self, channels: int = 3, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Conv2d(3, channels, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)
        with torch.no_grad():
            self.features.weight.copy_(torch.randn(self.features.weight.shape, generator=g))
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g))
            self.fc.bias.copy_(torch.randn(self.fc.bias.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class KnownGradient(nn.Module):
    """A = the input itself (layer ``features``); score of class c = sum(A * M_c + 0.5 * A^2 * Q_c),
    so dScore/dA = M_c + Q_c * A is known exactly."""

    def __init__(self, m: torch.Tensor, q: torch.Tensor) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.register_buffer("m", m)
        self.register_buffer("q", q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        per_class = (a[:, None] * self.m[None]).sum(dim=(2, 3, 4)) + 0.5 * (a[:, None] ** 2 * self.q[None]).sum(dim=(2, 3, 4))
        return per_class


class ConstantScore(nn.Module):
    """The score does not vary with the layer's output: every gradient map is zero."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        return self.fc(torch.ones(x.shape[0], 4)) + 0 * feats.mean()


class Binary(nn.Module):
    """GAP -> Linear with a single logit (seed 004's cat/dog head)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class SmallCNN(nn.Module):
    """BatchNorm, dropout and in-place ReLU: the things that go wrong with other libraries."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        )
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))
