"""What each kind of method needs beyond the layer's activations, gathered after the forward pass.

``EVIDENCE`` maps the ``needs`` of a :class:`~.methods.Method` to one entry: whether the forward pass must record
autograd from the layer on, and the function that gathers the evidence from the :class:`~.forward.Captured`
pass. A method that needs a new kind of evidence is one function and one entry here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LayerError, MethodError, TargetError
from .capture import capture_layer, raised_by_model, run_model as _forward
from .forward import Captured, Run, check_runs_once
from .methods import float_noise
from .targets import images_of, score_matrix

CHUNK = 32
ROUNDS_PER_BACKWARD = 16
ABLATION_BYTES = 64 * 2**20


@dataclass(frozen=True)
class EvidenceKind:
    """One kind of evidence: its name (a method's ``needs``), whether the forward pass records autograd, and
    the function that gathers it."""

    name: str
    gradients: bool
    gather: Callable[[Run, Captured], Any]


def layer_gradients(run: Run, seen: Captured) -> torch.Tensor:
    """d score_j / d grid[image of j] for every job, shape (jobs, C, H, W), float32."""
    with torch.inference_mode(False):
        grad = _job_gradients(seen.scores, seen.raw, images_of(run.jobs), run.layer_name)
    grid = seen.layout.grid(grad).float()
    if seen.layout.prefix and not bool(grid.abs().amax() > 0) and bool(grad.abs().amax() > 0):
        raise _prefix_only(run, seen)
    return grid


def _prefix_only(run: Run, seen: Captured) -> LayerError:
    return LayerError(
        f"the score depends on layer {run.layer_name!r} only through its {seen.layout.prefix} prefix "
        f"token(s) (CLS, distillation or register tokens): its {seen.layout} patch tokens do not reach the "
        "output, so their map would be empty. Fix: choose an earlier layer, e.g. the input of the last "
        "block's attention ('blocks.11.norm1' in timm), or layer=None"
    )


def _no_gradient(layer_name: str) -> LayerError:
    return LayerError(f"the score does not depend on layer {layer_name!r}; choose a layer on the path to the output")


def _rounds(images: list[int]) -> list[int]:
    """For each job, how many earlier jobs are on the same image: jobs of one round share one backward."""
    rounds: list[int] = []
    seen: dict[int, int] = {}
    for i in images:
        rounds.append(seen.get(i, 0))
        seen[i] = rounds[-1] + 1
    return rounds


def _job_gradients(scores: torch.Tensor, acts: torch.Tensor, images: list[int], layer_name: str) -> torch.Tensor:
    """d score_j / d acts[images[j]] for every job, shape (jobs, *acts.shape[1:]).

    Jobs on different images share one backward (their scores are summed: each image's activations only reach
    its own score). Several targets on one image need one backward each; they run as one batched backward
    (``is_grads_batched``), which reads the head's weights once instead of once per target, and fall back to one
    backward per round when an operator of the model has no batching rule.
    """
    rounds = _rounds(images)
    n_rounds = max(rounds) + 1
    if n_rounds == 1:  # one target per image: a single plain backward
        (grad,) = torch.autograd.grad(scores, acts, grad_outputs=torch.ones_like(scores), allow_unused=True)
        if grad is None:
            raise _no_gradient(layer_name)
        return grad if images == list(range(acts.shape[0])) else grad[images]
    select = torch.zeros((n_rounds, len(images)), device=scores.device, dtype=scores.dtype)
    select[rounds, list(range(len(images)))] = 1
    parts = [_batched_backward(scores, acts, select[start:start + ROUNDS_PER_BACKWARD], layer_name)
             for start in range(0, n_rounds, ROUNDS_PER_BACKWARD)]
    per_round = torch.cat(parts) if len(parts) > 1 else parts[0]
    return per_round[rounds, images]


def _batched_backward(scores: torch.Tensor, acts: torch.Tensor, block: torch.Tensor, layer_name: str) -> torch.Tensor:
    """The gradients for each row of ``block`` (rounds x jobs): one batched backward, or one per row when an
    operator of the model has no batching rule."""
    if len(block) > 1:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no batching rule, falling back to a loop" warnings
                (grad,) = torch.autograd.grad(scores, acts, grad_outputs=block, retain_graph=True,
                                              allow_unused=True, is_grads_batched=True)
            if grad is not None:
                return grad
        except RuntimeError:
            pass
    rows = []
    for row in block:
        (one,) = torch.autograd.grad(scores, acts, grad_outputs=row, retain_graph=True, allow_unused=True)
        if one is None:
            raise _no_gradient(layer_name)
        rows.append(one)
    return torch.stack(rows)


def last_linear(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` of ``module.modules()`` order, searched from the end: a head sits at the end, so
    this usually looks at a few modules instead of all of them."""
    for child in reversed(list(module.children())):
        found = last_linear(child)
        if found is not None:
            return found
    return module if isinstance(module, nn.Linear) else None


def head_rows(run: Run, seen: Captured) -> torch.Tensor:
    """The final Linear's weight rows for the jobs' classes, (jobs, C), checked to be what makes the logits."""
    acts = seen.grid.float()
    head = last_linear(run.model)
    refuse = (
        f"method 'cam' needs a head that is global average pooling followed by one Linear layer right after layer "
        f"{run.layer_name!r}; {{why}}. Fix: use method='gradcam' (equal to CAM on such heads, and works on any head)"
    )
    if seen.logits is None or any(s.fn is not None for s in seen.scorers):
        raise MethodError(refuse.format(why="it explains class logits only, not a callable target"))
    if head is None:
        raise MethodError(refuse.format(why="the model has no Linear layer"))
    if head.in_features != acts.shape[1] or head.out_features != seen.logits.shape[1]:
        raise MethodError(refuse.format(
            why=f"the last Linear maps {head.in_features} -> {head.out_features} features, but the layer has "
                f"{acts.shape[1]} channels and the model {seen.logits.shape[1]} outputs"))
    # CAM of class c is faithful exactly when logit c = w_c . mean(A) + b_c, so the rows explained are checked
    # (reading only their weights, not the whole head).
    binary = head.weight.shape[0] == 1
    index = [0 if binary else s.index for s in seen.scorers]
    images = images_of(run.jobs)
    rows = head.weight.detach()[index].to(acts.dtype)
    predicted = (acts.mean(dim=(2, 3))[images] * rows).sum(dim=1)
    if head.bias is not None:
        predicted = predicted + head.bias.detach()[index].to(acts.dtype)
    scale = seen.logits.abs().max().clamp_min(1e-6)
    if not torch.allclose(predicted, seen.logits[images, index].to(acts.dtype), rtol=1e-3,
                          atol=1e-3 * float(scale)):
        raise MethodError(refuse.format(
            why="the model's logits are not the Linear layer applied to the spatial mean of this layer's output "
                "(something else sits between them)"))
    if binary:
        sign = torch.tensor([1.0 if s.index == 1 else -1.0 for s in seen.scorers], dtype=acts.dtype,
                            device=acts.device)
        rows = rows * sign[:, None]
    return rows


def _rows_by_image(run: Run) -> list[tuple[int, list[int]]]:
    """(image index, the jobs on it), one entry per image that has jobs."""
    images = images_of(run.jobs)
    return [(i, [j for j, k in enumerate(images) if k == i]) for i in sorted(set(images))]


def masked_input_scores(run: Run, seen: Captured) -> torch.Tensor:
    """Score-CAM: the score of the input masked by each upsampled grid channel, (jobs, C)."""
    acts, x = seen.grid, run.batch.x
    out = torch.empty((len(run.jobs), acts.shape[1]), device=acts.device, dtype=torch.float32)
    with torch.inference_mode():
        for image_index, rows in _rows_by_image(run):
            scorers = [seen.scorers[j] for j in rows]
            up = F.interpolate(acts[image_index:image_index + 1].float(), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)[0]
            lo = up.amin(dim=(1, 2), keepdim=True)
            hi = up.amax(dim=(1, 2), keepdim=True)
            masks = (up - lo) / (hi - lo + 1e-8)
            live = torch.nonzero((hi - lo).flatten() > 0).flatten()
            base_input = x[image_index:image_index + 1]
            layout = _fast_layout(run, seen, base_input, image_index) if len(live) > 1 else torch.contiguous_format
            scores = torch.empty((len(rows), acts.shape[1]), device=acts.device, dtype=torch.float32)
            if len(live) < acts.shape[1]:
                scores[:] = score_matrix(scorers, _forward(run.model, torch.zeros_like(base_input)), 1,
                                         run.reader)
            for start in range(0, len(live), CHUNK):
                channels = live[start:start + CHUNK]
                masked = (base_input * masks[channels, None].to(x.dtype)).contiguous(memory_format=layout)
                scores[:, channels] = score_matrix(scorers, _forward(run.model, masked), len(channels), run.reader)
            out[rows] = scores
    return out


def _fast_layout(run: Run, seen: Captured, base_input: torch.Tensor, image_index: int) -> torch.memory_format:
    """The memory layout for the many masked forwards of Score-CAM: channels-last, which convolutions run up to
    about twice as fast on the CPU, when the model gives the same logits for this image in that layout (checked
    once); otherwise the usual contiguous layout. Models whose code assumes contiguous tensors (``.view`` after
    a convolution, custom kernels) fail or disagree here and keep the contiguous layout."""
    if seen.logits is None or base_input.dim() != 4:
        return torch.contiguous_format
    reference = seen.logits[image_index].float()
    try:
        logits = run.reader.find(run.model(base_input.contiguous(memory_format=torch.channels_last)))
    except Exception:
        return torch.contiguous_format
    if not isinstance(logits, torch.Tensor) or logits.shape[-1] != reference.shape[-1] or logits.dim() != 2:
        return torch.contiguous_format
    tolerance = 1e-3 * float(reference.abs().max().clamp_min(1.0))
    if torch.allclose(logits[0].float(), reference, rtol=1e-3, atol=tolerance):
        return torch.channels_last
    return torch.contiguous_format


def ablated_scores(run: Run, seen: Captured) -> tuple[torch.Tensor, torch.Tensor]:
    """Ablation-CAM: (score of each job (jobs,), its score with each grid channel zeroed (jobs, C)). A zeroed
    channel's score within rounding noise of the job's (:func:`~.methods.float_noise`, at the scale of the
    image's largest logit, in float32 units) is the job's score: the rerun's rounding is no evidence.
    A layer whose ablation changes no score while its prefix tokens reach it is refused, as Grad-CAM refuses
    it."""
    acts, x = seen.grid, run.batch.x
    k = acts.shape[1]
    base = seen.scores.detach().float()
    out = torch.empty((len(run.jobs), k), device=acts.device, dtype=torch.float32)
    with torch.inference_mode():
        for image_index, rows in _rows_by_image(run):
            scorers = [seen.scorers[j] for j in rows]
            live = torch.nonzero(acts[image_index].flatten(1).abs().amax(dim=1) > 0).flatten()
            scores = base[rows][:, None].repeat(1, k)
            one = seen.raw.detach()[image_index:image_index + 1]
            # Each batch of ablated copies reruns the layers up to the target layer once (on one image), so the
            # batches are as large as ABLATION_BYTES allows rather than CHUNK.
            chunk = max(CHUNK, ABLATION_BYTES // max(1, one.numel() * one.element_size()))
            for start in range(0, len(live), chunk):
                channels = live[start:start + chunk]
                ablated = seen.layout.zero_channels(one, channels)
                output = _suffix_forward(run, x[image_index:image_index + 1], ablated)
                scores[:, channels] = score_matrix(scorers, output, len(channels), run.reader)
            out[rows] = scores
        scale = base.abs()
        if seen.logits is not None:
            scale = torch.maximum(scale, seen.logits.detach().float().abs().amax(dim=1)[images_of(run.jobs)])
        noise = float_noise(base[:, None] - out, scale[:, None])
        out = torch.where(noise, base[:, None], out)
        if seen.layout.prefix and bool(noise.all()) and _prefix_reaches(run, seen, base, scale):
            raise _prefix_only(run, seen)
    return base, out


def _prefix_reaches(run: Run, seen: Captured, base: torch.Tensor, scale: torch.Tensor) -> bool:
    """Whether zeroing the prefix tokens of the layer's output changes a job's score beyond rounding noise."""
    for image_index, rows in _rows_by_image(run):
        cleared = seen.raw.detach()[image_index:image_index + 1].clone()
        cleared[:, :seen.layout.prefix] = 0
        output = _suffix_forward(run, run.batch.x[image_index:image_index + 1], cleared)
        scores = score_matrix([seen.scorers[j] for j in rows], output, 1, run.reader)[:, 0]
        if not bool(float_noise(base[rows] - scores, scale[rows]).all()):
            return True
    return False


def _suffix_forward(run: Run, x1: torch.Tensor, activations: torch.Tensor) -> Any:
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
    check_runs_once(run.layer_name, cap.calls)
    return output


def _batch_size(run: Run, output: Any) -> int:
    try:
        logits = run.reader.find(output)
    except TargetError:  # several tensors could be the logits
        logits = None
    if logits is not None:
        return int(logits.shape[0])
    return len(output) if isinstance(output, (list, tuple)) else -1


EVIDENCE: dict[str, EvidenceKind] = {
    kind.name: kind
    for kind in (
        EvidenceKind("gradients", True, layer_gradients),
        EvidenceKind("activations", False, lambda run, seen: None),
        EvidenceKind("head", False, head_rows),
        EvidenceKind("masked_inputs", False, masked_input_scores),
        EvidenceKind("ablated_activations", False, ablated_scores),
    )
}
