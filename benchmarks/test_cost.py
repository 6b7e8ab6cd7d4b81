"""What a map costs: ours vs a bare no-grad forward of the same model, vs pytorch-grad-cam and torch-cam.

Each case is one benchmark; the report script pairs the cases of one (model, batch, device) group and
writes the ratios to BENCHMARKS.md. Run: ``pytest benchmarks --benchmark-only --benchmark-json=bench.json``.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import pytest
import torch

from pytest_camcheck import compute_cam

from .conftest import model, size_of, sync

DEVICE = os.environ.get("CAMCHECK_BENCH_DEVICE", "cpu")
MODELS = os.environ.get("CAMCHECK_BENCH_MODELS", "resnet18,resnet50").split(",")
BATCHES = [int(b) for b in os.environ.get("CAMCHECK_BENCH_BATCHES", "1,16").split(",")]
METHODS = os.environ.get("CAMCHECK_BENCH_METHODS", "gradcam").split(",")
LIBRARIES = os.environ.get("CAMCHECK_BENCH_LIBRARIES", "ours,grad-cam").split(",")
PERTURBATION = {"scorecam", "ablationcam"}

GC_NAMES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
            "layercam": "LayerCAM", "scorecam": "ScoreCAM", "eigencam": "EigenCAM", "ablationcam": "AblationCAM"}
TC_NAMES = {"cam": "CAM", "gradcam": "GradCAM", "gradcam++": "GradCAMpp", "xgradcam": "XGradCAM",
            "layercam": "LayerCAM", "scorecam": "ScoreCAM"}


def _rounds(name: str, batch: int, method: str | None) -> int:
    heavy = batch > 1 or name in {"vgg19", "resnet50", "convnext_tiny"}
    if method in PERTURBATION:
        return 1
    return 3 if heavy else 10


def _input(name: str, batch: int) -> torch.Tensor:
    size = size_of(name)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(DEVICE)


def _layer_name(net: torch.nn.Module, x: torch.Tensor) -> str:
    return compute_cam(net, x[0]).layer


def _timed(benchmark, fn: Callable[[], object], rounds: int, **info: object) -> None:
    def run() -> None:
        fn()
        sync(DEVICE)

    run()
    benchmark.extra_info.update(info, device=DEVICE, threads=torch.get_num_threads())
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1 if rounds > 1 else 0)


def _cases() -> list:
    cases = []
    for name in MODELS:
        for batch in BATCHES:
            cases.append(pytest.param(name, batch, "forward", None, id=f"{name}-b{batch}-forward"))
            for method in METHODS:
                if method in PERTURBATION and batch > 1:
                    continue
                for lib in LIBRARIES:
                    table = {"ours": GC_NAMES | TC_NAMES, "grad-cam": GC_NAMES, "torch-cam": TC_NAMES}[lib]
                    if method in table:
                        cases.append(pytest.param(name, batch, lib, method, id=f"{name}-b{batch}-{lib}-{method}"))
    return cases


@pytest.mark.parametrize("name,batch,lib,method", _cases())
def test_cost(benchmark, name: str, batch: int, lib: str, method: str | None) -> None:
    net = model(name, DEVICE)
    x = _input(name, batch)
    benchmark.group = f"{name} batch {batch} {DEVICE}"
    layer = _layer_name(net, x)
    info = dict(model=name, batch=batch, lib=lib, method=method or "forward", layer=layer)
    rounds = _rounds(name, batch, method)
    if lib == "forward":
        def fn() -> object:
            with torch.no_grad():
                return net(x)
        _timed(benchmark, fn, rounds, **info)
        return
    target = 1
    if lib == "ours":
        _timed(benchmark, lambda: compute_cam(net, x if batch > 1 else x[0], [target] * batch if batch > 1 else target,
                                              method=method, layer=layer), rounds, **info)
        return
    module = dict(net.named_modules())[layer]
    if lib == "grad-cam":
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = getattr(pgc, GC_NAMES[method])(model=net, target_layers=[module])
        if hasattr(cam, "batch_size"):
            cam.batch_size = 32
        targets = [ClassifierOutputTarget(target)] * batch
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _timed(benchmark, lambda: cam(input_tensor=x, targets=targets), rounds, **info)
        finally:
            cam.activations_and_grads.release()
        return
    import torchcam.methods as tcm

    extractor = getattr(tcm, TC_NAMES[method])(net, target_layer=module, **({"batch_size": 32} if method == "scorecam" else {}))

    def tc() -> object:
        if method in {"cam", "scorecam"}:
            with torch.no_grad():
                scores = net(x)
        else:
            scores = net(x)
        maps = extractor([target] * batch, scores)
        net.zero_grad(set_to_none=True)
        return maps

    try:
        _timed(benchmark, tc, rounds, **info)
    finally:
        extractor.remove_hooks()
