"""``compute_cam``: model + image + target -> heatmap in the original image's pixels."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import CamCheckError, LayerError, MethodError, TargetError
from ..geometry import Geometry, describe_preprocess
from ..integrations import check_input_size, unwrap_layer, unwrap_model
from ..zoo import ModelInfo, model_info
from .capture import Capture, capture_layer, evaluation_mode, model_lock, raised_by_model, run_model as _forward
from .inputs import Batch, prepare
from .layers import auto_layer, is_spatial, resolve_layer
from .methods import get_method
from .targets import Pick, Scorer, Target, check_categories, check_logits, label_of, logits_of, resolve_target, top_classes

CHUNK = 32
ROUNDS_PER_BACKWARD = 16
ABLATION_BYTES = 64 * 2**20
EMPTY_RELATIVE = 1e-5


@dataclass
class CamResult:
    """One map: ``heatmap`` (float32, original image H x W, in [0, 1]), ``raw`` (the low-resolution map before
    ReLU and normalisation), the target explained and how the map was made (``preprocessing`` says which
    preprocessing made the input: the one given, the model's own such as a timm data config, or none). ``orientation`` is the EXIF
    orientation applied to the picture (1: none, 6: a phone photo turned upright): the map and ``image_size`` are
    in the pixels people see.

    Example:
        >>> r = compute_cam(model, "dog.jpg", "golden retriever")  # doctest: +SKIP
        >>> r.heatmap.shape == (r.image_size[0], r.image_size[1])  # doctest: +SKIP
        True
    """

    heatmap: np.ndarray
    raw: np.ndarray
    target: int
    label: str | None
    score: float
    probability: float | None
    layer: str
    method: str
    empty: bool
    image_size: tuple[int, int]
    top: list[tuple[int, str | None, float]] = field(default_factory=list)
    image: Image.Image | None = field(default=None, repr=False)
    orientation: int = 1
    preprocessing: str = ""

    def __repr__(self) -> str:
        label = f" ({self.label})" if self.label else ""
        return (f"CamResult(method={self.method!r}, layer={self.layer!r}, target={self.target}{label}, "
                f"score={self.score:.4g}, size={self.image_size}, empty={self.empty})")


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def dtype_of(model: nn.Module) -> torch.dtype:
    """The dtype inputs are cast to: the model's first floating-point parameter's, else float32."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    index = lambda d: d.index if d.index is not None else (torch.cuda.current_device() if d.type == "cuda" else 0)
    return index(a) == index(b)


def _row(output: Any, i: int) -> Any:
    if isinstance(output, torch.Tensor):
        return output[i]
    if isinstance(output, dict):
        return {k: _row(v, i) for k, v in output.items()}
    if isinstance(output, list) and output and not isinstance(output[0], torch.Tensor):
        return output[i]
    if isinstance(output, (tuple, list)):
        return type(output)(_row(v, i) for v in output)
    if hasattr(output, "logits"):
        return output.logits[i]
    return output


def _jobs(target: Any, batch: Batch) -> list[tuple[int, Target]]:
    """(image index, target) rows: one per image for a batch, one per target for a list on one image."""
    n = batch.x.shape[0]
    if not batch.batched:
        if isinstance(target, (list, tuple)):
            if not target:
                raise TargetError("the list of targets is empty; pass at least one target or None")
            return [(0, t) for t in target]
        return [(0, target)]
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise TargetError(
                f"{len(target)} targets were given for a batch of {n} images; pass one target per image, or one "
                "target (or None) for all"
            )
        return list(enumerate(target))
    return [(i, target) for i in range(n)]


class _Run:
    """State of one compute_cam call."""

    def __init__(self, model: nn.Module, batch: Batch, layer_name: str, module: nn.Module,
                 categories: Sequence[str] | None, pick: Pick = None):
        self.model, self.batch = model, batch
        self.layer_name, self.module, self.categories = layer_name, module, categories
        self.logits: torch.Tensor | None = None
        self.pick = pick

    def find(self, output: Any) -> torch.Tensor:
        """The logits in ``output`` (``output=`` of compute_cam, else found; the class names break a tie)."""
        return logits_of(output, self.pick, len(self.categories) if self.categories else None)

    def checked_activations(self, cap: Capture) -> torch.Tensor:
        if cap.activations is None:
            raise LayerError(
                f"layer {self.layer_name!r} did not run (or returned no tensor) during the forward pass; choose a "
                "module the model calls in forward(), e.g. the last convolutional stage"
            )
        acts = cap.activations
        if not is_spatial(acts):
            raise LayerError(
                f"layer {self.layer_name!r} outputs shape {tuple(acts.shape)}, which has no spatial (H, W) grid to "
                "build a map on. Fix: choose a convolutional layer before global pooling, or layer=None for auto"
            )
        return acts

    def scorers(self, jobs: list[tuple[int, Target]]) -> list[Scorer]:
        """One scorer per job. A class index or name is resolved once however many images share it, and the
        top-1 classes of all images come from one argmax."""
        if self.logits is None:
            return [Scorer(-1, t) for _, t in jobs]
        resolved: dict[tuple[type, Any], Scorer] = {}
        top: list[int] | None = None
        out = []
        for i, t in jobs:
            if t is None:
                if top is None:
                    top = top_classes(self.logits)
                out.append(Scorer(top[i]))
            elif type(t) in (int, str):
                key = (type(t), t)
                if key not in resolved:
                    resolved[key] = resolve_target(t, self.logits[i], self.categories)
                out.append(resolved[key])
            else:
                out.append(resolve_target(t, self.logits[i], self.categories))
        return out

    def set_output(self, output: Any, jobs: list[tuple[int, Target]]) -> None:
        try:
            logits = self.find(output)
        except TargetError:
            if self.pick is None and all(callable(t) and not isinstance(t, str) for _, t in jobs):
                return
            raise
        if logits.dim() == 2:
            check_logits(logits)
            self.logits = logits.detach()
        elif not all(callable(t) and not isinstance(t, str) for _, t in jobs):
            check_logits(logits)

    def scores(self, scorers: list[Scorer], jobs: list[tuple[int, Target]], output: Any, *,
               differentiable: bool = False) -> torch.Tensor:
        """The score of every job, shape (jobs,). Class scores on (N, classes) logits are gathered by one
        indexing operation (one autograd node, however large the batch); callable targets are called per image.
        ``differentiable``: every score must depend on the layer through autograd."""
        if self.logits is not None and self.logits.shape[1] > 1 and all(s.fn is None for s in scorers):
            parts = [self.find(output)[[i for i, _ in jobs], [s.index for s in scorers]]]
        else:
            parts = [scorer.score(*_seen_by_target(self, output, i)) for scorer, (i, _) in zip(scorers, jobs)]
        if differentiable and not all(p.requires_grad for p in parts):
            raise LayerError(
                f"the score does not depend on layer {self.layer_name!r} through autograd (the model may detach "
                "it or run under torch.no_grad()); choose a layer on the path to the output"
            )
        if len(parts) == 1 and parts[0].dim() == 1:
            return parts[0]
        # a callable may return a plain number, which becomes a CPU tensor next to CUDA logits
        return torch.stack([p.to(parts[0].device) for p in parts])


def _seen_by_target(run: _Run, output: Any, i: int) -> tuple[torch.Tensor | None, Any]:
    """(logits row or None, what a callable target gets) for image ``i``: the logits row when the output has
    logits, else image ``i``'s part of the raw output."""
    try:
        logits = run.find(output)
    except TargetError:
        return None, _row(output, i)
    return (logits[i] if logits.dim() == 2 else None), logits[i]


def _score_matrix(run: _Run, scorers: list[Scorer], output: Any, n: int) -> torch.Tensor:
    """Scores (len(scorers), n) of every scorer on each of the ``n`` images of ``output``."""
    seen = [_seen_by_target(run, output, b) for b in range(n)]
    return torch.stack([torch.stack([s.score(*v).float() for v in seen]) for s in scorers])


def _gradient_evidence(run: _Run, jobs: list[tuple[int, Target]]) -> tuple[torch.Tensor, list[Scorer], list[float]]:
    with torch.inference_mode(False):
        # the batch is already the engine's own copy; only a tensor made under the caller's inference_mode
        # needs a normal one, since autograd cannot record operations on it
        x = run.batch.x.clone() if run.batch.x.is_inference() else run.batch.x
        with capture_layer(run.module, track_grad=True) as cap:
            output = _forward(run.model, x)
        acts = run.checked_activations(cap)
        run.set_output(output, jobs)
        scorers = run.scorers(jobs)
        scores = run.scores(scorers, jobs, output, differentiable=True)
        grads = _job_gradients(scores, acts, jobs, run.layer_name)
    images = [i for i, _ in jobs]
    rows = acts.detach() if images == list(range(acts.shape[0])) else acts.detach()[images]
    return (rows, grads), scorers, scores.detach().tolist()


def _job_gradients(scores: torch.Tensor, acts: torch.Tensor, jobs: list[tuple[int, Target]],
                   layer_name: str) -> torch.Tensor:
    """d score_j / d acts[image of j] for every job, shape (jobs, C, H, W).

    Jobs on different images share one backward (their scores are summed: each image's activations only reach
    its own score). Several targets on one image need one backward each; they run as one batched backward
    (``is_grads_batched``), which reads the head's weights once instead of once per target, and fall back to one
    backward per round when an operator of the model has no batching rule.
    """
    rounds: list[int] = []
    seen: dict[int, int] = {}
    for i, _ in jobs:
        rounds.append(seen.get(i, 0))
        seen[i] = rounds[-1] + 1
    n_rounds = max(rounds) + 1
    images = [i for i, _ in jobs]
    if n_rounds == 1:  # one target per image: a single plain backward
        (grad,) = torch.autograd.grad(scores, acts, grad_outputs=torch.ones_like(scores), allow_unused=True)
        if grad is None:
            raise LayerError(
                f"the score does not depend on layer {layer_name!r}; choose a layer on the path to the output"
            )
        return grad if images == list(range(acts.shape[0])) else grad[images]
    select = torch.zeros((n_rounds, len(jobs)), device=scores.device, dtype=scores.dtype)
    select[rounds, list(range(len(jobs)))] = 1
    parts = []
    for start in range(0, n_rounds, ROUNDS_PER_BACKWARD):
        block = select[start:start + ROUNDS_PER_BACKWARD]
        grad = None
        if len(block) > 1:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "no batching rule, falling back to a loop" warnings
                    (grad,) = torch.autograd.grad(scores, acts, grad_outputs=block, retain_graph=True,
                                                  allow_unused=True, is_grads_batched=True)
            except RuntimeError:
                grad = None
        if grad is None:
            rows = []
            for row in block:
                (one,) = torch.autograd.grad(scores, acts, grad_outputs=row, retain_graph=True, allow_unused=True)
                if one is None:
                    raise LayerError(
                        f"the score does not depend on layer {layer_name!r}; choose a layer on the path to the output"
                    )
                rows.append(one)
            grad = torch.stack(rows)
        parts.append(grad)
    per_round = torch.cat(parts) if len(parts) > 1 else parts[0]
    return per_round[rounds, images]


def _last_linear(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` of ``module.modules()`` order, searched from the end: a head sits at the end, so
    this usually looks at a few modules instead of all of them."""
    for child in reversed(list(module.children())):
        found = _last_linear(child)
        if found is not None:
            return found
    return module if isinstance(module, nn.Linear) else None


def _head_rows(run: _Run, acts: torch.Tensor, scorers: list[Scorer], jobs: list[tuple[int, Target]]) -> torch.Tensor:
    head = _last_linear(run.model)
    refuse = (
        f"method 'cam' needs a head that is global average pooling followed by one Linear layer right after layer "
        f"{run.layer_name!r}; {{why}}. Fix: use method='gradcam' (equal to CAM on such heads, and works on any head)"
    )
    if run.logits is None or any(s.fn is not None for s in scorers):
        raise MethodError(refuse.format(why="it explains class logits only, not a callable target"))
    if head is None:
        raise MethodError(refuse.format(why="the model has no Linear layer"))
    if head.in_features != acts.shape[1] or head.out_features != run.logits.shape[1]:
        raise MethodError(refuse.format(
            why=f"the last Linear maps {head.in_features} -> {head.out_features} features, but the layer has "
                f"{acts.shape[1]} channels and the model {run.logits.shape[1]} outputs"))
    # CAM of class c is faithful exactly when logit c = w_c . mean(A) + b_c, so the rows explained are checked
    # (reading only their weights, not the whole head).
    binary = head.weight.shape[0] == 1
    index = [0 if binary else s.index for s in scorers]
    images = [i for i, _ in jobs]
    rows = head.weight.detach()[index].to(acts.dtype)
    predicted = (acts.mean(dim=(2, 3))[images] * rows).sum(dim=1)
    if head.bias is not None:
        predicted = predicted + head.bias.detach()[index].to(acts.dtype)
    scale = run.logits.abs().max().clamp_min(1e-6)
    if not torch.allclose(predicted, run.logits[images, index].to(acts.dtype), rtol=1e-3, atol=1e-3 * float(scale)):
        raise MethodError(refuse.format(
            why="the model's logits are not the Linear layer applied to the spatial mean of this layer's output "
                "(something else sits between them)"))
    if binary:
        sign = torch.tensor([1.0 if s.index == 1 else -1.0 for s in scorers], dtype=acts.dtype, device=acts.device)
        rows = rows * sign[:, None]
    return rows


def _inference_forward(run: _Run, jobs: list[tuple[int, Target]]) -> tuple[torch.Tensor, list[Scorer], list[float]]:
    with torch.inference_mode(), capture_layer(run.module, track_grad=False) as cap:
        output = _forward(run.model, run.batch.x)
    acts = run.checked_activations(cap)
    run.set_output(output, jobs)
    scorers = run.scorers(jobs)
    with torch.inference_mode():
        scores = run.scores(scorers, jobs, output).tolist()
    return acts, scorers, scores


def _masked_input_scores(run: _Run, acts: torch.Tensor, scorers: list[Scorer],
                         jobs: list[tuple[int, Target]]) -> torch.Tensor:
    x = run.batch.x
    out = torch.empty((len(jobs), acts.shape[1]), device=acts.device, dtype=torch.float32)
    with torch.inference_mode():
        for image_index in sorted({i for i, _ in jobs}):
            rows = [j for j, (i, _) in enumerate(jobs) if i == image_index]
            up = F.interpolate(acts[image_index:image_index + 1].float(), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)[0]
            lo = up.amin(dim=(1, 2), keepdim=True)
            hi = up.amax(dim=(1, 2), keepdim=True)
            masks = (up - lo) / (hi - lo + 1e-8)
            live = torch.nonzero((hi - lo).flatten() > 0).flatten()
            base_input = x[image_index:image_index + 1]
            layout = _fast_layout(run, base_input, image_index) if len(live) > 1 else torch.contiguous_format
            scores = torch.empty((len(rows), acts.shape[1]), device=acts.device, dtype=torch.float32)
            if len(live) < acts.shape[1]:
                blank = _forward(run.model, torch.zeros_like(base_input))
                scores[:] = _score_matrix(run, [scorers[j] for j in rows], blank, 1)
            for start in range(0, len(live), CHUNK):
                channels = live[start:start + CHUNK]
                masked = (base_input * masks[channels, None].to(x.dtype)).contiguous(memory_format=layout)
                output = _forward(run.model, masked)
                scores[:, channels] = _score_matrix(run, [scorers[j] for j in rows], output, len(channels))
            out[rows] = scores
    return out


def _fast_layout(run: _Run, base_input: torch.Tensor, image_index: int) -> torch.memory_format:
    """The memory layout for the many masked forwards of Score-CAM: channels-last, which convolutions run up to
    about twice as fast on the CPU, when the model gives the same logits for this image in that layout (checked
    once); otherwise the usual contiguous layout. Models whose code assumes contiguous tensors (``.view`` after
    a convolution, custom kernels) fail or disagree here and keep the contiguous layout."""
    if run.logits is None or base_input.dim() != 4:
        return torch.contiguous_format
    reference = run.logits[image_index].float()
    try:
        logits = run.find(run.model(base_input.contiguous(memory_format=torch.channels_last)))
    except Exception:
        return torch.contiguous_format
    if not isinstance(logits, torch.Tensor) or logits.shape[-1] != reference.shape[-1] or logits.dim() != 2:
        return torch.contiguous_format
    tolerance = 1e-3 * float(reference.abs().max().clamp_min(1.0))
    if torch.allclose(logits[0].float(), reference, rtol=1e-3, atol=tolerance):
        return torch.channels_last
    return torch.contiguous_format


def _ablated_scores(run: _Run, acts: torch.Tensor, scorers: list[Scorer], jobs: list[tuple[int, Target]],
                    base: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    x = run.batch.x
    k = acts.shape[1]
    out = torch.empty((len(jobs), k), device=acts.device, dtype=torch.float32)
    with torch.inference_mode():
        for image_index in sorted({i for i, _ in jobs}):
            rows = [j for j, (i, _) in enumerate(jobs) if i == image_index]
            a = acts[image_index]
            live = torch.nonzero(a.flatten(1).abs().amax(dim=1) > 0).flatten()
            scores = torch.tensor([base[j] for j in rows], device=acts.device, dtype=torch.float32)[:, None].repeat(1, k)
            # Each batch of ablated copies reruns the layers up to the target layer once (on one image), so the
            # batches are as large as ABLATION_BYTES allows rather than CHUNK.
            chunk = max(CHUNK, ABLATION_BYTES // max(1, a.numel() * a.element_size()))
            for start in range(0, len(live), chunk):
                channels = live[start:start + chunk]
                ablated = a.unsqueeze(0).repeat(len(channels), 1, 1, 1)
                ablated[torch.arange(len(channels)), channels] = 0
                output = _suffix_forward(run, x[image_index:image_index + 1], ablated)
                scores[:, channels] = _score_matrix(run, [scorers[j] for j in rows], output, len(channels))
            out[rows] = scores
    base_t = torch.tensor(base, device=acts.device, dtype=torch.float32)
    return base_t, out


def _suffix_forward(run: _Run, x1: torch.Tensor, activations: torch.Tensor) -> Any:
    """Run the layers after the target layer on a batch of replacement activations (the input is one image)."""
    try:
        with capture_layer(run.module, track_grad=False, replace=activations) as cap:
            output = run.model(x1)
        if cap.calls == 1 and _batch_size(run, output) == activations.shape[0]:
            return output
    except RuntimeError as err:  # the layers after it mix in the one-image input: rerun on a repeated input
        if raised_by_model(err):
            raise
    with capture_layer(run.module, track_grad=False, replace=activations) as cap:
        output = _forward(run.model, x1.expand(activations.shape[0], -1, -1, -1))
    if cap.calls != 1:
        raise MethodError(
            f"layer {run.layer_name!r} runs {cap.calls} times in one forward pass, so 'ablationcam' cannot ablate "
            "it; choose a layer that runs once"
        )
    return output


def _batch_size(run: _Run, output: Any) -> int:
    try:
        return int(run.find(output).shape[0])
    except TargetError:
        return len(output) if isinstance(output, (list, tuple)) else -1


def _normalise(raw: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
    """ReLU then min-max per map; a map with no positive part, or one that is constant up to float noise,
    is empty (all zeros), never NaN and never stretched noise.

    Each map's minimum and maximum come to the host in one transfer: they decide emptiness and, since a NaN or
    an infinity anywhere makes one of them non-finite, they also settle the finite check.
    """
    low, high = torch.aminmax(raw.flatten(1), dim=1)
    empty = []
    for lo_raw, hi_raw in torch.stack((low, high), dim=1).tolist():
        if not (math.isfinite(lo_raw) and math.isfinite(hi_raw)):
            raise CamCheckError(
                "the map contains NaN or infinite values (activations or gradients overflowed); run the model in "
                "float32 or check it for numerical problems"
            )
        lo, hi = max(lo_raw, 0.0), max(hi_raw, 0.0)
        empty.append(hi <= 0 or hi - lo <= EMPTY_RELATIVE * max(hi_raw, -lo_raw))
    lo = low.clamp_min(0)
    spread = high.clamp_min(0) - lo
    if any(empty):  # dividing by infinity gives the empty maps exact zeros
        spread = spread.masked_fill(torch.tensor(empty, device=spread.device), math.inf)
    norm = (torch.relu(raw) - lo[:, None, None]) / spread[:, None, None]
    return norm, empty


def _to_image(maps: torch.Tensor, geometries: list[Geometry], jobs: list[tuple[int, Target]]) -> list[np.ndarray]:
    """Each job's map in its image's pixels; the maps of images with the same geometry (a batch tensor, or
    pictures of one size through one preprocessing) are resampled together."""
    rows_of: dict[Geometry, list[int]] = {}
    for j, (i, _) in enumerate(jobs):
        rows_of.setdefault(geometries[i], []).append(j)
    out: list[np.ndarray] = [np.empty(0)] * len(jobs)
    for geometry, rows in rows_of.items():
        picked = maps if len(rows) == len(jobs) else maps[rows]
        img = geometry.to_image(picked.float()).clamp_(0.0, 1.0).cpu().numpy().astype(np.float32, copy=False)
        for r, j in enumerate(rows):
            out[j] = img[r]
    return out


def _tops(logits: torch.Tensor | None, categories: Sequence[str] | None, k: int = 5
          ) -> tuple[list[list[tuple[int, str | None, float]]], torch.Tensor | None]:
    """Each image's top-k (class, label, probability) and the (N, classes) probabilities, in one pass over the
    batch; a single logit stands for two classes (sigmoid)."""
    if logits is None:
        return [], None
    rows = logits.float()
    if rows.shape[1] == 1:
        p1 = torch.sigmoid(rows[:, 0])
        probs = torch.stack([1 - p1, p1], dim=1)
    else:
        probs = torch.softmax(rows, dim=1)
    values, idx = probs.topk(min(k, probs.shape[1]), dim=1)
    tops = [[(c, label_of(c, categories), v) for v, c in zip(vs, cs)] for vs, cs in zip(values.tolist(), idx.tolist())]
    return tops, probs


def _preprocessing_note(explicit: bool, info: ModelInfo | None, preprocess: Any, batch: Batch) -> str:
    if explicit:
        return f"given: {describe_preprocess(preprocess)}"
    if all(p is None for p in batch.pictures):
        return "none: the tensor is fed as it is"
    if preprocess is None:
        return "ToTensor only: no preprocessing is known for this model"
    return (info.preprocess_note if info is not None and info.preprocess_note
            else f"the model's own ({info.name if info is not None and info.name else 'attached'}): "
                 f"{describe_preprocess(preprocess)}")


ImageLike = Image.Image | np.ndarray | str | Path


@overload
def compute_cam(model: nn.Module, image: ImageLike, target: int | str | Callable[[Any], Any] | None = None, *,
                method: str = ..., layer: str | nn.Module | None = ..., preprocess: Callable | None = ...,
                device: str | torch.device | None = ..., categories: Sequence[str] | None = ...,
                output: Pick = ...) -> CamResult: ...


@overload
def compute_cam(model: nn.Module, image: ImageLike, target: Sequence[Target], *, method: str = ...,
                layer: str | nn.Module | None = ..., preprocess: Callable | None = ...,
                device: str | torch.device | None = ..., categories: Sequence[str] | None = ...,
                output: Pick = ...) -> list[CamResult]: ...


@overload
def compute_cam(model: nn.Module, image: Sequence[ImageLike | torch.Tensor], target: Target | Sequence[Target] = None,
                *, method: str = ..., layer: str | nn.Module | None = ..., preprocess: Callable | None = ...,
                device: str | torch.device | None = ..., categories: Sequence[str] | None = ...,
                output: Pick = ...) -> list[CamResult]: ...


@overload
def compute_cam(model: nn.Module, image: torch.Tensor, target: Target | Sequence[Target] = None, *,
                method: str = ..., layer: str | nn.Module | None = ..., preprocess: Callable | None = ...,
                device: str | torch.device | None = ..., categories: Sequence[str] | None = ...,
                output: Pick = ...) -> CamResult | list[CamResult]: ...


def compute_cam(
    model: nn.Module,
    image: Any,
    target: Target | Sequence[Target] = None,
    *,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    preprocess: Callable | None = None,
    device: str | torch.device | None = None,
    categories: Sequence[str] | None = None,
    output: Pick = None,
) -> CamResult | list[CamResult]:
    """Explain ``target`` for ``image`` with a class activation map in the image's own pixels.

    ``image``: a PIL image, an HxWx3 uint8 array, a path, or a preprocessed (C, H, W) tensor; a list of them
    or an (N, C, H, W) tensor gives a list of results from one batched pass, also for N = 1 (a Hugging Face
    processor's ``pixel_values`` of shape (1, 3, H, W) gives a list of one result: take ``[0]``, or pass
    ``pixel_values[0]``). ``target``: class index, class
    name, ``None`` (top-1) or a callable on one image's model output returning a scalar; one image with a list
    of targets gives one result per target from one forward pass. ``preprocess``: torchvision transforms,
    timm's eval transforms or a Hugging Face image processor (undone exactly for the heatmap), or ``None`` (what
    is known for the model: a served model's, a timm model's data config; else ToTensor only).
    ``method``: "cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam",
    "ablationcam". ``layer``: ``None`` (auto), a dotted name or a module. ``device``: must be the model's
    device if given (the model is never moved). ``categories``: class names, one per output (a name matches
    exactly first, then case-insensitively when that is unique). ``output``: which part of a tuple/list/dict
    model output holds the logits (an index, a key or a callable on the output); needed when several tensors
    could be the logits. The model is left exactly as it was: training flags, parameters, ``requires_grad``,
    ``.grad``, buffers and hooks. Calls on one model from several threads are serialised by a per-model lock
    (:func:`~pytest_camcheck.engine.capture.model_lock`), so their maps equal the single-threaded ones.
    DataParallel, DistributedDataParallel and ``torch.compile`` models are explained through the module they
    wrap; TorchScript models are refused.

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(num_classes=10)
        >>> r = compute_cam(net, torch.rand(3, 64, 64), target=3)
        >>> r.heatmap.shape, r.layer, r.method
        ((64, 64), 'layer4', 'gradcam')
    """
    if not isinstance(model, nn.Module):
        raise CamCheckError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    layer = unwrap_layer(model, layer)
    model = unwrap_model(model)
    spec = get_method(method)
    model_device = device_of(model)
    if model_device.type == "meta":
        raise CamCheckError(
            "the model's parameters are on the meta device (built under torch.device('meta') or with empty "
            "weights): they have shapes but no values, so there is nothing to explain. Fix: materialise and load "
            "them first, e.g. model.to_empty(device='cpu') then model.load_state_dict(...)"
        )
    if device is not None:
        try:
            wanted = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise CamCheckError(f"device {device!r} is not a valid torch device: {err}") from err
        if not _same_device(wanted, model_device):
            raise CamCheckError(
                f"device={str(device)!r} was asked but the model is on {model_device}; pytest-camcheck never moves "
                f"your model. Fix: model.to({str(device)!r}) before the call, or leave device=None"
            )
    info = model_info(model)
    if categories is None and info is not None:
        categories = info.categories
    categories = check_categories(categories)
    explicit = preprocess is not None
    if preprocess is None and info is not None:
        preprocess = info.preprocess
    batch = prepare(image, preprocess, explicit_preprocess=explicit, device=model_device, dtype=dtype_of(model))
    check_input_size(model, tuple(batch.x.shape[-2:]))
    jobs = _jobs(target, batch)

    with model_lock(model), evaluation_mode(model):
        if layer is None:
            with torch.inference_mode(False):
                layer = auto_layer(model, batch.x.clone())
        layer_name, module = resolve_layer(model, layer)
        run = _Run(model, batch, layer_name, module, categories, output)
        if spec.needs == "gradients":
            (acts, grads), scorers, scores = _gradient_evidence(run, jobs)
            raw = spec.build(acts.float(), grads.float())
        else:
            all_acts, scorers, scores = _inference_forward(run, jobs)
            acts = all_acts[[i for i, _ in jobs]].float()
            if spec.needs == "head":
                evidence: Any = _head_rows(run, all_acts.float(), scorers, jobs)
            elif spec.needs == "masked_inputs":
                evidence = _masked_input_scores(run, all_acts, scorers, jobs)
            elif spec.needs == "ablated_activations":
                evidence = _ablated_scores(run, all_acts, scorers, jobs, scores)
            else:
                evidence = None
            raw = spec.build(acts, evidence)
    norm, empty = _normalise(raw.detach())
    heatmaps = _to_image(norm, batch.geometries, jobs)
    raw_np = raw.detach().float().cpu().numpy()
    tops, probs = _tops(run.logits, categories)
    chosen: list[float | None] = [None] * len(jobs)
    asked = [j for j, s in enumerate(scorers) if s.index >= 0]
    if probs is not None and asked:
        values = probs[[jobs[j][0] for j in asked], [scorers[j].index for j in asked]].tolist()
        for j, v in zip(asked, values):
            chosen[j] = v
    note = _preprocessing_note(explicit, info, preprocess, batch)
    results = []
    for j, (i, _) in enumerate(jobs):
        index = scorers[j].index
        results.append(CamResult(
            heatmap=heatmaps[j],
            raw=raw_np[j],
            target=index,
            label=label_of(index, categories) if index >= 0 else None,
            score=scores[j],
            probability=chosen[j],
            layer=layer_name,
            method=spec.name,
            empty=bool(empty[j]),
            image_size=batch.geometries[i].image_size,
            top=tops[i] if tops else [],
            image=batch.pictures[i],
            orientation=batch.orientations[i] if batch.orientations else 1,
            preprocessing=note,
        ))
    if not batch.batched and len(results) == 1 and not isinstance(target, (list, tuple)):
        return results[0]
    return results
