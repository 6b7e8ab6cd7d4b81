"""The one step where a layer's output becomes the (N, C, H, W) grid the methods work on.

A :class:`Layout` says how the layer's output is laid out and rearranges it (and its gradient, which has the
same layout) into the grid. A layout that cannot be told is refused with a LayerError, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LayerError


def is_spatial(t: torch.Tensor) -> bool:
    """A (N, C, H, W) tensor with more than one position."""
    return t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1


@dataclass(frozen=True)
class Layout:
    """How a layer's output is laid out: ``name`` ("NCHW") and the rearrangement into the grid."""

    name: str

    def grid(self, t: torch.Tensor) -> torch.Tensor:
        """The (N, C, H, W) grid of a layer output (or of its gradient)."""
        return t

    def zero_channels(self, one: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """Copies of one image's layer output (shape (1, ...)), copy ``j`` with grid channel ``channels[j]`` set
        to zero: what Ablation-CAM feeds to the layers after the chosen one."""
        copies = one.repeat(len(channels), *([1] * (one.dim() - 1)))
        copies[torch.arange(len(channels)), channels] = 0
        return copies


NCHW = Layout("NCHW")


def decide_layout(output: torch.Tensor, layer_name: str) -> Layout:
    """The layout of ``layer_name``'s output; a LayerError naming the fix for an output with no grid."""
    if is_spatial(output):
        return NCHW
    raise LayerError(
        f"layer {layer_name!r} outputs shape {tuple(output.shape)}, which has no spatial (H, W) grid to "
        "build a map on. Fix: choose a convolutional layer before global pooling, or layer=None for auto"
    )
