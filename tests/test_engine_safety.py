"""The user's model is sacred: after any call, success or error, it is exactly as it was."""

from __future__ import annotations

import gc
import os
import warnings

import pytest
import torch
import torchvision
from torch import nn

from pytest_camcheck import CamCheckError, assert_faithful, assert_sane, assert_stable, compute_cam
from pytest_camcheck.engine.methods import METHODS

from .models import SmallCNN


def snapshot(model: nn.Module) -> dict:
    return {
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grad": [(n, None if p.grad is None else (id(p.grad), p.grad.clone())) for n, p in model.named_parameters()],
        "params": [(n, p.detach().clone()) for n, p in model.named_parameters()],
        "buffers": [(n, b.clone()) for n, b in model.named_buffers()],
        "hooks": [(n, tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks),
                   tuple(getattr(m, "_backward_pre_hooks", {}))) for n, m in model.named_modules()],
        "global": (len(nn.modules.module._global_forward_hooks), len(nn.modules.module._global_backward_hooks)),
        "grad_mode": torch.is_grad_enabled(),
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("training", "requires_grad", "hooks", "global", "grad_mode"):
        assert before[key] == after[key], key
    for (n, a), (_, b) in zip(before["grad"], after["grad"]):
        assert (a is None) == (b is None), f".grad of {n}"
        if a is not None:
            assert a[0] == b[0] and torch.equal(a[1], b[1]), f".grad of {n}"
    for key in ("params", "buffers"):
        for (n, a), (_, b) in zip(before[key], after[key]):
            assert torch.equal(a, b), f"{key} {n}"


def user_state(model: nn.Module) -> nn.Module:
    """What a user might hand over: train mode with a mixed submodule, frozen params, existing .grad, a hook."""
    model.train()
    modules = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.Dropout))]
    if modules:
        modules[0].eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    for p in params[-2:]:
        p.grad = torch.randn_like(p)
    model.register_forward_hook(lambda *_: None)
    return model


ARCHS = {
    "smallcnn": (lambda: SmallCNN(), 32, set(METHODS)),
    # Score-CAM's 512 masked forwards per image on resnet18 prove nothing the small model's do not
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=5), 64, set(METHODS) - {"scorecam"}),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=5), 64,
                           set(METHODS) - {"scorecam", "ablationcam"}),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=5), 64,
                    {"gradcam", "gradcam++", "layercam", "eigencam", "cam"}),
}
CASES = [(a, m) for a, (_, _, methods) in ARCHS.items() for m in sorted(methods)]


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    return {name: user_state(make()) for name, (make, _, _) in ARCHS.items()}


@pytest.mark.parametrize("arch,method", CASES)
def test_a_successful_call_leaves_the_model_untouched(models: dict, arch: str, method: str) -> None:
    model, size = models[arch], ARCHS[arch][1]
    before = snapshot(model)
    try:
        result = compute_cam(model, torch.rand(2, 3, size, size), target=[1, 3], method=method)
        assert len(result) == 2
    except CamCheckError as err:
        assert method == "cam" and arch in {"densenet121", "mobilenet_v3_small"}, err  # heads that are not GAP->Linear
    assert_same(before, snapshot(model))


FAILURES = {
    "layer": dict(layer="no.such.layer"),
    "target": dict(target=99),
    "name": dict(target="zebra", categories=list("abcde")),
    "callable": dict(target=lambda out: out),
    "raising": dict(target=lambda out: 1 / 0),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("arch", ["smallcnn", "resnet18"])
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "cam", "ablationcam"])
def test_a_failing_call_leaves_the_model_untouched(models: dict, arch: str, failure: str, method: str) -> None:
    model, size = models[arch], ARCHS[arch][1]
    before = snapshot(model)
    with pytest.raises((CamCheckError, ZeroDivisionError)):
        compute_cam(model, torch.rand(3, size, size), method=method, **FAILURES[failure])
    assert_same(before, snapshot(model))


@pytest.mark.parametrize("layer", [None, "layer4"])
@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_a_model_failing_mid_forward_leaves_it_untouched(models: dict, layer: str | None, method: str) -> None:
    model = models["resnet18"]
    before = snapshot(model)
    with pytest.raises(CamCheckError, match=r"model failed on an input of shape \(1, 1, 32, 32\)"):
        compute_cam(model, torch.rand(1, 32, 32), layer=layer, method=method)
    assert_same(before, snapshot(model))


def test_train_mode_batchnorm_statistics_do_not_move() -> None:
    torch.manual_seed(1)
    model = SmallCNN().train()
    stats = [b.clone() for b in model.buffers()]
    compute_cam(model, torch.rand(4, 3, 32, 32) * 5, target=[0, 1, 2, 3])
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert model.training and all(m.training for m in model.modules())


@pytest.mark.parametrize("method", ["gradcam", "cam", "scorecam"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 3, 32, 32)])
def test_a_model_writing_into_its_input_never_changes_the_callers_tensor(method: str, shape: tuple) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.ReLU(inplace=True), SmallCNN()).eval()
    x = torch.randn(shape)
    before = x.clone()
    compute_cam(model, x, target=1, layer="1.features", method=method)
    assert torch.equal(x, before)


def test_no_parameter_gradient_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backward runs from the score to the layer only: parameters before the layer never get a grad, and
    AccumulateGrad never runs (a hook on each parameter would fire)."""
    torch.manual_seed(2)
    model = torchvision.models.resnet18(num_classes=4).eval()
    fired: list[str] = []
    handles = [p.register_hook(lambda g, n=n: fired.append(n)) for n, p in model.named_parameters()]
    try:
        compute_cam(model, torch.rand(3, 64, 64), target=1)
    finally:
        for h in handles:
            h.remove()
    assert fired == []
    assert all(p.grad is None for p in model.parameters())


def test_grad_mode_of_the_caller_is_kept() -> None:
    model = SmallCNN().eval()
    with torch.no_grad():
        r = compute_cam(model, torch.rand(3, 32, 32))
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        compute_cam(model, torch.rand(3, 32, 32), method="gradcam++")
        assert torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled() and not r.empty


def _live_tensors() -> int:
    # isinstance() on every gc object touches torch.distributed's deprecated module attributes,
    # which warn; the warning is about that probe, not about the engine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read memory use")
def test_200_calls_leave_memory_and_hooks_flat() -> None:
    """A leak of one tensor per call shows in the live-tensor count (200 over a slack of 5), whatever its size;
    the small model (BatchNorm, in-place ReLU, dropout) keeps the test quick."""
    torch.manual_seed(3)
    model = SmallCNN(classes=4).eval()
    x = torch.rand(3, 48, 48)
    for _ in range(30):
        compute_cam(model, x, target=1)
    gc.collect()
    rss, tensors = _rss_mb(), _live_tensors()
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())
    for i in range(200):
        compute_cam(model, x, target=i % 4, method=("gradcam", "cam", "layercam")[i % 3])
    gc.collect()
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()) == hooks == 0
    assert _live_tensors() <= tensors + 5
    assert _rss_mb() - rss < 30


def test_the_fast_module_listing_equals_modules_with_shared_and_missing_children() -> None:
    """evaluation_mode lists modules without nn.Module.modules(); the list must be the same set, each module
    once, with a module registered twice and a child slot set to None, and the flags must come back."""
    from pytest_camcheck.engine.capture import all_modules, evaluation_mode

    shared = nn.Conv2d(3, 3, 1)
    model = nn.Sequential(shared, nn.Sequential(shared, nn.BatchNorm2d(3)), nn.Dropout())
    model.register_module("nothing", None)
    model[1].eval()
    listed = all_modules(model)
    assert len(listed) == len(set(map(id, listed))) == len(list(model.modules()))
    assert set(map(id, listed)) == set(map(id, model.modules()))
    before = {id(m): m.training for m in model.modules()}
    with evaluation_mode(model):
        assert not any(m.training for m in model.modules())
    assert {id(m): m.training for m in model.modules()} == before
    for name in ("resnet18", "mobilenet_v3_large", "densenet121"):
        with torch.device("meta"):  # the module tree without allocating or initialising weights
            net = getattr(torchvision.models, name)()
        assert set(map(id, all_modules(net))) == set(map(id, net.modules()))
        assert len(all_modules(net)) == len(list(net.modules()))


QUALITY_CALLS = {
    "sane": lambda m, x, **kw: assert_sane(m, x, kw.pop("target", 1), **kw),
    "faithful": lambda m, x, **kw: assert_faithful(m, x, kw.pop("target", 1), steps=3, orderings=2, **kw),
    "stable": lambda m, x, **kw: assert_stable(m, x, kw.pop("target", 1), samples=2, **kw),
}
QUALITY_FAILURES = {
    "passes": ({}, None),
    "layer": (dict(layer="no.such.layer"), CamCheckError),
    "target": (dict(target=99), CamCheckError),
    "raising": (dict(target=lambda out: 1 / 0), (ZeroDivisionError, CamCheckError)),
    "assertion": ({"sane": dict(max_similarity=-1.0), "faithful": dict(min_gain=1.0),
                   "stable": dict(min_similarity=1.0, noise=0.5)}, AssertionError),
}
FINE_LAYER = {"smallcnn": "features", "resnet18": "layer3"}  # a grid fine enough that noise 0.5 moves the map


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


QUALITY_CASES = [("smallcnn", c, f) for c in sorted(QUALITY_CALLS) for f in sorted(QUALITY_FAILURES)] + [
    ("resnet18", "sane", "passes"), ("resnet18", "sane", "assertion"), ("resnet18", "stable", "assertion")]


@pytest.mark.parametrize("arch,check,case", QUALITY_CASES)
def test_quality_checks_leave_the_model_untouched(models: dict, arch: str, check: str, case: str,
                                                  one_thread: None) -> None:
    """Sanity randomises a copy, faithfulness and stability only run the model: passing, refused or failing,
    the user's model is as it was."""
    model, size = models[arch], ARCHS[arch][1]
    kwargs, raised = QUALITY_FAILURES[case]
    kwargs = dict(kwargs.get(check, {}) if case == "assertion" else kwargs)
    if case == "assertion" and check == "stable":
        kwargs["layer"] = FINE_LAYER[arch]
    before = snapshot(model)
    if raised is None:
        try:
            QUALITY_CALLS[check](model, torch.rand(3, size, size), **kwargs)
        except AssertionError:
            pass  # a random-init model may fail a quality check; the model's state is what is tested here
    else:
        with pytest.raises(raised):
            QUALITY_CALLS[check](model, torch.rand(3, size, size), **kwargs)
    assert_same(before, snapshot(model))
