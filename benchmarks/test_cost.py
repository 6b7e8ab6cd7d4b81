"""What a map costs: ours vs a bare no-grad forward of the same model, vs pytorch-grad-cam and torch-cam.

Every case is one benchmark of our call. The companions of that case (the bare forward, pytorch-grad-cam and
torch-cam on the same model, input, target layer and device) are timed in the same test, interleaved round by
round with ours (pytest-benchmark's ``setup`` runs them, untimed by it, just before each of our rounds), so a
ratio never mixes timings taken minutes apart. Their fastest rounds, medians and the ratios go to ``extra_info``;
``benchmarks/report.py`` turns the JSON into BENCHMARKS.md.

Run: ``pytest benchmarks --benchmark-only --benchmark-json=bench.json`` (about 11 minutes on 2 CPU cores).
Environment variables narrow or widen the matrix (comma-separated):

- ``CAMCHECK_BENCH_MODELS``: default resnet18, resnet50, mobilenet_v3_large, convnext_tiny, vgg19, camcheck-shapes
- ``CAMCHECK_BENCH_BATCHES``: default 1,16
- ``CAMCHECK_BENCH_METHODS``: default all nine of ours
- ``CAMCHECK_BENCH_LIBRARIES``: companions, default grad-cam,torch-cam
- ``CAMCHECK_BENCH_PERTURBATION_MODELS``: the models Score-CAM and Ablation-CAM run on (batch 1 only: each
  needs one forward per channel); default camcheck-shapes, resnet18, mobilenet_v3_large
- ``CAMCHECK_BENCH_DEVICE``: cpu (default) or cuda; ``CAMCHECK_BENCH_AUTOCAST``: bf16 or fp16 for autocast
- ``CAMCHECK_BENCH_TOKEN_MODELS``: the transformers of the token-layer rows (``test_token_layer_cost``), default
  timm/vit_small_patch16_224, vit_b_16, swin_t; ``CAMCHECK_BENCH_TOKEN_MODELS=none`` leaves them out
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from typing import Any, Callable

import pytest
import torch

from pytest_camcheck import assert_attends_to, compute_cam
from pytest_camcheck.errors import MethodError

from .conftest import model, size_of, sync

ALL_MODELS = "resnet18,resnet50,mobilenet_v3_large,convnext_tiny,vgg19,camcheck-shapes"
ALL_METHODS = "cam,gradcam,gradcam++,xgradcam,hirescam,layercam,eigencam,scorecam,ablationcam"


def _env(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


DEVICE = os.environ.get("CAMCHECK_BENCH_DEVICE", "cpu")
MODELS = _env("CAMCHECK_BENCH_MODELS", ALL_MODELS)
BATCHES = [int(b) for b in _env("CAMCHECK_BENCH_BATCHES", "1,16")]
METHODS = _env("CAMCHECK_BENCH_METHODS", ALL_METHODS)
LIBRARIES = _env("CAMCHECK_BENCH_LIBRARIES", "grad-cam,torch-cam")
PERTURBATION_MODELS = _env("CAMCHECK_BENCH_PERTURBATION_MODELS", "camcheck-shapes,resnet18,mobilenet_v3_large")
AUTOCAST = {"": None, "none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
    os.environ.get("CAMCHECK_BENCH_AUTOCAST", "").lower()]
PERTURBATION = {"scorecam", "ablationcam"}
TARGET = 1

GC_NAMES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
            "layercam": "LayerCAM", "scorecam": "ScoreCAM", "eigencam": "EigenCAM", "ablationcam": "AblationCAM"}
TC_NAMES = {"cam": "CAM", "gradcam": "GradCAM", "gradcam++": "GradCAMpp", "xgradcam": "XGradCAM",
            "layercam": "LayerCAM", "scorecam": "ScoreCAM"}


def _autocast() -> Any:
    if AUTOCAST is None:
        return torch.autocast(device_type=DEVICE.split(":")[0], enabled=False)
    return torch.autocast(device_type=DEVICE.split(":")[0], dtype=AUTOCAST)


class Companion:
    """Something timed next to ours: ``make`` (untimed) builds it, ``call`` is timed, ``close`` (untimed) undoes
    ``make``. Hooks of the other libraries are thus only on the model while their own call runs, so they never
    slow down ours or the bare forward."""

    def __init__(self, name: str, call: Callable[[Any], object], make: Callable[[], Any] = lambda: None,
                 close: Callable[[Any], None] = lambda state: None) -> None:
        self.name, self.call, self.make, self.close = name, call, make, close
        self.times: list[float] = []

    def once(self) -> None:
        state = self.make()
        try:
            with _autocast():
                sync(DEVICE)
                start = time.perf_counter()
                self.call(state)
                sync(DEVICE)
                self.times.append(time.perf_counter() - start)
        finally:
            self.close(state)


def _forward(net: torch.nn.Module, x: torch.Tensor) -> Companion:
    def call(_: Any) -> object:
        with torch.no_grad():
            return net(x)
    return Companion("forward", call)


def _grad_cam(net: torch.nn.Module, x: torch.Tensor, method: str, layer: str) -> Companion:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = dict(net.named_modules())[layer]
    targets = [ClassifierOutputTarget(TARGET)] * x.shape[0]

    def make() -> Any:
        cam = getattr(pgc, GC_NAMES[method])(model=net, target_layers=[module])
        if hasattr(cam, "batch_size"):
            cam.batch_size = 32
        return cam

    def call(cam: Any) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cam(input_tensor=x, targets=targets)

    return Companion("grad-cam", call, make, lambda cam: cam.activations_and_grads.release())


def _torch_cam(net: torch.nn.Module, x: torch.Tensor, method: str, layer: str) -> Companion:
    import torchcam.methods as tcm

    module = dict(net.named_modules())[layer]
    extra = {"batch_size": 32} if method == "scorecam" else {}

    def make() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(tcm, TC_NAMES[method])(net, target_layer=module, **extra)

    def call(extractor: Any) -> object:
        if method in {"cam", "scorecam"}:
            with torch.no_grad():
                scores = net(x)
        else:
            scores = net(x)
        maps = extractor([TARGET] * x.shape[0], scores)
        net.zero_grad(set_to_none=True)
        return maps

    return Companion("torch-cam", call, make, lambda extractor: extractor.remove_hooks())


_FORWARD_SECONDS: dict[tuple[str, int], float] = {}


def _forward_seconds(name: str, batch: int, net: torch.nn.Module, x: torch.Tensor) -> float:
    """One warm forward's time, taken once per (model, batch) to choose the number of rounds."""
    key = (name, batch)
    if key not in _FORWARD_SECONDS:
        probe = _forward(net, x)
        probe.once()
        probe.once()
        _FORWARD_SECONDS[key] = probe.times[-1]
    return _FORWARD_SECONDS[key]


SLOW_COMPANION_S = 3.0


def _rounds(forward_s: float, perturbation: bool) -> tuple[int, int]:
    """(rounds, warm-up rounds): more rounds where a round is cheap, at least 2 everywhere but perturbation
    methods, which cost one forward per channel and run once."""
    if perturbation:
        return 1, 0
    if forward_s > 1.0:
        return 2, 0
    if forward_s > 0.2:
        return 3, 0
    return max(5, min(15, int(0.6 / forward_s))), 1


def _measure(benchmark: Any, ours: Callable[[], object], companions: list[Companion], rounds: int, warmup: int,
             info: dict[str, Any], slow_s: float = SLOW_COMPANION_S) -> None:
    """Time ``ours`` with pytest-benchmark; before each of its rounds time every companion once (rotating their
    order); write the fastest round of each and the ratios to ``extra_info`` (medians alongside).

    The fastest round estimates what a call costs: this machine's noise (other tenants, thread wake-ups) only ever
    adds time, and it hits whichever call happens to run then. A companion whose call takes over
    ``slow_s`` seconds (``SLOW_COMPANION_S``) is timed once: a second call would change its ratio by far less than
    the ratio itself, and it would make the full suite run past 15 minutes. Its ratio is then taken against ours in
    the same round only (both are single calls in the same conditions), not against our fastest round.
    """
    turn = [0]

    def setup() -> None:
        order = companions[turn[0] % len(companions):] + companions[:turn[0] % len(companions)] if companions else []
        turn[0] += 1
        for companion in order:
            if len(companion.times) > warmup and companion.times[-1] > slow_s:
                continue
            companion.once()

    def run() -> object:
        with _autocast():
            out = ours()
        sync(DEVICE)
        return out

    if warmup == 0 and rounds > 2:  # an untimed call first, so first-call allocations are not timed; calls of a
        run()                       # second or more (and the companions, which are not primed) go without it
    benchmark.extra_info.update(info, device=DEVICE, threads=torch.get_num_threads(),
                                dtype=str(AUTOCAST or torch.float32).replace("torch.", ""))
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    ours_rounds = list(benchmark.stats.stats.data)
    benchmark.extra_info["ours_s"] = min(ours_rounds)
    benchmark.extra_info["ours_median_s"] = statistics.median(ours_rounds)
    for companion in companions:
        times = companion.times[warmup:]
        other = min(times)
        paired = min(ours_rounds[:len(times)])  # ours in the rounds where the companion was timed
        benchmark.extra_info[f"{companion.name}_s"] = other
        benchmark.extra_info[f"{companion.name}_median_s"] = statistics.median(times)
        if len(times) < len(ours_rounds):
            benchmark.extra_info[f"ours_next_to_{companion.name}_s"] = paired
        key = "ours_over_forward" if companion.name == "forward" else f"{companion.name}_over_ours"
        benchmark.extra_info[key] = paired / other if companion.name == "forward" else other / paired


def _input(name: str, batch: int) -> torch.Tensor:
    size = size_of(name)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(DEVICE)


def _layer_name(net: torch.nn.Module, x: torch.Tensor) -> str:
    return compute_cam(net, x[0]).layer


def _map_cases() -> list:
    cases = []
    for name in MODELS:
        for batch in BATCHES:
            for method in METHODS:
                if method in PERTURBATION and (batch > 1 or name not in PERTURBATION_MODELS):
                    continue
                cases.append(pytest.param(name, batch, method, id=f"{name}-b{batch}-{method}"))
    return cases


@pytest.mark.parametrize("name,batch,method", _map_cases())
def test_map_cost(benchmark: Any, name: str, batch: int, method: str) -> None:
    """One map per image of a batch, ours against the bare forward and the other libraries."""
    net = model(name, DEVICE)
    x = _input(name, batch)
    benchmark.group = f"{name} batch {batch} {DEVICE}"
    layer = _layer_name(net, x)
    if method == "cam":
        try:
            compute_cam(net, x[0], TARGET, method="cam", layer=layer)
        except MethodError as err:  # CAM needs a GAP -> Linear head; the other libraries would not say so
            pytest.skip(f"{name}: {err}")
    companions = [_forward(net, x)]
    if "grad-cam" in LIBRARIES and method in GC_NAMES:
        companions.append(_grad_cam(net, x, method, layer))
    if "torch-cam" in LIBRARIES and method in TC_NAMES:
        companions.append(_torch_cam(net, x, method, layer))
    rounds, warmup = _rounds(_forward_seconds(name, batch, net, x), method in PERTURBATION)
    image, target = (x, [TARGET] * batch) if batch > 1 else (x[0], TARGET)
    _measure(benchmark, lambda: compute_cam(net, image, target, method=method, layer=layer), companions,
             rounds, warmup, dict(case="map", model=name, batch=batch, method=method, layer=layer))


@pytest.mark.parametrize("name", MODELS)
def test_ten_classes_cost(benchmark: Any, name: str) -> None:
    """Maps of 10 classes of one image (one call) against the map of one class."""
    net = model(name, DEVICE)
    x = _input(name, 1)
    benchmark.group = f"10 classes {DEVICE}"
    layer = _layer_name(net, x)
    with torch.no_grad():
        classes = list(range(min(10, net(x).shape[-1])))  # the bundled model has 6 classes
    one = Companion("one_class", lambda _: compute_cam(net, x[0], TARGET, layer=layer))
    rounds, warmup = _rounds(_forward_seconds(name, 1, net, x), False)
    _measure(benchmark, lambda: compute_cam(net, x[0], classes, layer=layer), [one, _forward(net, x)], rounds,
             warmup, dict(case="classes", model=name, batch=1, method="gradcam", layer=layer, classes=len(classes)))


def _photo(name: str) -> tuple[Any, Any, Any]:
    """(image, preprocess, region) as a user's test has them: a real photo with the model's own preprocessing
    for torchvision models, a generated scene with its object box for the bundled model."""
    if name.startswith("camcheck-"):
        from pytest_camcheck.images import scene_image
        from pytest_camcheck.scenes import HELD_OUT

        scene = scene_image(HELD_OUT + 7)
        return scene.image, None, scene.regions["object"]
    import skimage.data
    import torchvision.transforms as T

    prep = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return skimage.data.chelsea(), prep, None


@pytest.mark.parametrize("name", MODELS)
def test_assertion_cost(benchmark: Any, name: str) -> None:
    """``assert_attends_to`` (a passing check: map + region metrics + record) against ``compute_cam`` alone."""
    net = model(name, DEVICE)
    image, prep, region = _photo(name)
    benchmark.group = f"assert_attends_to {DEVICE}"
    first = compute_cam(net, image, None, preprocess=prep)
    if region is None:  # a random-weights model looks anywhere: put the region around its peak, so it passes
        height, width = first.heatmap.shape
        row, col = divmod(int(first.heatmap.argmax()), width)
        region = (max(0, col - 60), max(0, row - 60), min(width, col + 60), min(height, row + 60))
    target = first.target
    plain = Companion("compute_cam", lambda _: compute_cam(net, image, target, preprocess=prep, layer=first.layer))
    rounds, warmup = _rounds(_forward_seconds(name, 1, net, _input(name, 1)), False)
    _measure(benchmark, lambda: assert_attends_to(net, image, target, region, preprocess=prep, layer=first.layer,
                                                  min_lift=0.0, pointing=False),
             [plain], rounds, warmup, dict(case="assert", model=name, batch=1, method="gradcam", layer=first.layer))


TOKEN_MODELS = [m for m in _env("CAMCHECK_BENCH_TOKEN_MODELS", "timm/vit_small_patch16_224,vit_b_16,swin_t")
                if m != "none"]


def _token_model(name: str) -> tuple[torch.nn.Module, str, Callable[[torch.Tensor], torch.Tensor]]:
    """(model, layer, pytorch-grad-cam's reshape_transform for that layer): a CLS-pooled ViT at the input of its
    last block's attention (tokens, 1 prefix + 14 x 14), Swin at its last stage (channels last)."""
    torch.manual_seed(0)
    if name.startswith("timm/"):
        import timm

        net = timm.create_model(name.split("/", 1)[1]).eval().to(DEVICE)
    else:
        import torchvision

        net = getattr(torchvision.models, name)().eval().to(DEVICE)
    if name == "swin_t":
        return net, "features.7", lambda t: t.permute(0, 3, 1, 2)
    if name == "vit_b_16":
        torch.nn.init.normal_(net.heads.head.weight, std=0.01)  # zero-initialised by torchvision
    layer = compute_cam(net, torch.rand(3, 224, 224, device=DEVICE)).layer
    return net, layer, lambda t: t[:, 1:].reshape(t.shape[0], 14, 14, t.shape[2]).permute(0, 3, 1, 2)


def _suffix_backward(net: torch.nn.Module, x: torch.Tensor, layer: str) -> Companion:
    """The backward through the layers after ``layer``, timed alone: ``make`` (untimed) runs the forward up to
    the layer without autograd and records the rest; ``call`` differentiates the class score down to the layer.
    Added to the bare no-grad forward it is the least any Grad-CAM costs at that layer."""
    module = net.get_submodule(layer)

    def make() -> Any:
        kept: dict[str, torch.Tensor] = {}

        def hook(_m: torch.nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
            kept["leaf"] = out.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
            return kept["leaf"]

        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                out = net(x)
        finally:
            handle.remove()
        return out[:, TARGET].sum(), kept["leaf"]

    return Companion("suffix_backward", lambda state: torch.autograd.grad(state[0], state[1]), make)


def _grad_cam_reshaped(net: torch.nn.Module, x: torch.Tensor, layer: str,
                       reshape: Callable[[torch.Tensor], torch.Tensor]) -> Companion:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(TARGET)] * x.shape[0]

    def call(cam: Any) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cam(input_tensor=x, targets=targets)

    return Companion("grad-cam", call,
                     lambda: pgc.GradCAM(model=net, target_layers=[net.get_submodule(layer)], reshape_transform=reshape),
                     lambda cam: cam.activations_and_grads.release())


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_token_layer_cost(benchmark: Any, name: str, batch: int) -> None:
    """Grad-CAM on a transformer's token (or channels-last) layer against its limit, the bare no-grad forward
    plus the backward through the layers after the chosen one, and against pytorch-grad-cam given its
    reshape_transform for the same layer."""
    net, layer, reshape = _token_model(name)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    benchmark.group = f"token layers batch {batch} {DEVICE}"
    forward, backward = _forward(net, x), _suffix_backward(net, x, layer)
    companions = [forward, backward, _grad_cam_reshaped(net, x, layer, reshape)]
    rounds, warmup = _rounds(_forward_seconds(name, batch, net, x), False)
    image, target = (x, [TARGET] * batch) if batch > 1 else (x[0], TARGET)
    _measure(benchmark, lambda: compute_cam(net, image, target, layer=layer), companions, rounds, warmup,
             dict(case="tokens", model=name, batch=batch, method="gradcam", layer=layer))
    limits = [f + b for f, b in zip(forward.times[warmup:], backward.times[warmup:])]
    ours = list(benchmark.stats.stats.data)
    benchmark.extra_info["limit_s"] = min(limits)
    benchmark.extra_info["ours_over_limit"] = min(ours[:len(limits)]) / min(limits)
    benchmark.extra_info["ours_over_limit_median"] = statistics.median(o / lim for o, lim in zip(ours, limits))
    benchmark.extra_info["limit_over_forward"] = min(limits) / min(forward.times[warmup:])
    result = compute_cam(net, image, target, layer=layer)
    benchmark.extra_info["layout"] = (result if batch == 1 else result[0]).layout
    info = benchmark.extra_info
    print(f"\n{name} batch {batch} {layer}: ours {min(ours) * 1e3:.1f} ms, limit {min(limits) * 1e3:.1f} ms "
          f"(forward {min(forward.times[warmup:]) * 1e3:.1f} + backward {min(backward.times[warmup:]) * 1e3:.1f}), "
          f"ours/limit {info['ours_over_limit']:.3f} (median of rounds {info['ours_over_limit_median']:.3f}), "
          f"grad-cam/ours {info['grad-cam_over_ours']:.2f}")
