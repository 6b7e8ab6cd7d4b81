"""Explanation quality: is the map itself trustworthy?

Three checks, each a measurement (:func:`sanity`, :func:`faithfulness`, :func:`stability`, which return their
result whatever it says) and an assertion on it (:func:`assert_sane`, :func:`assert_faithful`,
:func:`assert_stable`, which record the check and raise ``AssertionError`` with the curve and a picture when it
does not hold):

- **sanity** (Adebayo et al. 2018, cascading model-parameter randomisation): on a deep copy of the model, the
  parameters are re-initialised group by group from the output down (the groups are the model's top-level blocks,
  the largest split further, 5-16 steps), seeded. The map after full randomisation must differ from the original:
  Spearman rank correlation at most ``max_similarity`` (SSIM reported). A randomised BatchNorm gets its
  freshly-initialised state (running mean 0, variance 1, weight 1, bias 0) and a randomised LayerNorm weight 1 and
  bias 0, as in a new network, so no step divides by statistics of activations that no longer exist.
- **faithfulness** (deletion / insertion curves, Petsiuk et al. 2018): the image's pixels are replaced by a
  baseline ("blur", "mean" or "zero") most relevant first (deletion), or put onto the baseline most relevant first
  (insertion), in ``steps`` equal shares; the curve is the target's **softmax probability** (a single-logit head:
  its sigmoid), its area under the curve (AUC, x from 0 to 1) is compared with the mean AUC of ``orderings`` seeded
  random orderings of the same pixels. ``gain`` = random AUC - map AUC for deletion, map AUC - random AUC for
  insertion (in probability units). The check holds when ``gain >= min_gain`` and the gain is more than chance:
  more than a random ordering reaches with probability ``1 - confidence`` (the one-sided ``confidence`` prediction
  bound of one more random ordering's gain, from the spread of the ``orderings`` AUCs: Student's t with
  ``orderings - 1`` degrees of freedom). How much a random ordering's AUC varies depends on the model (a small CNN
  answers erratically to scattered replaced pixels), so a fixed ``min_gain`` alone would pass a random map on
  one model and fail a good one on another; the bound makes a random ordering pass about ``1 - confidence``
  of the time whatever the model (exactly so when its random-ordering AUCs are normal).
- **stability** (max-sensitivity, Yeh et al. 2019): maps of ``samples`` seeded perturbations drawn uniformly from
  the L-infinity ball of radius ``noise`` (pixel units in [0, 1]; for an 8-bit picture whole grey levels up to
  ``noise * 255``) must each keep SSIM >= ``min_similarity`` with the clean map, and the predicted class must not
  change (reported separately: an unstable prediction is not an unstable map). captum's max-sensitivity (largest
  relative L2 change of the map) is reported too.

Every perturbation is made in the pixels of the image handed over (a picture, or a tensor in its own units) and
passed through the same preprocessing as the map's own input, so a PIL image with torchvision transforms works.
The user's model is never changed: sanity works on a deep copy (with the original's categories and preprocessing
attached to it), the others only run it.

The defaults come from measurements on the bundled models and held-out scenes (README, "Explanation quality";
``python benchmarks/calibrate_quality.py``).
"""

from __future__ import annotations

import copy
import math
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import context
from ._ahead import one_ahead
from .engine import CamResult, compute_cam
from .engine.capture import evaluation_mode, model_lock, run_model
from .engine.core import cam_of_copies, checked_device, device_of, dtype_of
from .engine.inputs import prepare
from .engine.targets import check_categories, check_class_count, check_logits, class_count, logits_of, resolve_target
from .errors import CamCheckError, InputError, TargetError
from ._values import check_threshold
from .metrics import check_heatmap
from .integrations import adapt_preprocess
from .zoo import attach_info, model_info

__all__ = [
    "BASELINES", "DEFAULT_CONFIDENCE", "DEFAULT_MAX_SIMILARITY", "DEFAULT_MIN_GAIN", "DEFAULT_MIN_SIMILARITY",
    "DEFAULT_NOISE", "FaithfulnessResult", "METRICS", "SanityResult", "SanityStep", "StabilityResult",
    "assert_faithful", "assert_sane", "assert_stable", "blur", "cascade_groups", "faithfulness", "sanity", "stability",
]

DEFAULT_MAX_SIMILARITY = 0.7
DEFAULT_MIN_GAIN = 0.05
DEFAULT_NOISE = 0.02
DEFAULT_MIN_SIMILARITY = 0.95
DEFAULT_ORDERINGS = 4
DEFAULT_CONFIDENCE = 0.9
CONFOUND_MARGIN = 0.2  # random orderings this far below the baseline image's probability: a perturbation artefact
CONFOUND_SHARE = 0.3  # the baseline image keeps this share of the clean probability: little evidence to delete
CONFOUND_FLOOR = 0.1  # ... and at least this probability (below it the class is simply not predicted)
CONFOUND_CHANCE = 2.0  # ... and at least this many times chance (1 / classes), or chance + CONFOUND_MARGIN if lower
UNSURE = 0.1  # a clean probability below this: the model does not predict the class, little evidence to delete
BASELINES = ("blur", "mean", "zero")
METRICS = ("deletion", "insertion")
BLUR_SIGMA = 0.1  # of the image's short side
MIN_STEPS, MAX_STEPS = 5, 16
FORWARD_CHUNK = 64


# ----------------------------------------------------------------------------------------------------- inputs

def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> float:
    try:
        number = check_threshold(name, value)  # any real number type (numpy and torch scalars too), finite
    except CamCheckError:
        raise CamCheckError(f"{name}={value!r} is not a finite number; pass a number"
                            + (f" in [{low}, {high}]" if low is not None and high is not None else "")) from None
    bad = (low is not None and (number <= low if low_open else number < low)) or (high is not None and number > high)
    if bad:
        where = f"> {low}" if low_open else f">= {low}"
        where = where if high is None else f"{where} and <= {high}"
        raise CamCheckError(f"{name}={value!r} is out of range; pass a number {where}")
    return number


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise CamCheckError(f"{name}={value!r} is not valid; pass an integer >= {low}")
    return int(value)


MAX_SEED = 2**32 - 1  # each check derives its generators' seeds from it, all of which take this range


def _seed(value: Any) -> int:
    seed = _count("seed", value, 0)
    if seed > MAX_SEED:
        raise CamCheckError(f"seed={value!r} is too large; pass an integer from 0 to 2**32 - 1")
    return seed


CAM_KEYWORDS = ("method", "layer", "preprocess", "device", "categories", "output", "reshape")  # compute_cam's
MAP_KEYWORDS = ("method", "layer", "reshape")  # those only a computed map uses


def _check_call(model: Any, cam_kwargs: dict[str, Any], *, given_map: bool = False) -> None:
    """The model is a module on the device asked for (if any), and the keywords are compute_cam's; with a given
    map (``heatmap=``), none of those that only a computed map would use, since they would silently do nothing."""
    if not isinstance(model, nn.Module):
        raise CamCheckError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    unknown = sorted(set(cam_kwargs) - set(CAM_KEYWORDS))
    if unknown:
        raise CamCheckError(f"unknown keyword{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; besides its "
                            f"own, the check takes compute_cam's: {', '.join(CAM_KEYWORDS)}")
    if given_map:
        unused = [f"{k}=" for k in MAP_KEYWORDS if cam_kwargs.get(k) is not None]
        if unused:
            raise CamCheckError(f"heatmap= judges the map given, so {', '.join(unused)} would do nothing; remove it "
                                "(preprocess=, categories=, output= and device= still apply to the model's forwards)")
    checked_device(model, cam_kwargs.get("device"))


def _one_image(image: Any) -> None:
    if isinstance(image, (list, tuple)) or (isinstance(image, torch.Tensor) and image.dim() == 4):
        raise CamCheckError(
            "explanation-quality checks take one image at a time; call them once per image (a batch or a list "
            "was given)"
        )
    if not isinstance(image, (torch.Tensor,)) and callable(image):
        raise CamCheckError(f"image of type {type(image).__name__} is not an image; pass a picture or a tensor")


def _no_list_target(target: Any) -> Any:
    """The one target, a one-element tensor made 0-d (one target for the image, as compute_cam takes it alone,
    also where a check explains internal copies of the image in one batch)."""
    if isinstance(target, (list, tuple)) or (isinstance(target, torch.Tensor) and target.numel() > 1):
        raise CamCheckError("explanation-quality checks explain one target at a time; pass one class, name or None")
    if isinstance(target, torch.Tensor) and target.numel() == 1:
        return target.detach().reshape(())
    return target


def _seen_box(geometry: Any, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The rows and columns of the original pixels the model saw (``Geometry.seen_box``; a centre crop leaves
    its borders out, and every computed map is 0 there): the whole map when it saw all of it (or no geometry is
    known). The quality checks measure that rectangle as a map of its own."""
    whole = (slice(0, shape[0]), slice(0, shape[1]))
    if geometry is None:
        return whole
    if tuple(geometry.image_size) != tuple(shape):
        raise CamCheckError(f"the map has shape {tuple(shape)} but the image the model saw is "
                            f"{tuple(geometry.image_size)}; pass a map in the original image's pixels")
    box = geometry.seen_box()
    if box is None:
        return whole
    if box[0].stop == box[0].start:
        raise CamCheckError("the preprocessing leaves no pixel of the image for the model to see, so the map cannot "
                            "be judged; fix the preprocessing (its crop)")
    return box


def _seen_part(heatmap: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """The part of a map the model saw (:func:`_seen_box`), as a map of its own; the map itself when it saw all."""
    if box[0].stop - box[0].start == heatmap.shape[0] and box[1].stop - box[1].start == heatmap.shape[1]:
        return heatmap
    return np.ascontiguousarray(heatmap[box])


def _seen_words(geometry: Any, judged: str = "the maps are judged on that part only") -> str | None:
    """A message line when the model saw only part of the image (ending with how the check judged it), else
    None."""
    from .geometry import cropped_view
    from .metrics import view_span

    seen = cropped_view(geometry)
    if seen is None:
        return None
    return f"the model saw only {view_span(seen)} (the preprocessing cropped the rest): {judged}"


class _Source:
    """The image as handed over (an 8-bit RGB picture or a tensor in its own units) and how a batch of
    perturbed copies of it becomes model input: the same preprocessing as ``compute_cam`` uses."""

    def __init__(self, model: nn.Module, image: Any, cam_kwargs: dict[str, Any]) -> None:
        info = model_info(model)
        self.explicit = cam_kwargs.get("preprocess") is not None
        # a Hugging Face image processor becomes a callable image -> tensor, as compute_cam makes it
        self.preprocess = adapt_preprocess(cam_kwargs.get("preprocess") if self.explicit
                                           else (info.preprocess if info else None))
        # the class names as compute_cam takes them: given (checked the same way), else the model's own
        given = cam_kwargs.get("categories")
        self.categories = check_categories(info.categories if given is None and info else given)
        self.device, self.dtype = device_of(model), dtype_of(model)
        self.pick = cam_kwargs.get("output")
        batch = prepare(image, self.preprocess, explicit_preprocess=self.explicit, device=self.device,
                        dtype=self.dtype)
        self.clean_input = batch.x
        self.picture = batch.pictures[0]
        self.geometry = batch.geometries[0]
        self.size = self.geometry.image_size
        self.orientation = batch.orientations[0] if batch.orientations else 1  # EXIF orientation applied (1: none)
        # a picture's pixels: (H, W, 3) uint8, the layout PIL reads without a copy; a tensor's: (C, H, W) float
        self.is_picture = self.picture is not None
        if self.is_picture:
            self.pixels = torch.from_numpy(np.array(self.picture, dtype=np.uint8))
        else:
            self.pixels = image.detach().to("cpu", torch.float32).clone()
        self.classes = 0  # the number of classes of the model's output (2 for one logit), once it has run

    def masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Boolean (K, H, W) masks shaped to select pixels of a (K, ...) stack of copies."""
        return masks[..., None] if self.is_picture else masks[:, None]

    def images(self, pixels: torch.Tensor) -> Any:
        """What ``compute_cam`` takes for a stack of copies: PIL images, or a (K, C, H, W) tensor."""
        if self.is_picture:
            return [Image.fromarray(a) for a in pixels.numpy()]
        return pixels

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model input for a stack of copies, preprocessed like the clean image."""
        if self.is_picture:
            if self.preprocess is None:
                x = pixels.permute(0, 3, 1, 2).float() / 255.0
            else:
                x = torch.stack([self._preprocessed(im) for im in self.images(pixels)])
        elif self.explicit:
            x = torch.stack([self._preprocessed(t) for t in pixels])
        else:
            x = pixels
        return x.to(device=self.device, dtype=self.dtype)

    def _preprocessed(self, image: Any) -> torch.Tensor:
        """The preprocessing of one perturbed copy; a failure is the user's preprocessing's, said as compute_cam
        says it (an InputError), not a traceback from inside the check."""
        try:
            t = self.preprocess(image)
        except Exception as err:  # noqa: BLE001 - the user's code, any failure
            raise InputError(f"preprocess failed on a perturbed copy of the image ({type(err).__name__}: {err}), "
                             "though it worked on the image itself. Fix the preprocessing so that it takes any "
                             "image of this size and kind") from err
        if not isinstance(t, torch.Tensor):
            raise InputError(f"preprocess returned {type(t).__name__} for a perturbed copy of the image, not a "
                             "tensor; fix the preprocessing so that it always returns a tensor")
        return t

    def logits(self, output: Any) -> torch.Tensor:
        """The logits in a model output, found as ``compute_cam`` finds them (``output=``, class names)."""
        return logits_of(output, self.pick, len(self.categories) if self.categories else None)

    def forward(self, model: nn.Module, x: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor:
        """Logits of ``x`` (a tensor, FORWARD_CHUNK inputs at a time, or the chunks as they come) in batched
        forwards under inference mode, the model in eval mode and locked for the duration as ``compute_cam``
        does."""
        chunks = (x[i:i + FORWARD_CHUNK] for i in range(0, x.shape[0], FORWARD_CHUNK)) \
            if isinstance(x, torch.Tensor) else x
        out = []
        with model_lock(model) as held, evaluation_mode(model, held.modules), torch.inference_mode():
            for chunk in chunks:
                logits = self.logits(run_model(model, chunk))
                check_logits(logits)
                out.append(logits)
                self.classes = max(2, logits.shape[1])
        return torch.cat(out) if len(out) > 1 else out[0]


def _probabilities(model: nn.Module, source: _Source, x: torch.Tensor | Iterable[torch.Tensor],
                   index: int) -> np.ndarray:
    """The probability of class ``index`` for every input of ``x``, in batched forwards under inference mode."""
    rows = source.forward(model, x).float()
    if rows.shape[1] == 1:
        p1 = torch.sigmoid(rows[:, 0])
        p = p1 if index == 1 else 1 - p1
    else:
        p = torch.softmax(rows, dim=1)[:, index]
    return p.cpu().numpy().astype(np.float64)


def _curve_probabilities(model: nn.Module, source: _Source, changed: torch.Tensor, base: torch.Tensor,
                         start: torch.Tensor, end: torch.Tensor, index: int) -> np.ndarray:
    """The probability of class ``index`` for ``start``, each copy of the source's pixels with the ``changed``
    pixels (one (H, W) mask per copy) taken from ``base``, and ``end``, in this order. The copies are built and
    preprocessed one chunk of FORWARD_CHUNK inputs at a time in a background thread while the model runs on the
    chunk before (the same chunks, so the same numbers, as one batch cut into chunks). The last chunk, the
    smallest, goes first: it is the one the model waits for."""
    rows, masks = changed.shape[0] + 2, source.masks(changed)
    starts = list(range(0, rows, FORWARD_CHUNK))
    starts = starts[-1:] + starts[:-1]

    def inputs(lo: int) -> torch.Tensor:
        hi = min(lo + FORWARD_CHUNK, rows)
        first, last = max(lo - 1, 0), min(hi - 1, rows - 2)  # copies first .. last - 1 are rows first + 1 .. last
        copies = torch.where(masks[first:last], base[None], source.pixels[None]) if last > first else None
        parts = [start[None]] * (lo == 0) + [copies] * (copies is not None) + [end[None]] * (hi == rows)
        return source.inputs(copies if len(parts) == 1 and copies is not None else torch.cat(parts))

    with closing(one_ahead(inputs, starts, "camcheck-perturb")) as chunks:  # an error stops the thread now
        probs = _probabilities(model, source, chunks, index)
    return np.roll(probs, starts[0] - rows)  # back in the order of the rows


# ----------------------------------------------------------------------------------------------------- sanity

@dataclass
class _Unit:
    name: str
    module: nn.Module
    params: list[nn.Parameter]
    extra: list[nn.Parameter] = field(default_factory=list)  # a parent's own parameters, randomised with it
    # parameter-less siblings with running statistics (a BatchNorm without affine weights), reset with it
    stats: list[nn.Module] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(p.numel() for p in self.params)


def _has_stats(module: nn.Module) -> bool:
    return any(callable(getattr(m, "reset_running_stats", None)) for m in module.modules())


def _units(module: nn.Module, prefix: str, extra: Sequence[nn.Parameter] = ()) -> list[_Unit]:
    """The parameter-holding children of ``module`` in registration order. The module's own parameters
    (class tokens, position embeddings: input-side parts) and ``extra`` go with its first such child, or form
    a unit of their own when it has none. A child without parameters but with running statistics goes with the
    child before it (the one whose output it normalises), or the first one."""
    own = list(extra) + [p for p in module._parameters.values() if p is not None]
    out: list[_Unit] = []
    waiting: list[nn.Module] = []  # statistics met before the first unit
    for name, child in module._modules.items():
        if child is None:
            continue
        params = list(child.parameters())
        if params:
            out.append(_Unit(f"{prefix}{name}", child, params, stats=waiting))
            waiting = []
        elif _has_stats(child):
            (out[-1].stats if out else waiting).append(child)
    if own and out:
        out[0].extra, out[0].params = own, own + out[0].params
    elif own:  # no child holds parameters: the module is the unit, so that its reset_parameters runs
        out.append(_Unit(prefix.rstrip(".") or "(parameters)", module, own, stats=waiting))
    return out


def cascade_groups(model: nn.Module) -> list[str]:
    """The groups :func:`sanity` randomises, input side first (it randomises them from the last).

    The model's top-level blocks holding parameters; while there are fewer than 5, or the largest holds more than
    half of the parameters, a block is split into its own blocks, largest first, as long as that makes at most
    16 groups. A module's own parameters (e.g. a ViT's class token) go with its first block.

    Example:
        >>> import torchvision
        >>> cascade_groups(torchvision.models.resnet18())
        ['conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4.0', 'layer4.1', 'fc']
    """
    return [u.name for u in _groups(model)]


def _groups(model: nn.Module) -> list[_Unit]:
    groups = _units(model, "")
    if not groups:
        raise CamCheckError("the model has no parameters, so there is nothing to randomise; sanity needs a model "
                            "whose map is computed from learned weights")
    total = sum(g.size for g in groups)
    while True:
        for i in sorted(range(len(groups)), key=lambda k: -groups[k].size):
            unit = groups[i]
            subs = _units(unit.module, unit.name + ".", unit.extra)
            if subs:
                subs[-1].stats = subs[-1].stats + unit.stats  # the statistics after the block follow its last part
            if len(subs) == 1 and subs[0].module is not unit.module:  # a wrapper of one block: go into it
                groups[i] = subs[0]
                break
            wanted = len(groups) < MIN_STEPS or unit.size > 0.5 * total
            if len(subs) >= 2 and wanted and len(groups) - 1 + len(subs) <= MAX_STEPS:
                groups[i:i + 1] = subs
                break
        else:
            return groups


# torch's global generators are process-wide: one seeded re-initialisation at a time; reentrant, since a
# module's own reset_parameters may itself call a check (fork_rng nests)
_RNG_LOCK = threading.RLock()


def _randomise(unit: _Unit, generator_seed: int, device: torch.device) -> None:
    """Re-initialise a group as a new network would be: every module with ``reset_parameters`` (BatchNorm: running
    statistics too), every other parameter from a normal distribution of its own spread. Seeded; the caller's
    random number generators are left as they were.

    ``reset_parameters`` draws from torch's global (process-wide) generator, so the section that seeds it, resets
    and gives the caller's state back holds a module-level lock: sanity calls in several threads each get the
    seeded numbers and leave the generator's state exactly as it was. A limitation: another thread that draws from
    torch's global generator during that short section (a few ms per cascade step) may get numbers of the seeded
    stream, and its own draws then are not those of its seed."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with _RNG_LOCK, torch.inference_mode(False), torch.random.fork_rng(devices=devices), torch.no_grad():
        # the generators fork_rng gives back only: torch.manual_seed would also seed every other GPU's (and takes
        # 0.25 ms a call)
        torch.default_generator.manual_seed(generator_seed)
        if device.type == "cuda":
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(generator_seed)
        elif device.type != "cpu":  # another accelerator: seeded, though fork_rng cannot give its state back
            torch.manual_seed(generator_seed)
        covered: set[int] = set()
        for name, m in unit.module.named_modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                try:
                    m.reset_parameters()
                except TypeError as err:  # it takes arguments (a custom init scale): sanity cannot know them
                    where = ".".join(x for x in (unit.name, name) if x)
                    raise CamCheckError(
                        f"sanity cannot re-initialise module {where!r} ({type(m).__name__}): its reset_parameters() "
                        f"failed without arguments ({err}). Fix: give reset_parameters defaults for its arguments "
                        "(e.g. def reset_parameters(self, std=0.02)), so that it re-initialises the module as a new "
                        "network would be"
                    ) from err
                covered.update(id(p) for p in m._parameters.values() if p is not None)
        for m in (m for sibling in unit.stats for m in sibling.modules()):
            if callable(getattr(m, "reset_running_stats", None)):
                m.reset_running_stats()
        for p in unit.params:
            if id(p) not in covered:  # parameters no reset_parameters covers, e.g. a class token
                spread = float(p.float().std()) if p.numel() > 1 else 0.0
                p.normal_(0.0, spread if spread > 0 and math.isfinite(spread) else 0.02)


def _float_order(flat: np.ndarray) -> np.ndarray:
    """``np.argsort(flat, kind="stable")`` of a float32 array, as two stable sorts of 16-bit keys, which numpy
    sorts by radix in linear time: on the maps of a sanity cascade 0.5-0.7 ms instead of 0.6-1.2 ms (203 x 153
    px). A float's bits, with the sign bit set for a non-negative value and every bit flipped for a negative one,
    order as the floats do."""
    bits = (flat + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0, so equal values share a key
    keys = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))
    low = np.argsort((keys & np.uint32(0xFFFF)).astype(np.uint16), kind="stable")
    return low[np.argsort((keys[low] >> 16).astype(np.uint16), kind="stable")]


def _average_ranks(heatmap: np.ndarray) -> np.ndarray:
    """Ranks of the pixels (ties share their average rank), as float64, from the order of the float32 values
    (:func:`_float_order`)."""
    flat = np.ascontiguousarray(heatmap, dtype=np.float32).ravel()
    order = _float_order(flat)
    values = flat[order]
    new = np.empty(flat.size, dtype=bool)
    new[:1] = True
    np.not_equal(values[1:], values[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], flat.size)  # a tie group holds the sorted positions starts .. ends - 1
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) * 0.5, ends - starts)
    return ranks


def _similarity(a: np.ndarray, a_ranks: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Spearman, SSIM) of map ``b`` with map ``a`` whose ranks are known, as
    :func:`pytest_camcheck.metrics.map_similarity` defines them (the original's ranks are computed once)."""
    ssim = map_similarity_ssim(a, b)
    if np.array_equal(a, b):
        return 1.0, ssim
    if a.min() == a.max() or b.min() == b.max():
        return 0.0, ssim
    ra, rb = a_ranks - a_ranks.mean(), _average_ranks(b)
    rb -= rb.mean()
    # torch's dot, not numpy's: numpy's goes to OpenBLAS, whose threads then busy-wait and slow the next
    # forward passes down (measured: 19 ms per dot on 2 cores, the cascade's convolutions 2x slower)
    ra_t, rb_t = torch.from_numpy(ra), torch.from_numpy(rb)
    return float((ra_t @ rb_t) / torch.sqrt((ra_t @ ra_t) * (rb_t @ rb_t))), ssim


class SanityStep(NamedTuple):
    """One step of the cascade: ``layers`` are the groups randomised so far (the last one at this step)."""

    step: int
    layers: tuple[str, ...]
    spearman: float
    ssim: float


@dataclass
class SanityResult:
    """What :func:`sanity` measured: the curve from the original (step 0) to full randomisation, the final
    similarity (``similarity`` = Spearman, ``ssim``), the threshold and the verdict, and the maps of every step.

    Example:
        >>> r = assert_sane(model, image, "circle")  # doctest: +SKIP
        >>> [round(s.spearman, 2) for s in r.curve]  # doctest: +SKIP
    """

    passed: bool
    similarity: float
    ssim: float
    max_similarity: float
    curve: list[SanityStep]
    original: CamResult
    maps: list[np.ndarray] = field(repr=False)
    seed: int = 0

    @property
    def groups(self) -> list[str]:
        """The groups in the order they were randomised (output side first)."""
        return [s.layers[-1] for s in self.curve[1:]]


def _deep_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, with every module's empty dicts and sets (most of its hook tables) made new up
    front: deepcopy reduces each empty OrderedDict through ``copyreg._slotnames``, which cannot cache its answer
    on a built-in type, and that was 37% of copying the bundled CNN. The result is the same: an empty table's
    deep copy is a new empty table of its type (shared ones stay shared, through the memo)."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if type(value) in (OrderedDict, dict, set) and not value:
                memo[id(value)] = type(value)()
    return copy.deepcopy(model, memo)


def sanity(model: nn.Module, image: Any, target: Any = None, *, max_similarity: float = DEFAULT_MAX_SIMILARITY,
           seed: int = 0, **cam_kwargs: Any) -> SanityResult:
    """Measure the cascading randomisation check without asserting (see :func:`assert_sane`).

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(num_classes=4).eval()
        >>> r = sanity(net, torch.rand(3, 64, 64), 1)
        >>> len(r.curve), r.curve[0].spearman
        (9, 1.0)
    """
    max_similarity = _number("max_similarity", max_similarity, low=-1.0, high=1.0)
    seed = _seed(seed)
    _one_image(image)
    target = _no_list_target(target)
    _check_call(model, cam_kwargs)
    if any(t.is_inference() for t in (*model.parameters(), *model.buffers())):
        raise CamCheckError(
            "the model's parameters are inference tensors (the model was built or loaded under "
            "torch.inference_mode()), which autograd cannot use, so sanity cannot explain its randomised copy. Fix: "
            "build or load the model outside torch.inference_mode() (torch.no_grad() is fine)"
        )
    original = compute_cam(model, image, target, **cam_kwargs)
    assert isinstance(original, CamResult)
    try:
        # out of the caller's inference mode: the copy's parameters must be ordinary tensors that autograd can use
        with model_lock(model), torch.inference_mode(False):  # another thread's call would leave hooks in the copy
            twin = _deep_copy(model)
    except Exception as err:  # noqa: BLE001 - any failure to copy is the same problem for the user
        raise CamCheckError(
            f"the model cannot be deep-copied ({type(err).__name__}: {err}); sanity randomises a copy and never the "
            "model itself. Fix: make the model deep-copyable (no open files, locks or generators as attributes)"
        ) from err
    info = model_info(model)
    if info is not None:
        attach_info(twin, info)
    fixed_target = original.target if original.target >= 0 else target
    explain = cam_of_copies(twin, image, fixed_target, **dict(cam_kwargs, layer=original.layer))  # prepared once
    groups = _groups(twin)
    device = device_of(twin)
    curve = [SanityStep(0, (), 1.0, 1.0)]
    maps = [original.heatmap]
    done: list[tuple[str, ...]] = []
    for step, unit in enumerate(reversed(groups), start=1):
        _randomise(unit, seed * 1000 + step, device)
        done.append((*done[-1], unit.name) if done else (unit.name,))
        try:
            r = explain(twin)
        except CamCheckError as err:
            raise CamCheckError(
                f"sanity step {step} (randomised {unit.name!r}) failed: {err}. The randomised copy could not be "
                "explained; if this is a numerical overflow, run the model in float32"
            ) from err
        assert isinstance(r, CamResult)
        maps.append(r.heatmap)
    box = _seen_box(original.geometry, original.heatmap.shape)  # the pixels the model saw: all, or its crop
    clean = _seen_part(original.heatmap, box)
    ranks = _average_ranks(clean)
    similarities = _in_threads(lambda m: _similarity(clean, ranks, _seen_part(m, box)), maps[1:])
    curve += [SanityStep(step, layers, *sim) for step, (layers, sim) in enumerate(zip(done, similarities), start=1)]
    last = curve[-1]
    passed = not original.empty and last.spearman <= max_similarity
    return SanityResult(passed, last.spearman, last.ssim, max_similarity, curve, original, maps, seed)


def _sanity_message(r: SanityResult) -> list[str]:
    lines = []
    if r.original.empty:
        lines.append("the original map is EMPTY (no positive evidence), so randomisation cannot be judged")
    lines.append(f"after randomising all {len(r.curve) - 1} groups the map still has Spearman {r.similarity:.3f} "
                 f"(SSIM {r.ssim:.3f}) with the original; allowed <= {r.max_similarity:g}"
                 + ("  <-- too similar: the map does not depend on the weights" if r.similarity > r.max_similarity
                    else ""))
    seen = _seen_words(r.original.geometry)
    if seen:
        lines.append(seen)
    lines.append("cascade (output side first):  step | randomised | spearman | ssim")
    box = _seen_box(r.original.geometry, r.maps[0].shape)
    first = _seen_part(r.maps[0], box)
    original_flat = first.min() == first.max()
    for s, m in zip(r.curve, (_seen_part(m, box) for m in r.maps)):
        empty = "  (map empty: Spearman taken as 0)" if s.step and m.min() == m.max() and not original_flat else ""
        lines.append(f"  {s.step:4d} | {(s.layers[-1] if s.layers else '(original)'):<24} | {s.spearman:8.3f} | "
                     f"{s.ssim:6.3f}{empty}")
    return lines


# ----------------------------------------------------------------------------------------------- faithfulness

@dataclass
class FaithfulnessResult:
    """What :func:`faithfulness` measured: the curves (``fractions`` of pixels perturbed, the map's
    ``curve`` and the ``random_curve`` mean of ``orderings`` random orderings, all the target's softmax
    probability), their AUCs, ``gain`` (positive: the map beats random), ``chance_gain`` (the gain one more random
    ordering reaches with probability ``1 - confidence``; ``None`` when ``confidence=0``), the thresholds and the
    verdict. ``confounded`` (deletion only) is set when the baseline image itself keeps much of the target's
    probability (the model gives this class to a featureless image, so deleting its evidence cannot lower the
    probability much), or when random orderings push the probability well below the baseline image's (scattered
    replaced pixels are out of distribution for the model, which punishes random orderings for the perturbation
    rather than for the evidence removed). Either way deletion can fail a good map; the message says which.
    ``flat`` is set when the map ranks fewer pixels above its minimum (``ranked``) than one step perturbs (an empty
    or constant map ranks none): every step after the first is then ordered by the seeded tie-break, a random
    ordering, so such a map never passes; more ``steps`` judge a sparse map.

    Example:
        >>> r = assert_faithful(model, image, "circle")  # doctest: +SKIP
        >>> r.auc, r.random_auc, r.gain  # doctest: +SKIP
    """

    passed: bool
    metric: str
    baseline: str
    gain: float
    min_gain: float
    chance_gain: float | None
    confidence: float
    auc: float
    random_auc: float
    random_aucs: list[float]
    fractions: list[float]
    curve: list[float]
    random_curve: list[float]
    target: int
    label: str | None
    heatmap: np.ndarray = field(repr=False)
    result: CamResult | None = field(default=None, repr=False)
    seed: int = 0
    classes: int = 0
    ranked: int = -1  # pixels above the map's minimum (-1: not counted), among those the model saw
    judged: int = -1  # the pixels the model saw, which the curves rank and perturb (-1: all of the map's)
    view: str | None = None  # what part of the image the model saw, when not all of it

    @property
    def pixels(self) -> int:
        """The number of pixels ranked and perturbed: those the model saw (all, or a centre crop's)."""
        return self.judged if self.judged >= 0 else self.heatmap.size

    @property
    def flat(self) -> bool:
        """The map ranks fewer pixels above its minimum than one step perturbs (see the class): it cannot pass."""
        return 0 <= self.ranked < self.pixels / (len(self.fractions) - 1)

    @property
    def baseline_probability(self) -> float:
        """The target's probability on the baseline image (everything deleted, or nothing inserted)."""
        return self.curve[-1] if self.metric == "deletion" else self.curve[0]

    @property
    def featureless_floor(self) -> float:
        """The probability at which the baseline image counts as given this class (see ``confounds``):
        CONFOUND_SHARE of the clean image's, at least CONFOUND_FLOOR, and well above the chance level 1 /
        ``classes`` (the probability a model trained to call a featureless image no class gives every class):
        CONFOUND_CHANCE times it, or chance + CONFOUND_MARGIN where that is lower (2 classes: 0.7, not 1).

        Example:
            >>> r = FaithfulnessResult(False, "deletion", "blur", 0.0, 0.05, None, 0.0, 0.5, 0.5, [0.5], [0.0, 1.0],
            ...                        [0.9, 0.5], [0.9, 0.5], 0, None, np.zeros((2, 2)), classes=6)
            >>> from dataclasses import replace
            >>> round(r.featureless_floor, 3), round(replace(r, classes=2).featureless_floor, 3)
            (0.333, 0.7)
        """
        chance = min(CONFOUND_CHANCE / self.classes, 1 / self.classes + CONFOUND_MARGIN) if self.classes else 0.0
        return max(CONFOUND_SHARE * self.curve[0], CONFOUND_FLOOR, chance)

    @property
    def confounds(self) -> list[str]:
        """Why deletion may misjudge this map (empty when it is not confounded); see ``confounded``."""
        if self.metric != "deletion":
            return []
        out = []
        if self.baseline_probability >= self.featureless_floor:
            out.append(f"the fully {self.baseline!r}-replaced image still gets p = {self.baseline_probability:.2f} "
                       f"(the clean image {self.curve[0]:.2f}): the model gives this class to a featureless image, so "
                       "deleting its evidence cannot lower p much")
        if min(self.random_curve) < self.baseline_probability - CONFOUND_MARGIN:
            out.append(f"random orderings push p down to {min(self.random_curve):.2f}, below the baseline image's "
                       f"{self.baseline_probability:.2f}: scattered replaced pixels are out of distribution for this "
                       "model, so random orderings are punished for the perturbation itself")
        return out

    @property
    def confounded(self) -> bool:
        """Deletion may misjudge this map here (``confounds`` says why)."""
        return bool(self.confounds)


def _baseline(source: _Source, kind: str) -> torch.Tensor:
    """The baseline image in the source's own layout: its Gaussian blur, its mean colour, or zeros."""
    pixels = source.pixels
    if kind == "zero":
        return torch.zeros_like(pixels)
    chw = pixels.permute(2, 0, 1).float() if source.is_picture else pixels
    out = chw.mean(dim=(1, 2), keepdim=True).expand_as(chw) if kind == "mean" else blur(chw)
    if source.is_picture:
        return out.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
    return out.clone()


def blur(images: torch.Tensor) -> torch.Tensor:
    """The "blur" baseline of (..., C, H, W) float images: a Gaussian of sigma ``BLUR_SIGMA`` x the short side
    over the last two axes, as torchvision's ``gaussian_blur`` (same kernel, reflect padding) but separable, so
    2K, not K^2, operations per pixel; images under 3 px on a side get their mean colour.

    Example:
        >>> blur(torch.ones(3, 20, 30)).shape
        torch.Size([3, 20, 30])
    """
    h, w = images.shape[-2:]
    sigma = max(1.0, BLUR_SIGMA * min(h, w))
    kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * ((min(h, w) - 1) // 2) + 1)
    if kernel < 3:
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images).clone()
    from scipy.ndimage import gaussian_filter

    axes = (0.0,) * (images.dim() - 2) + (sigma, sigma)
    return torch.from_numpy(gaussian_filter(images.contiguous().numpy(), sigma=axes, mode="mirror",
                                            truncate=(kernel // 2) / sigma))


def _ranks(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of every pixel, most relevant first; ties in random (seeded) order."""
    flat = heatmap.ravel()
    order = np.lexsort((rng.random(flat.size), -flat))
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(heatmap.shape)


def _check_given_map(heatmap: Any, size: tuple[int, int]) -> np.ndarray:
    if isinstance(heatmap, np.matrix):  # a 2-D ndarray subclass whose indexing keeps two axes: its plain array
        heatmap = np.asarray(heatmap)
    if isinstance(heatmap, torch.Tensor):
        if heatmap.device.type == "meta":
            raise CamCheckError("heatmap= is a tensor on the meta device, which holds no values; pass the map itself")
        if heatmap.layout != torch.strided:
            raise CamCheckError(f"heatmap= is a {heatmap.layout} tensor; pass a dense map (heatmap.to_dense())")
        if heatmap.dtype.is_floating_point and heatmap.dtype not in (torch.float16, torch.float32, torch.float64):
            heatmap = heatmap.float()  # bfloat16, float8: types numpy has not
        heatmap = heatmap.detach().cpu().numpy()
    if isinstance(heatmap, np.ndarray) and heatmap.ndim == 2 and heatmap.size and np.issubdtype(heatmap.dtype,
                                                                                               np.floating):
        if not np.isfinite(heatmap).all():
            raise CamCheckError("heatmap= contains NaN or infinite values; fix the map (e.g. a division by zero "
                                "upstream)")
        low, high = float(heatmap.min()), float(heatmap.max())
        if low < 0 or high > 1:  # another library's scale: only the order of the pixels matters here
            # in float64 and divided by the largest magnitude first, so that a range as wide as +-1e308 or a
            # float16 map's +-6e4 cannot overflow
            scale = max(abs(low), abs(high))
            wide = heatmap.astype(np.float64) / scale
            heatmap = (wide - low / scale) / (high / scale - low / scale) if high > low else np.zeros_like(wide)
    h = check_heatmap(heatmap, "heatmap=")
    if h.shape != tuple(size):
        raise CamCheckError(
            f"heatmap= has shape {h.shape} but the image is {size[0]}x{size[1]} (height x width); pass a map in the "
            "original image's pixels (resize a low-resolution map first, e.g. skimage.transform.resize)"
        )
    return h


def _check_map_orientation(heatmap: Any, size: tuple[int, int], orientation: int) -> None:
    """A map given for a picture with an EXIF orientation is taken in its displayed pixels (as compute_cam's maps,
    ``CamResult.image_size`` and regions are) only where its shape tells them from the stored ones: a non-square
    picture turned by 90 degrees (orientations 5-8). A map of the stored pixels' shape was made on the unturned
    picture (PIL's ``Image.open`` and ``torchvision.io`` do not turn it), and a flip or half turn (2-4), or a square
    picture, leaves the two indistinguishable: refused, with the fix."""
    fix = ("Fix: pass PIL.ImageOps.exif_transpose(img) as the image (no orientation left) with the map in those "
           "displayed pixels, e.g. a map computed on that turned image")
    shape = tuple(getattr(heatmap, "shape", np.shape(heatmap)))
    turned, (h, w) = orientation in (5, 6, 7, 8), size
    if turned and h != w:
        if shape == (w, h):
            raise CamCheckError(
                f"heatmap= has shape {shape}, the picture's stored (unturned) pixels, but the picture has EXIF "
                f"orientation {orientation}: it is shown, and judged, turned by 90 degrees ({h}x{w}, height x width), "
                f"so the map is not where the model's pixels are. {fix}")
        return
    what = "flips or half-turns" if not turned else "turns"
    raise CamCheckError(
        f"heatmap= was given for a picture with EXIF orientation {orientation}, which {what} it for display (as "
        f"compute_cam and this check do){', and it is square' if turned else ''}, so its stored and displayed pixels "
        f"have the same shape and it cannot be known which the map is in. {fix}")


def faithfulness(model: nn.Module, image: Any, target: Any = None, *, metric: str = "deletion", steps: int = 20,
                 baseline: str = "blur", min_gain: float = DEFAULT_MIN_GAIN, heatmap: Any = None,
                 orderings: int = DEFAULT_ORDERINGS, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                 **cam_kwargs: Any) -> FaithfulnessResult:
    """Measure the deletion or insertion check without asserting (see :func:`assert_faithful`).

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(num_classes=4).eval()
        >>> r = faithfulness(net, torch.rand(3, 64, 64), 1, steps=4)
        >>> len(r.curve), r.fractions[-1]
        (5, 1.0)
    """
    if metric not in METRICS:
        raise CamCheckError(f"unknown metric {metric!r}; use one of: {', '.join(METRICS)}")
    if baseline not in BASELINES:
        raise CamCheckError(f"unknown baseline {baseline!r}; use one of: {', '.join(BASELINES)}")
    steps = _count("steps", steps, 2)
    orderings = _count("orderings", orderings, 1)
    min_gain = _number("min_gain", min_gain, low=-1.0, high=1.0)
    confidence = _confidence(confidence, orderings)
    seed = _seed(seed)
    _one_image(image)
    target = _no_list_target(target)
    if callable(target) and not isinstance(target, (str, int)):
        raise CamCheckError("faithfulness curves are the target class's softmax probability, which a callable "
                            "target has not; pass a class index or name (or None for the top-1 class)")
    _check_call(model, cam_kwargs, given_map=heatmap is not None)
    source = _Source(model, image, cam_kwargs)
    result = None
    if heatmap is None:
        result = compute_cam(model, image, target, **cam_kwargs)
        assert isinstance(result, CamResult)
        index, label, h = result.target, result.label, result.heatmap
        if index < 0:
            raise CamCheckError("faithfulness needs class logits; the model output has none for this target")
    else:
        if source.orientation != 1:
            _check_map_orientation(heatmap, source.size, source.orientation)
        h = _check_given_map(heatmap, source.size)
        logits = source.forward(model, source.clean_input)
        check_class_count(source.categories, class_count(logits))
        index = resolve_target(target, logits[0], source.categories).index
        from .engine.targets import label_of

        label = label_of(index, source.categories)
    # the pixels the model saw (all, or a centre crop's): only they are ranked, perturbed and counted; the others
    # keep the curve's starting state (every map is 0 there, and the model never sees them)
    box = _seen_box(source.geometry, h.shape)
    part = _seen_part(h, box)
    if steps > part.size:
        raise CamCheckError(f"steps={steps} is more than the image's {part.size} pixels"
                            + (" that the model sees" if part is not h else "") + f"; pass steps <= {part.size}")
    rng = np.random.default_rng(seed)
    ranks = [_ranks(part, rng)] + [rng.permutation(part.size).reshape(part.shape) for _ in range(orderings)]
    if part is not h:  # a rank no step reaches outside the seen box
        whole = [np.full(h.shape, part.size, dtype=np.int64) for _ in ranks]
        for w, r_ in zip(whole, ranks):
            w[box] = r_
        ranks = whole
    pixels = source.pixels
    base = _baseline(source, baseline)
    counts = [round(k * part.size / steps) for k in range(1, steps)]
    rank_t = torch.from_numpy(np.stack(ranks))  # (O, H, W)
    thresholds = torch.tensor(counts)[None, :, None, None]  # (1, K, 1, 1)
    first = rank_t[:, None] < thresholds  # (O, K, H, W): pixels taken first at each interior step
    changed = first if metric == "deletion" else ~first
    start, end = (pixels, base) if metric == "deletion" else (base, pixels)
    try:
        probs = _curve_probabilities(model, source, changed.reshape(-1, *h.shape), base, start, end, index)
    except TargetError as err:
        if "NaN or infinite" not in str(err):
            raise
        raise TargetError(
            f"the model produced NaN or infinite outputs on the {metric} curve's images, which are the image with "
            f"pixels replaced by the {baseline!r} baseline up to the baseline image itself, although it gave "
            f"finite outputs for the image ({err}). A preprocess that standardises each image by its own spread "
            "divides by zero on a constant baseline image. Fix: "
            + ("pass baseline='blur' or baseline='mean'" if baseline == "zero" else
               "pass another baseline (e.g. 'blur'), or make the preprocessing finite on a constant image")
        ) from err
    inner = probs[1:-1].reshape(len(ranks), steps - 1)
    curves = np.concatenate([np.full((len(ranks), 1), probs[0]), inner, np.full((len(ranks), 1), probs[-1])], axis=1)
    aucs = [float(np.trapezoid(c, dx=1.0 / steps)) for c in curves]
    random_auc = float(np.mean(aucs[1:]))
    gain = random_auc - aucs[0] if metric == "deletion" else aucs[0] - random_auc
    chance = _chance_gain(aucs[1:], confidence)
    r = FaithfulnessResult(
        passed=False, metric=metric, baseline=baseline, gain=gain,
        min_gain=min_gain, chance_gain=chance, confidence=confidence, auc=aucs[0],
        random_auc=random_auc, random_aucs=aucs[1:], fractions=[k / steps for k in range(steps + 1)],
        curve=curves[0].tolist(), random_curve=curves[1:].mean(axis=0).tolist(), target=index, label=label,
        heatmap=h, result=result, seed=seed, classes=source.classes,
        ranked=int(np.count_nonzero(part > part.min())),  # the rest are ordered by the seeded tie-break
        judged=part.size, view=_seen_words(source.geometry, "only its pixels are ranked, perturbed and counted "
                                           "in the steps, for the map and the random orderings"),
    )
    r.passed = not r.flat and _beats_random(gain, min_gain, chance)
    return r


def _confidence(value: Any, orderings: int) -> float:
    value = _number("confidence", value, low=0.0, high=1.0)
    if value == 1:
        raise CamCheckError("confidence=1.0 is not valid: no gain would ever be more than chance; pass a number in "
                            "[0, 1) (0: judge by min_gain alone)")
    if value > 0 and orderings < 2:
        raise CamCheckError(
            f"orderings={orderings} gives no spread of random orderings to judge chance against; pass orderings >= 2 "
            f"(default {DEFAULT_ORDERINGS}), or confidence=0 to judge by min_gain alone"
        )
    return float(value)


def _beats_random(gain: float, min_gain: float, chance: float | None) -> bool:
    """The faithfulness verdict: the gain reaches ``min_gain`` and is more than chance (when judged)."""
    return gain >= min_gain and (chance is None or gain > chance)


def _chance_gain(random_aucs: Sequence[float], confidence: float) -> float | None:
    """The gain over the mean of ``random_aucs`` that one more random ordering exceeds with probability
    ``1 - confidence``: the one-sided prediction bound t(confidence, K - 1) * s * sqrt(1 + 1/K) of K orderings
    whose AUCs have the sample standard deviation s (the same for deletion and insertion, by symmetry)."""
    if confidence == 0:
        return None
    from scipy.stats import t as student_t

    k = len(random_aucs)
    spread = float(np.std(random_aucs, ddof=1))
    return float(student_t.ppf(confidence, k - 1) * spread * math.sqrt(1 + 1 / k)) if spread > 0 else 0.0


def _faithful_message(r: FaithfulnessResult) -> list[str]:
    better = "lower" if r.metric == "deletion" else "higher"
    lines = [
        f"{r.metric} with baseline {r.baseline!r}: the map's AUC {r.auc:.3f} vs random orderings' {r.random_auc:.3f} "
        f"(each: {', '.join(f'{a:.3f}' for a in r.random_aucs)}); {better} is better",
        f"gain {r.gain:+.3f}, required >= {r.min_gain:g}" + ("  <-- the map does not beat random by min_gain"
                                                             if r.gain < r.min_gain else ""),
        "chance: not judged (confidence=0)" if r.chance_gain is None else
        f"chance: one more random ordering reaches a gain of {r.chance_gain:+.3f} with probability "
        f"{1 - r.confidence:.0%} (spread of the {len(r.random_aucs)} random AUCs); required gain > that"
        + ("  <-- the map is not better than chance" if r.gain <= r.chance_gain else ""),
        f"curve of p(class {r.target}{' ' + repr(r.label) if r.label else ''}) (softmax probability):",
        "  fraction: " + " ".join(f"{f:.2f}" for f in r.fractions),
        "  map:      " + " ".join(f"{p:.2f}" for p in r.curve),
        "  random:   " + " ".join(f"{p:.2f}" for p in r.random_curve),
    ]
    if r.flat and r.ranked == 0:
        what = "EMPTY (no positive evidence)" if r.result is not None and r.result.empty else "CONSTANT"
        lines.insert(0, f"the map is {what}: it ranks no pixel above another, so its ordering is a random one "
                        "and it cannot pass, whatever the curve")
    elif r.flat:
        steps, size = len(r.fractions) - 1, r.pixels
        lines.insert(0, f"the map ranks only {r.ranked} pixels above its minimum, fewer than one step's "
                        f"{math.ceil(size / steps)}: every later step is ordered by the seeded tie-break, a random "
                        f"ordering, so it cannot pass, whatever the curve; steps >= {math.ceil(size / r.ranked)} "
                        "would judge a map this sparse")
    if r.metric == "deletion" and r.curve[0] < UNSURE:
        lines.append(f"note: the clean image gives this class only p = {r.curve[0]:.2f}: the model does not predict "
                     "it here, so deleting pixels cannot lower p much; explain the predicted class (target=None)")
    if r.view:
        lines.append(r.view)
    for why in r.confounds:
        lines.append(f"note, deletion is confounded here: {why}")
    if r.confounded and not r.passed:
        lines.append("  so a good map can fail deletion on this image; metric='insertion' (or another baseline) may "
                     "judge it more fairly")
    return lines


# -------------------------------------------------------------------------------------------------- stability

@dataclass
class StabilityResult:
    """What :func:`stability` measured: the SSIM of each perturbed map with the clean map, the
    smallest SSIM (``similarity``), captum's max-sensitivity (``sensitivity``: the largest ||map' - map|| / ||map||),
    the prediction of each perturbed image, and the verdicts: ``map_stable``, ``prediction_stable``, ``passed``.

    Example:
        >>> r = assert_stable(model, image, "circle")  # doctest: +SKIP
        >>> r.similarity, r.predictions  # doctest: +SKIP
    """

    passed: bool
    map_stable: bool
    prediction_stable: bool
    similarity: float
    min_similarity: float
    noise: float
    ssims: list[float]
    sensitivity: float
    prediction: int | None
    predictions: list[int | None]
    clean: CamResult
    perturbed: list[CamResult] = field(repr=False)
    seed: int = 0


def map_similarity_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps of one shape, as :func:`pytest_camcheck.metrics.map_similarity` computes it."""
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    if side < 3:
        raise CamCheckError(f"maps of shape {a.shape} are too small for SSIM; use an image of at least 3x3 px")
    return float(structural_similarity(a, b, data_range=1.0, win_size=min(7, side if side % 2 else side - 1)))


@contextmanager
def _one_image_words(copies: Sequence[int] | None = None) -> Iterator[None]:
    """compute_cam's errors on stability's internal batch (the image, then its perturbed copies; or only the
    copies ``copies``) said of the one image the user passed, not of a batch the user never made."""
    try:
        yield
    except CamCheckError as err:
        text = str(err)
        if "of the batch" not in text and "for a batch of" not in text:
            raise

        def name(match: re.Match[str]) -> str:
            k = int(match.group(1))
            if copies is None and k == 0:
                return "the image"
            return f"perturbed copy {copies[k] + 1 if copies is not None else k} of the image"

        text = re.sub(r"image (\d+) of the batch", name, text)
        text = text.replace("the images of the batch", "the image and its perturbed copies")
        try:
            new = type(err)(text + " (stability explains the image and its perturbed copies in one batch)")
        except Exception:  # noqa: BLE001 - an error class with another signature: say it as a CamCheckError
            new = CamCheckError(text)
        raise new from err


def _perturb(source: _Source, noise: float, samples: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pixels = source.pixels
    if source.is_picture:
        if noise > 1:
            raise CamCheckError(f"noise={noise:g} is more than the whole range of an 8-bit picture: noise is in [0, 1] "
                                "pixel units (0.02 is 5 grey levels); pass noise <= 1")
        levels = math.floor(noise * 255 + 1e-9)
        if levels < 1:
            raise CamCheckError(
                f"noise={noise:g} is less than one grey level (1/255 = {1 / 255:.4f}) of this 8-bit picture, so no "
                "pixel could change; pass noise >= 1/255, or the image as a float tensor"
            )
        offsets = torch.randint(-levels, levels + 1, (samples, *pixels.shape), generator=gen, dtype=torch.int16)
        return offsets.add_(pixels).clamp_(0, 255).to(torch.uint8)  # in place: no second (samples, ...) stack
    if noise > torch.finfo(torch.float32).max / 4:
        raise CamCheckError(f"noise={noise:g} takes the image's values beyond float32; pass a noise in the tensor's own "
                            "units (e.g. 0.02 of its range)")
    # drawn in float32 whatever torch's default dtype: the same seed gives the same noise
    return torch.rand((samples, *pixels.shape), generator=gen, dtype=torch.float32).mul_(2).sub_(1).mul_(noise) \
        .add_(pixels)


def _norm(a: np.ndarray) -> float:
    """The L2 norm of an array, without BLAS: np.linalg.norm's dot product goes to OpenBLAS, whose threads then
    busy-wait and slowed the next forward passes down (stability: 245 ms instead of 70 ms on 2 cores)."""
    flat = a.ravel()
    return math.sqrt(float(np.einsum("i,i->", flat, flat)))


def _in_threads(measure: Callable[[np.ndarray], Any], maps: Sequence[np.ndarray]) -> list[Any]:
    """``measure`` of every map, in order, over up to 4 threads. Run once the model is done: parts of SSIM and of
    the rank sorts release the GIL, so stability's 8 SSIMs took 6.5-9 ms instead of 9-10 on 2 cores; the same
    measurements in a thread beside the sanity cascade's next step fought it for the GIL."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(4, len(maps), cpus)
    if workers < 2:
        return [measure(m) for m in maps]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camcheck-similarity") as pool:
        return list(pool.map(measure, maps))


def stability(model: nn.Module, image: Any, target: Any = None, *, noise: float = DEFAULT_NOISE, samples: int = 8,
              min_similarity: float = DEFAULT_MIN_SIMILARITY, seed: int = 0, **cam_kwargs: Any) -> StabilityResult:
    """Measure the stability check without asserting (see :func:`assert_stable`).

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(num_classes=4).eval()
        >>> r = stability(net, torch.rand(3, 64, 64), 1, samples=2)
        >>> len(r.ssims)
        2
    """
    noise = _number("noise", noise, low=0.0, low_open=True)
    samples = _count("samples", samples, 1)
    min_similarity = _number("min_similarity", min_similarity, low=-1.0, high=1.0)
    seed = _seed(seed)
    _one_image(image)
    target = _no_list_target(target)
    _check_call(model, cam_kwargs)
    source = _Source(model, image, cam_kwargs)
    noisy = _perturb(source, noise, samples, seed)
    images = source.images(torch.cat([source.pixels[None], noisy]))
    with _one_image_words():
        results = compute_cam(model, images, target, **cam_kwargs)
    assert isinstance(results, list)
    clean, perturbed = results[0], results[1:]
    if target is None:  # each image's own top-1 was explained; the clean one's class is the one to compare
        moved = [j for j, r in enumerate(perturbed) if r.target != clean.target]
        if moved:
            with _one_image_words(moved):
                again = compute_cam(model, source.images(noisy[moved]), clean.target, **cam_kwargs)
            for j, r in zip(moved, again if isinstance(again, list) else [again]):
                perturbed[j] = r
    prediction = clean.top[0][0] if clean.top else None
    predictions = [r.top[0][0] if r.top else None for r in perturbed]

    box = _seen_box(clean.geometry, clean.heatmap.shape)  # judged on the pixels the model saw (all, or its crop)
    clean_part = _seen_part(clean.heatmap, box)

    def measure(m: np.ndarray) -> tuple[float, float]:
        m = _seen_part(m, box)
        return map_similarity_ssim(clean_part, m), _norm(m.astype(np.float64) - clean_part)

    pairs = _in_threads(measure, [r.heatmap for r in perturbed])
    ssims, changes = [p[0] for p in pairs], [p[1] for p in pairs]
    norm = _norm(clean_part.astype(np.float64))
    sensitivity = max(changes) / norm if norm > 0 else math.inf
    map_stable = not clean.empty and min(ssims) >= min_similarity
    prediction_stable = all(p == prediction for p in predictions)
    return StabilityResult(
        passed=map_stable and prediction_stable, map_stable=map_stable, prediction_stable=prediction_stable,
        similarity=min(ssims), min_similarity=min_similarity, noise=noise, ssims=ssims,
        sensitivity=sensitivity, prediction=prediction,
        predictions=predictions, clean=clean, perturbed=perturbed, seed=seed,
    )


def _stable_message(r: StabilityResult) -> list[str]:
    lines = []
    if r.clean.empty:
        lines.append("the clean map is EMPTY: the model shows no positive evidence for this target at this layer, so "
                     "there is no map whose stability could be judged (the SSIMs below compare empty maps). Fix: "
                     "explain another target (e.g. the predicted class, target=None), or use another layer= or method=")
    seen = _seen_words(r.clean.geometry)
    if seen:
        lines.append(seen)
    lines += [
        f"{len(r.ssims)} perturbations within +-{r.noise:g} (pixel units in [0, 1]):",
        "  SSIM with the clean map: " + " ".join(f"{s:.3f}" for s in r.ssims),
        f"smallest SSIM {r.similarity:.3f}, required >= {r.min_similarity:g}"
        + ("" if r.map_stable or r.clean.empty else "  <-- the MAP is unstable"),
        "max-sensitivity (largest ||map' - map|| / ||map||): not defined, the clean map is empty" if r.clean.empty
        else f"max-sensitivity (largest ||map' - map|| / ||map||) {r.sensitivity:.3f}",
        f"prediction: clean {r.prediction}, perturbed {r.predictions}"
        + ("" if r.prediction_stable
           else "  <-- the PREDICTION changes (the model is unstable here, not only the map)"),
    ]
    return lines


# ------------------------------------------------------------------------------------------- assert and record

TILE_HEIGHT = 160  # px, each map of a failure picture
SHEET_WIDTH = 4096  # px, about the widest a failure picture gets (an image 25 times wider than high: smaller tiles)


def _tile(t: Image.Image) -> Image.Image:
    return t.resize((max(1, t.width * TILE_HEIGHT // t.height), TILE_HEIGHT))


def _strip(check: str, picture: Image.Image, maps: Sequence[np.ndarray], labels: Sequence[str],
           metrics: dict[str, Any], thresholds: dict[str, Any]) -> tuple[Any, str]:
    """The failure picture: the maps on the picture side by side with the check's curve (drawn from its recorded
    metrics, as the report draws it), written to the artifacts folder; (path, text) or (None, why not)."""
    from .render import overlay, quality_curve, save_png, side_by_side

    try:
        curve = [quality_curve(check, metrics, thresholds)]
    except ValueError:  # no finite value to draw (e.g. every SSIM NaN): the maps alone
        curve = []
    try:
        tiles = [_tile(overlay(picture, m)) for m in maps]
        budget = max(len(tiles), SHEET_WIDTH - sum(c.width for c in curve))  # the maps share what the curve leaves
        wide = sum(t.width for t in tiles)
        if wide > budget:  # a very wide image: smaller tiles, so the whole strip stays SHEET_WIDTH px wide or so
            tiles = [t.resize((max(1, t.width * budget // wide), max(1, t.height * budget // wide))) for t in tiles]
        sheet = side_by_side(tiles + curve, list(labels) + ["curve"] * len(curve))
        path = save_png(sheet, context.artifact_path(check))
    except OSError as err:
        return None, f"not written ({err})"
    return path, str(path)


def _finish(check: str, passed: bool, head: str, lines: list[str],
            maps: Callable[[], tuple[Image.Image, Sequence[np.ndarray], Sequence[str]]], result: CamResult | None,
            target: int, label: str | None, metrics: dict[str, Any], thresholds: dict[str, Any], image: Any) -> None:
    """Record the check (naming ``image`` as the attention checks do); when it failed, write its picture
    (``maps()``: the picture, the maps drawn on it and their labels) and raise ``AssertionError`` with the
    message."""
    __tracebackhide__ = True
    picture, picture_text = (None, "") if passed else _strip(check, *maps(), metrics, thresholds)
    message = "" if passed else "\n".join([f"camcheck {check} failed", f"  {head}", *[f"  {x}" for x in lines],
                                           f"  picture: {picture_text}"])
    context.record(context.CheckRecord(
        check=check, passed=passed, method=result.method if result else "given heatmap",
        layer=result.layer if result else "", target=target, label=label,
        probability=result.probability if result else None, metrics=metrics, thresholds=thresholds,
        overlay=picture, message=message, image=context.describe_image(image),
    ))
    if not passed:
        raise AssertionError(message)


def _head(result: CamResult) -> str:
    label = f" {result.label!r}" if result.label else ""
    what = "callable target" if result.target < 0 else f"class {result.target}{label}"
    return f"method {result.method}, layer {result.layer}, {what}"


def assert_sane(model: nn.Module, image: Any, target: Any = None, *,
                max_similarity: float = DEFAULT_MAX_SIMILARITY, seed: int = 0, **cam_kwargs: Any) -> SanityResult:
    """Assert that the map depends on the model's weights (cascading randomisation, Adebayo et al. 2018).

    A deep copy of the model is randomised group by group from the output down (:func:`cascade_groups`),
    seeded by ``seed``; the map of the same target after full randomisation must have a Spearman rank correlation
    of at most ``max_similarity`` with the original map. The model itself is never changed. Other keywords go to
    :func:`compute_cam` (the layer is fixed to the original map's). Returns the :class:`SanityResult`.

    Example:
        >>> from pytest_camcheck import load_model
        >>> from pytest_camcheck.scenes import make_scene
        >>> scene = make_scene(1_000_000)
        >>> assert_sane(load_model("camcheck-shapes"), scene.image, scene.name).passed
        True
    """
    __tracebackhide__ = True
    r = sanity(model, image, target, max_similarity=max_similarity, seed=seed, **cam_kwargs)

    def maps() -> tuple[Image.Image, Sequence[np.ndarray], Sequence[str]]:
        labels = ["original"] + [f"{s.step}: {s.layers[-1]}"[:28] for s in r.curve[1:]]
        return _picture_of_result(r.original, image), r.maps, labels

    metrics = {"similarity": r.similarity, "ssim": r.ssim, "steps": len(r.curve) - 1,
               "curve": [[s.step, s.layers[-1] if s.layers else "", s.spearman, s.ssim] for s in r.curve]}
    _finish("sane", r.passed, _head(r.original), _sanity_message(r), maps, r.original, r.original.target,
            r.original.label, metrics, {"max_similarity": r.max_similarity, "seed": r.seed}, image)
    return r


def assert_faithful(model: nn.Module, image: Any, target: Any = None, *, metric: str = "deletion", steps: int = 20,
                    baseline: str = "blur", min_gain: float = DEFAULT_MIN_GAIN, heatmap: Any = None,
                    orderings: int = DEFAULT_ORDERINGS, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                    **cam_kwargs: Any) -> FaithfulnessResult:
    """Assert that the pixels the map ranks first are the ones the model needs (deletion / insertion curves).

    ``metric``: "deletion" (replace the most relevant pixels by the baseline first; the probability should fall
    fast) or "insertion" (put them onto the baseline image first; it should rise fast). ``baseline``: "blur"
    (Gaussian blur, sigma 10% of the short side), "mean" (the image's mean colour) or "zero". The curve, over
    ``steps`` equal shares of the pixels, is the target's softmax probability; the check holds when the map's AUC
    beats the mean AUC of ``orderings`` random orderings (seeded by ``seed``) by ``min_gain``, and by more than
    one more random ordering would with probability ``1 - confidence`` (``confidence=0``: ``min_gain`` alone; see
    the module notes). ``heatmap``: judge a
    map from anywhere (any scale: only its order of pixels counts; shape of the original image) instead of computing
    one. Other keywords go to :func:`compute_cam`. Returns the :class:`FaithfulnessResult`.

    Example:
        >>> from pytest_camcheck import load_model
        >>> from pytest_camcheck.scenes import make_scene
        >>> scene = make_scene(1_000_000)
        >>> assert_faithful(load_model("camcheck-shapes"), scene.image, scene.name).gain > 0.1
        True
    """
    __tracebackhide__ = True
    r = faithfulness(model, image, target, metric=metric, steps=steps, baseline=baseline, min_gain=min_gain,
                     heatmap=heatmap, orderings=orderings, confidence=confidence, seed=seed, **cam_kwargs)

    def maps() -> tuple[Image.Image, Sequence[np.ndarray], Sequence[str]]:
        return _picture_of_result(r.result, image), [r.heatmap], ["map"]

    over_chance = None if r.chance_gain is None else r.gain - r.chance_gain  # must be > 0: a report shows it paired
    metrics = {"gain": r.gain, "chance_gain": r.chance_gain, "gain_over_chance": over_chance, "auc": r.auc,
               "random_auc": r.random_auc,
               "random_aucs": r.random_aucs, "metric": r.metric, "baseline": r.baseline, "confounded": r.confounded,
               "curve": r.curve, "random_curve": r.random_curve}
    head = _head(r.result) if r.result is not None else f"given heatmap, class {r.target}"
    _finish("faithful", r.passed, head, _faithful_message(r), maps, r.result, r.target, r.label, metrics,
            {"min_gain": r.min_gain, "confidence": r.confidence, "steps": len(r.fractions) - 1,
             "orderings": len(r.random_aucs), "seed": r.seed,
             **({"min_gain_over_chance": 0.0} if over_chance is not None else {})}, image)
    return r


def assert_stable(model: nn.Module, image: Any, target: Any = None, *, noise: float = DEFAULT_NOISE,
                  samples: int = 8, min_similarity: float = DEFAULT_MIN_SIMILARITY, seed: int = 0,
                  **cam_kwargs: Any) -> StabilityResult:
    """Assert that the map holds under imperceptible input changes (and say whether the prediction does).

    ``samples`` perturbations, uniform in the L-infinity ball of radius ``noise`` (pixel units in [0, 1]; whole grey
    levels for an 8-bit picture; a tensor's own units for a tensor), seeded by ``seed``, are explained in one
    batched :func:`compute_cam` call with the clean image; each map must keep SSIM >= ``min_similarity`` with the
    clean map and the predicted class must stay the same. Returns the :class:`StabilityResult`.

    Example:
        >>> from pytest_camcheck import load_model
        >>> from pytest_camcheck.scenes import make_scene
        >>> scene = make_scene(1_000_000)
        >>> assert_stable(load_model("camcheck-shapes"), scene.image, scene.name).similarity > 0.8
        True
    """
    __tracebackhide__ = True
    r = stability(model, image, target, noise=noise, samples=samples, min_similarity=min_similarity, seed=seed,
                  **cam_kwargs)

    def maps() -> tuple[Image.Image, Sequence[np.ndarray], Sequence[str]]:
        worst = sorted(range(len(r.ssims)), key=lambda j: r.ssims[j])[:3]
        labels = ["clean"] + [f"#{j + 1} ssim {r.ssims[j]:.2f}" for j in worst]
        return _picture_of_result(r.clean, image), [r.clean.heatmap] + [r.perturbed[j].heatmap for j in worst], labels

    metrics = {"similarity": r.similarity, "sensitivity": r.sensitivity, "prediction_stable": r.prediction_stable,
               "ssims": r.ssims, "predictions": r.predictions}
    _finish("stable", r.passed, _head(r.clean), _stable_message(r), maps, r.clean, r.clean.target, r.clean.label,
            metrics, {"min_similarity": r.min_similarity, "noise": r.noise, "samples": len(r.ssims), "seed": r.seed},
            image)
    return r


def _picture_of_result(result: CamResult | None, image: Any) -> Image.Image:
    """The picture the maps are drawn on: the original picture, or a tensor image min-max scaled to 8 bits."""
    from .images import load_image

    if result is not None and result.image is not None:
        return result.image
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        t = t[:3] if t.shape[0] >= 3 else t[:1].expand(3, -1, -1)
        t = (t - t.min()) / (t.max() - t.min() + 1e-12)
        return Image.fromarray((t.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    return load_image(image)
