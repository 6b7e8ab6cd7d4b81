"""CAM methods: each is one small function plus one registry line.

Every function gets the activations ``A`` (R, K, h, w), one row per (image, target), and what its kind of
method needs (``evidence``), and returns the map before ReLU and normalisation, shape (R, h, w):

- ``gradients``: dScore/dA, same shape as A (Grad-CAM family);
- ``activations``: nothing more (EigenCAM);
- ``head``: the final Linear's weight rows for the targets, (R, K) (CAM);
- ``masked_inputs``: scores of the input masked by each upsampled channel, (R, K) (Score-CAM);
- ``ablated_activations``: (base score (R,), scores with each channel zeroed (R, K)) (Ablation-CAM).

Formulas follow pytorch-grad-cam's (see the project's ANCHORS notes); EigenCAM's sign is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import MethodError

Evidence = Any


def _weighted(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """sum_k weights[r, k] * acts[r, k]: one batched matrix product (einsum would parse its equation each call)."""
    r, k, h, w = acts.shape
    return torch.bmm(weights.reshape(r, 1, k), acts.reshape(r, k, h * w)).reshape(r, h, w)


def cam(acts: torch.Tensor, head_rows: torch.Tensor) -> torch.Tensor:
    """Zhou et al. 2016: the class's Linear weights over the last feature map (no bias)."""
    return _weighted(head_rows, acts)


def gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """w_k = mean_ij G; map = sum_k w_k A_k."""
    return _weighted(grads.mean(dim=(2, 3)), acts)


def gradcam_pp(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: alpha = G^2 / (2 G^2 + S_k G^3 + eps), 0 where G = 0; w_k = sum_ij ReLU(G) alpha."""
    g2 = grads.pow(2)
    g3 = g2 * grads
    sums = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sums * g3 + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return _weighted((torch.relu(grads) * alpha).sum(dim=(2, 3)), acts)


def xgradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: w_k = sum_ij G A / (sum_ij A + eps)."""
    weights = (grads * acts).sum(dim=(2, 3)) / (acts.sum(dim=(2, 3)) + 1e-7)
    return _weighted(weights, acts)


def hirescam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM: sum_k G * A, elementwise, no spatial mean."""
    return (grads * acts).sum(dim=1)


def layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: sum_k ReLU(G_k) * A_k."""
    return (torch.relu(grads) * acts).sum(dim=1)


def eigencam(acts: torch.Tensor, _evidence: None = None) -> torch.Tensor:
    """First principal component of the activations (positions x channels, centred per channel).

    The SVD's sign is arbitrary; it is fixed so that the map correlates positively with the channel-mean
    activation map.
    """
    r, k, h, w = acts.shape
    flat = acts.reshape(r, k, h * w).transpose(1, 2).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    # The projection on the first right singular vector is sigma_1 * u_1. Both come from the eigen-decomposition
    # of the smaller Gram matrix (positions x positions or channels x channels), several times cheaper than an SVD.
    if h * w <= k:
        values, vectors = torch.linalg.eigh(flat @ flat.transpose(1, 2))
        proj = vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()
    else:
        _, vectors = torch.linalg.eigh(flat.transpose(1, 2) @ flat)
        proj = torch.einsum("rpk,rk->rp", flat, vectors[:, :, -1])
    mean_map = acts.reshape(r, k, h * w).mean(dim=1).double()
    mean_map = mean_map - mean_map.mean(dim=1, keepdim=True)
    sign = torch.where((proj * mean_map).sum(dim=1) < 0, -1.0, 1.0).to(proj)
    return (proj * sign[:, None]).reshape(r, h, w).to(acts.dtype)


NOISE_ULPS = 16  # rounding noise of a score recomputed in another batch: measured up to 12 ulps on timm ViTs


def float_noise(differences: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Where score differences are rounding noise: within NOISE_ULPS float32 units in the last place of scores as
    large as ``scale``. Such a difference says nothing about the target, however large min-max normalisation
    would make it. float32's, whatever the model's dtype: a bfloat16 model's rounding is 65,000 times coarser,
    and its real drops are of that order too, so a coarser threshold would empty its maps (they stay noisy).

    Example:
        >>> float_noise(torch.tensor([5e-7, 0.01]), torch.tensor(3.0)).tolist()
        [True, False]
    """
    return differences.abs() <= NOISE_ULPS * torch.finfo(torch.float32).eps * scale


def scorecam(acts: torch.Tensor, channel_scores: torch.Tensor) -> torch.Tensor:
    """Score-CAM: w = softmax_k(score of the input masked by channel k); map = sum_k w_k A_k.

    When every channel gives the same score (up to :func:`float_noise`) the map says nothing about the target:
    it is left empty.
    """
    scores = channel_scores.to(acts.dtype)
    spread = scores.amax(dim=1) - scores.amin(dim=1)
    flat = float_noise(spread, scores.abs().amax(dim=1).clamp_min(1e-12))
    weights = torch.where(flat[:, None], torch.zeros_like(scores), torch.softmax(scores, dim=1))
    return _weighted(weights, acts)


def ablationcam(acts: torch.Tensor, scores: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Ablation-CAM: w_k = (y - y_k) / y with y_k the score with channel k zeroed; a score of exactly 0 divides
    by 1 (the drop itself: the map a small positive score gives), not by 0. Drops that are rounding noise come
    as y_k = y (:func:`~.evidence.ablated_scores`), so a layer whose ablation changes nothing gives an empty
    map."""
    base, ablated = scores
    scale = torch.where(base == 0, torch.ones_like(base), base)
    return _weighted((base[:, None] - ablated) / scale[:, None], acts)


@dataclass(frozen=True)
class Method:
    """A CAM method: its name, what evidence it needs, and the function that builds the map."""

    name: str
    needs: str
    build: Callable[[torch.Tensor, Evidence], torch.Tensor]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cam", "head", cam),
        Method("gradcam", "gradients", gradcam),
        Method("gradcam++", "gradients", gradcam_pp),
        Method("xgradcam", "gradients", xgradcam),
        Method("hirescam", "gradients", hirescam),
        Method("layercam", "gradients", layercam),
        Method("scorecam", "masked_inputs", scorecam),
        Method("eigencam", "activations", eigencam),
        Method("ablationcam", "ablated_activations", ablationcam),
    )
}


def get_method(name: str) -> Method:
    """Look a method up by name (case-insensitive; ``-`` and ``_`` ignored)."""
    if not isinstance(name, str):
        raise MethodError(f"method must be a string, not {type(name).__name__}; one of: {', '.join(METHODS)}")
    key = name.lower().replace("_", "").replace("-", "").replace(" ", "")
    aliases = {m.replace("-", ""): m for m in METHODS} | {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}
    if key in aliases:
        return METHODS[aliases[key]]
    raise MethodError(f"unknown method {name!r}; use one of: {', '.join(METHODS)}")
