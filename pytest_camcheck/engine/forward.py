"""The forward stage of ``compute_cam``: one pass of the model with the chosen layer captured, its output laid
out as the (N, C, H, W) grid, and the score of every job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import LayerError
from .capture import capture_layer, run_model
from .inputs import Batch
from .layouts import Layout, Reshape, decide_layout
from .targets import Job, Reader, Scorer, class_logits, job_scores, make_scorers


@dataclass(frozen=True)
class Run:
    """What one compute_cam call explains: the model, its input batch, the jobs, the chosen layer, the class
    names, how logits are read from the model's output, and the caller's reshape of the layer's output (None:
    its layout is decided)."""

    model: nn.Module
    batch: Batch
    jobs: list[Job]
    layer_name: str
    module: nn.Module
    categories: Sequence[str] | None
    reader: Reader
    reshape: Reshape | None = None


@dataclass
class Captured:
    """One forward pass: the model output, the layer's output as captured (``raw``: a leaf requiring grad when
    gradients are recorded), its layout and grid (N, C, H, W, detached), the class logits (None for callable
    targets on an output without them), a scorer and a score per job."""

    output: Any
    raw: torch.Tensor
    layout: Layout
    grid: torch.Tensor
    logits: torch.Tensor | None
    scorers: list[Scorer]
    scores: torch.Tensor


def _layer_output(run: Run, activations: torch.Tensor | None) -> torch.Tensor:
    if activations is None:
        raise LayerError(
            f"layer {run.layer_name!r} did not run (or returned no tensor) during the forward pass; choose a "
            "module the model calls in forward(), e.g. the last convolutional stage"
        )
    return activations


def forward_with_capture(run: Run, *, gradients: bool) -> Captured:
    """Run the model once with the layer captured and score every job. ``gradients``: autograd records the
    layers after the chosen one, so the scores can be differentiated with respect to ``raw``."""
    if not gradients:
        with torch.inference_mode(), capture_layer(run.module, track_grad=False) as cap:
            output = run_model(run.model, run.batch.x)
        return _scored(run, output, _layer_output(run, cap.activations), differentiable=False)
    with torch.inference_mode(False):
        # the batch is already the engine's own copy; only a tensor made under the caller's inference_mode
        # needs a normal one, since autograd cannot record operations on it
        x = run.batch.x.clone() if run.batch.x.is_inference() else run.batch.x
        with capture_layer(run.module, track_grad=True) as cap:
            output = run_model(run.model, x)
            return _scored(run, output, _layer_output(run, cap.activations), differentiable=True)


def _scored(run: Run, output: Any, raw: torch.Tensor, *, differentiable: bool) -> Captured:
    layout = decide_layout(raw, run.layer_name, model=run.model, module=run.module, images=run.batch.x.shape[0],
                           input_size=tuple(run.batch.x.shape[-2:]), reshape=run.reshape)
    logits = class_logits(output, run.jobs, run.reader)
    scorers = make_scorers(run.jobs, logits, run.categories)
    if differentiable:
        scores, tracked = job_scores(scorers, run.jobs, output, logits, run.reader)
        if not tracked:
            raise LayerError(
                f"the score does not depend on layer {run.layer_name!r} through autograd (the model may detach "
                "it or run under torch.no_grad()); choose a layer on the path to the output"
            )
    else:
        with torch.inference_mode():
            scores, _ = job_scores(scorers, run.jobs, output, logits, run.reader)
    return Captured(output, raw, layout, layout.grid(raw.detach()), logits, scorers, scores)
