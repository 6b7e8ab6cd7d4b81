"""``compute_cam``: model + image + target -> heatmap in the original image's pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence, overload

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import CamCheckError, LayerError
from ..geometry import Geometry, describe_preprocess
from ..integrations import check_input_size, unwrap_layer, unwrap_model
from ..zoo import ModelInfo, model_info
from .capture import evaluation_mode, model_lock
from .evidence import EVIDENCE
from .forward import Captured, Run, forward_with_capture
from .inputs import Batch, prepare
from .layouts import Reshape
from .layers import auto_layer, resolve_layer
from .methods import Method, get_method
from .targets import Job, Pick, Reader, Target, check_categories, images_of, label_of, make_jobs

EMPTY_RELATIVE = 1e-5


@dataclass
class CamResult:
    """One map: ``heatmap`` (float32, original image H x W, in [0, 1]), ``raw`` (the low-resolution map before
    ReLU and normalisation), the target explained and how the map was made: ``layer``, ``method``, ``layout``
    (how the layer's output was read as a grid: "NCHW", "NHWC", "tokens (1 prefix + 14x14)" or "reshape"),
    and ``preprocessing`` (which
    preprocessing made the input: the one given, the model's own such as a timm data config, or none).
    ``orientation`` is the EXIF
    orientation applied to the picture (1: none, 6: a phone photo turned upright): the map and ``image_size`` are
    in the pixels people see. ``geometry`` maps the model input to those pixels; ``geometry.seen()`` is the part
    of the image the model saw (a centre crop leaves the borders out, and the map is 0 there).

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
    layout: str = "NCHW"
    geometry: Geometry | None = field(default=None, repr=False)

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


def _to_image(maps: torch.Tensor, geometries: list[Geometry], jobs: list[Job]) -> list[np.ndarray]:
    """Each job's map in its image's pixels; the maps of images with the same geometry (a batch tensor, or
    pictures of one size through one preprocessing) are resampled together."""
    rows_of: dict[Geometry, list[int]] = {}
    for j, job in enumerate(jobs):
        rows_of.setdefault(geometries[job.image], []).append(j)
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
                output: Pick = ..., reshape: Reshape | None = ...) -> CamResult: ...


@overload
def compute_cam(model: nn.Module, image: ImageLike, target: Sequence[Target], *, method: str = ...,
                layer: str | nn.Module | None = ..., preprocess: Callable | None = ...,
                device: str | torch.device | None = ..., categories: Sequence[str] | None = ...,
                output: Pick = ..., reshape: Reshape | None = ...) -> list[CamResult]: ...


@overload
def compute_cam(model: nn.Module, image: Sequence[ImageLike | torch.Tensor], target: Target | Sequence[Target] = None,
                *, method: str = ..., layer: str | nn.Module | None = ..., preprocess: Callable | None = ...,
                device: str | torch.device | None = ..., categories: Sequence[str] | None = ...,
                output: Pick = ..., reshape: Reshape | None = ...) -> list[CamResult]: ...


@overload
def compute_cam(model: nn.Module, image: torch.Tensor, target: Target | Sequence[Target] = None, *,
                method: str = ..., layer: str | nn.Module | None = ..., preprocess: Callable | None = ...,
                device: str | torch.device | None = ..., categories: Sequence[str] | None = ...,
                output: Pick = ..., reshape: Reshape | None = ...) -> CamResult | list[CamResult]: ...


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
    reshape: Reshape | None = None,
) -> CamResult | list[CamResult]:
    """Explain ``target`` for ``image`` with a class activation map in the image's own pixels.

    ``image``: a PIL image, an HxWx3 uint8 array, a path, or a preprocessed (C, H, W) tensor; a list of them
    or an (N, C, H, W) tensor gives a list of results from one batched pass, also for N = 1 (a Hugging Face
    processor's ``pixel_values`` of shape (1, 3, H, W) gives a list of one result: take ``[0]``, or pass
    ``pixel_values[0]``). ``target``: class index, class name, ``None`` (top-1) or a callable on one image's
    model output returning a scalar; one image with a list of targets gives one result per target from one
    forward pass. ``preprocess``: torchvision transforms, timm's eval transforms or a Hugging Face image
    processor (undone exactly for the heatmap), or ``None`` (what is known for the model: a served model's, a
    timm model's data config; else ToTensor only). ``method``: "cam", "gradcam", "gradcam++", "xgradcam",
    "hirescam", "layercam", "scorecam", "eigencam", "ablationcam". ``layer``: ``None`` (auto: the last
    convolutional or token stage the score depends on; for a CLS-pooled ViT the input of the last block's
    attention), a dotted name or a module. Its output's layout (NCHW, NHWC, or tokens with CLS / distillation
    / register prefix tokens) is read from the model and the shape, and refused when it cannot be told;
    ``reshape``: a callable that rearranges the layer's output (N, ...) into (N, C, H, W) for an unusual
    layout (applied to the activations and their gradients alike). ``device``: must be the model's device if
    given (the model is never moved). ``categories``: class names, one per output (a name matches exactly
    first, then case-insensitively when that is unique). ``output``: which part of a tuple/list/dict model
    output holds the logits (an index, a key or a callable on the output); needed when several tensors could
    be the logits. The model is left exactly as it was: training flags, parameters, ``requires_grad``,
    ``.grad``, buffers and hooks; calls on one model from several threads run one after the other
    (:func:`~pytest_camcheck.engine.capture.model_lock`). DataParallel, DDP and ``torch.compile`` models are
    explained through the module they wrap; TorchScript models are refused.

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(num_classes=10)
        >>> r = compute_cam(net, torch.rand(3, 64, 64), target=3)
        >>> r.heatmap.shape, r.layer, r.method
        ((64, 64), 'layer4', 'gradcam')
    """
    model, layer = _unwrapped(model, layer)
    spec = get_method(method)
    batch, jobs, categories, note = _inputs(model, image, target, preprocess, device, categories)
    results = _explain(model, batch, jobs, categories, note, spec, layer, output, reshape)
    if not batch.batched and len(results) == 1 and not isinstance(target, (list, tuple)):
        return results[0]
    return results


def cam_of_copies(model: nn.Module, image: Any, target: Target | Sequence[Target] = None, *,
                  method: str = "gradcam", layer: str | nn.Module | None = None, preprocess: Callable | None = None,
                  device: str | torch.device | None = None, categories: Sequence[str] | None = None,
                  output: Pick = None, reshape: Reshape | None = None
                  ) -> Callable[[nn.Module], CamResult | list[CamResult]]:
    """``compute_cam(m, image, target, ...)`` as a function of the model ``m``, for ``model`` and copies of it
    (same class, device, dtype and attached model info, e.g. the randomised deep copies of the sanity check): the
    image is checked and preprocessed once, here, for ``model``. Each call explains its own copy of that input
    (a model that writes to its input cannot change the next call's) and gives what ``compute_cam`` gives.

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(num_classes=10)
        >>> explain = cam_of_copies(net, torch.rand(3, 64, 64), 3)
        >>> explain(net).heatmap.shape
        (64, 64)
    """
    unwrapped = _unwrapped(model, layer)[0]
    spec = get_method(method)
    batch, jobs, categories, note = _inputs(unwrapped, image, target, preprocess, device, categories)
    single = not batch.batched and len(jobs) == 1 and not isinstance(target, (list, tuple))

    def explain(copy: nn.Module) -> CamResult | list[CamResult]:
        copy, copy_layer = _unwrapped(copy, layer)
        if not _same_device(device_of(copy), batch.x.device) or dtype_of(copy) != batch.x.dtype:
            raise CamCheckError(f"the copy is on {device_of(copy)} in {dtype_of(copy)}, the prepared input on "
                                f"{batch.x.device} in {batch.x.dtype}; explain copies of the model's device and dtype")
        results = _explain(copy, replace(batch, x=batch.x.clone()), jobs, categories, note, spec, copy_layer, output,
                           reshape)
        return results[0] if single else results

    return explain


def _explain(model: nn.Module, batch: Batch, jobs: list[Job], categories: Sequence[str] | None, note: str,
             spec: Method, layer: str | nn.Module | None, output: Pick, reshape: Reshape | None) -> list[CamResult]:
    """The stages after the inputs, on the unwrapped model: the layer, the forward pass with the layer captured
    (and the backward pass a method needs), the map, the heatmap in the image's pixels, the results. The model
    is locked and in eval mode from the layer's choice to the map; the capture's hooks are gone when it returns."""
    reader = Reader(output, len(categories) if categories else None)
    with model_lock(model) as held, evaluation_mode(model, held.modules):
        run = _run(model, batch, jobs, layer, categories, reader, reshape)
        kind = EVIDENCE[spec.needs]
        seen = forward_with_capture(run, gradients=kind.gradients)
        evidence = kind.gather(run, seen)
        raw = _build_map(spec, seen, jobs, evidence)
    norm, empty = _normalise(raw.detach())
    heatmaps = _to_image(norm, batch.geometries, jobs)
    return _results(run, seen, spec, raw, heatmaps, empty, note)


def _unwrapped(model: Any, layer: str | nn.Module | None) -> tuple[nn.Module, str | nn.Module | None]:
    """The module to explain (DataParallel, DDP and torch.compile wrappers removed) and the layer in it."""
    if not isinstance(model, nn.Module):
        raise CamCheckError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    return unwrap_model(model), unwrap_layer(model, layer)


def checked_device(model: nn.Module, device: Any) -> torch.device:
    """The model's device, after checking that it holds values (not the meta device) and is ``device`` when one
    is asked for: the model is never moved, so a suite run for the GPU must not explain on the CPU."""
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
    return model_device


def _inputs(model: nn.Module, image: Any, target: Any, preprocess: Callable | None, device: Any,
            categories: Sequence[str] | None) -> tuple[Batch, list[Job], Sequence[str] | None, str]:
    """The inputs stage: the checked model device, the input batch with its geometries, the jobs, the class
    names (given, else what is known for the model) and which preprocessing made the input."""
    model_device = checked_device(model, device)
    info = model_info(model)
    if categories is None and info is not None:
        categories = info.categories
    categories = check_categories(categories)
    explicit = preprocess is not None
    if preprocess is None and info is not None:
        preprocess = info.preprocess
    batch = prepare(image, preprocess, explicit_preprocess=explicit, device=model_device, dtype=dtype_of(model))
    check_input_size(model, tuple(batch.x.shape[-2:]))
    return batch, make_jobs(target, batch), categories, _preprocessing_note(explicit, info, preprocess, batch)


def _run(model: nn.Module, batch: Batch, jobs: list[Job], layer: str | nn.Module | None,
         categories: Sequence[str] | None, reader: Reader, reshape: Reshape | None) -> Run:
    """The chosen layer (``None``: the automatic one for this input size) and what the call explains."""
    if layer is None:
        with torch.inference_mode(False):
            layer = auto_layer(model, batch.x.clone(), reader)
    layer_name, module = resolve_layer(model, layer)
    if reshape is not None and not callable(reshape):
        raise LayerError(f"reshape must be a callable (layer output -> (N, C, H, W)) or None, not "
                         f"{type(reshape).__name__}")
    return Run(model, batch, jobs, layer_name, module, categories, reader, reshape)


def _build_map(spec: Method, seen: Captured, jobs: list[Job], evidence: Any) -> torch.Tensor:
    """The map stage: each job's map before ReLU and normalisation, (jobs, H, W) on the layer's grid."""
    images = images_of(jobs)
    acts = seen.grid if images == list(range(seen.grid.shape[0])) else seen.grid[images]
    return spec.build(acts.float(), evidence)


def _results(run: Run, seen: Captured, spec: Method, raw: torch.Tensor, heatmaps: list[np.ndarray],
             empty: list[bool], note: str) -> list[CamResult]:
    """The result stage: one CamResult per job, with its class, label, score, probability and top-5."""
    jobs, categories, batch = run.jobs, run.categories, run.batch
    raw_np = raw.detach().float().cpu().numpy()
    scores = seen.scores.detach().tolist()
    tops, probs = _tops(seen.logits, categories)
    chosen: list[float | None] = [None] * len(jobs)
    asked = [j for j, s in enumerate(seen.scorers) if s.index >= 0]
    if probs is not None and asked:
        values = probs[[jobs[j].image for j in asked], [seen.scorers[j].index for j in asked]].tolist()
        for j, v in zip(asked, values):
            chosen[j] = v
    results = []
    for j, job in enumerate(jobs):
        index = seen.scorers[j].index
        results.append(CamResult(
            heatmap=heatmaps[j],
            raw=raw_np[j],
            target=index,
            label=label_of(index, categories) if index >= 0 else None,
            score=scores[j],
            probability=chosen[j],
            layer=run.layer_name,
            method=spec.name,
            empty=bool(empty[j]),
            image_size=batch.geometries[job.image].image_size,
            top=tops[job.image] if tops else [],
            image=batch.pictures[job.image],
            orientation=batch.orientations[job.image] if batch.orientations else 1,
            preprocessing=note,
            layout=str(seen.layout),
            geometry=batch.geometries[job.image],
        ))
    return results
