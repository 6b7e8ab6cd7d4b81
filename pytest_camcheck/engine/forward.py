"""The forward stage of ``compute_cam``: one pass of the model with the chosen layer captured, its output laid
out as the (N, C, H, W) grid, and the score of every job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import LayerError
from .capture import Capture, capture_layer, probe_flow, run_model
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


def check_runs_once(layer_name: str, calls: int) -> None:
    """Refuse a layer the forward pass runs more than once (a test-time-augmentation wrapper calling the network
    on two views, a module shared by two branches): its captured output would be its last call's only, and
    ablating it would change every call.

    Example:
        >>> check_runs_once("layer4", 1)
        >>> check_runs_once("net.layer4", 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pytest_camcheck.errors.LayerError: layer 'net.layer4' runs 2 times in one forward pass ...
    """
    if calls > 1:
        raise LayerError(
            f"layer {layer_name!r} runs {calls} times in one forward pass (a wrapper calling the network on "
            "several views, or a module shared by several branches), so its map would be its last call's only. "
            "Fix: pass layer= naming a module that runs once per forward, or explain the inner network on each "
            "view (compute_cam(wrapper.net, ...))"
        )


def _layer_output(run: Run, cap: Capture) -> torch.Tensor:
    if cap.activations is None:
        raise LayerError(
            f"layer {run.layer_name!r} did not run (or returned no tensor) during the forward pass; choose a "
            "module the model calls in forward(), e.g. the last convolutional stage"
        )
    check_runs_once(run.layer_name, cap.calls)
    return cap.activations


def forward_with_capture(run: Run, *, gradients: bool) -> Captured:
    """Run the model once with the layer captured and score every job. ``gradients``: autograd records the
    layers after the chosen one, so the scores can be differentiated with respect to ``raw``."""
    if not gradients:
        with torch.inference_mode(), capture_layer(run.module, track_grad=False) as cap:
            output = run_model(run.model, run.batch.x)
        return _scored(run, output, _layer_output(run, cap), differentiable=False)
    with torch.inference_mode(False):
        # the batch is already the engine's own copy; only a tensor made under the caller's inference_mode
        # needs a normal one, since autograd cannot record operations on it
        x = run.batch.x.clone() if run.batch.x.is_inference() else run.batch.x
        with capture_layer(run.module, track_grad=True) as cap:
            output = run_model(run.model, x)
        with torch.enable_grad():  # the scores are recorded too (the capture's hook switched autograd on)
            return _scored(run, output, _layer_output(run, cap), differentiable=True)


def _scored(run: Run, output: Any, raw: torch.Tensor, *, differentiable: bool) -> Captured:
    layout = decide_layout(raw, run.layer_name, model=run.model, module=run.module, images=run.batch.x.shape[0],
                           input_size=tuple(run.batch.x.shape[-2:]), reshape=run.reshape,
                           flow=lambda: probe_flow(run.model, run.batch.x[:1]))
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
