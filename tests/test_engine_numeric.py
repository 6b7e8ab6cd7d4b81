"""Maps equal hand-computed values on tiny models whose activations and gradients are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from pytest_camcheck import compute_cam
from pytest_camcheck.engine.evidence import last_linear
from pytest_camcheck.engine.methods import METHODS

from .models import Binary, ConstantScore, GapLinear, KnownGradient


def _image(seed: int = 0, size: tuple[int, int] = (5, 7)) -> torch.Tensor:
    return torch.rand((3,) + size, generator=torch.Generator().manual_seed(seed))


def test_cam_is_the_class_weights_over_the_feature_map() -> None:
    model = GapLinear()
    x = _image()
    result = compute_cam(model, x, target=2, method="cam")
    with torch.no_grad():
        feats = model.features(x[None])[0]
    expected = np.einsum("k,khw->hw", model.fc.weight[2].detach().numpy(), feats.numpy())
    np.testing.assert_allclose(result.raw, expected, rtol=1e-5, atol=1e-6)
    pos = np.maximum(expected, 0)
    np.testing.assert_allclose(result.heatmap, (pos - pos.min()) / (pos.max() - pos.min()), atol=1e-5)


@pytest.mark.parametrize("target", [0, 1, 2, 3])
def test_cam_plus_bias_averages_to_the_logit(target: int) -> None:
    """Seed 004's identity: mean over positions of (CAM + bias) is exactly the class logit."""
    model = GapLinear(channels=6, seed=target)
    result = compute_cam(model, _image(target, (9, 4)), target=target, method="cam")
    assert result.raw.mean() + model.fc.bias[target].item() == pytest.approx(result.score, abs=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"])
def test_gradient_methods_on_known_gradients(method: str) -> None:
    g = torch.Generator().manual_seed(3)
    m = torch.randn(2, 3, 5, 7, generator=g)
    q = torch.randn(2, 3, 5, 7, generator=g)
    x = _image(1)
    result = compute_cam(KnownGradient(m, q), x, target=1, method=method, layer="features")
    a = x.numpy().astype(np.float64)
    grad = (m[1] + q[1] * x).numpy().astype(np.float64)
    if method == "gradcam":
        expected = np.einsum("k,khw->hw", grad.mean(axis=(1, 2)), a)
    elif method == "gradcam++":
        g2, g3 = grad ** 2, grad ** 3
        alpha = g2 / (2 * g2 + a.sum(axis=(1, 2))[:, None, None] * g3 + 1e-6)
        alpha = np.where(grad != 0, alpha, 0)
        expected = np.einsum("k,khw->hw", (np.maximum(grad, 0) * alpha).sum(axis=(1, 2)), a)
    elif method == "xgradcam":
        w = (grad * a).sum(axis=(1, 2)) / (a.sum(axis=(1, 2)) + 1e-7)
        expected = np.einsum("k,khw->hw", w, a)
    elif method == "hirescam":
        expected = (grad * a).sum(axis=0)
    else:
        expected = (np.maximum(grad, 0) * a).sum(axis=0)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-5)


def test_gradcam_equals_cam_on_a_gap_linear_head() -> None:
    model = GapLinear(channels=8, classes=5, seed=4)
    x = _image(4, (12, 9))
    for target in range(5):
        cam = compute_cam(model, x, target=target, method="cam")
        grad = compute_cam(model, x, target=target, method="gradcam")
        np.testing.assert_allclose(grad.raw * 12 * 9, cam.raw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad.heatmap, cam.heatmap, atol=1e-5)
        assert grad.empty == cam.empty


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "mobilenet_v3_small", "convnext_tiny", "densenet121",
                                  "vit_b_16", "squeezenet1_0"])
def test_the_cam_head_is_the_last_linear_of_the_model(name: str) -> None:
    """CAM finds its head by searching from the end; it must be the last Linear in ``modules()`` order."""
    with torch.device("meta"):  # the module tree without allocating or initialising weights
        model = getattr(torchvision.models, name)()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert last_linear(model) is (linears[-1] if linears else None)


def test_the_cam_head_search_sees_nested_and_leading_linears() -> None:
    inner = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.Sequential(inner), torch.nn.ReLU()),
                                torch.nn.Flatten())
    assert last_linear(model) is inner
    assert last_linear(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1))) is None
    assert last_linear(inner) is inner


@pytest.mark.parametrize("channels", [6, 80])  # fewer channels than the 64 positions, and more
def test_eigencam_is_the_first_principal_component_with_a_fixed_sign(channels: int) -> None:
    model = GapLinear(channels=channels, seed=5)
    x = _image(5, (8, 8))
    result = compute_cam(model, x, method="eigencam")
    with torch.no_grad():
        feats = model.features(x[None])[0].double().numpy()
    flat = feats.reshape(channels, -1).T
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    proj = flat @ vt[0]
    mean_map = feats.mean(axis=0).ravel()
    assert np.corrcoef(result.raw.ravel(), mean_map)[0, 1] > 0
    np.testing.assert_allclose(np.abs(result.raw.ravel()), np.abs(proj), rtol=1e-4, atol=1e-6)


def _scorecam_reference(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Score-CAM by its definition, one channel at a time: each upsampled ``features`` channel min-max
    normalised to a mask, the target's logit on the masked input, softmax over channels, weighted sum."""
    with torch.no_grad():
        acts = model.features(x[None])
        up = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
        scores = []
        for k in range(up.shape[0]):
            mk = (up[k] - up[k].min()) / (up[k].max() - up[k].min() + 1e-8)
            scores.append(model(x[None] * mk)[0, target])
        w = torch.softmax(torch.stack(scores), 0)
        return torch.einsum("k,khw->hw", w, acts[0]).numpy()


def test_scorecam_weights_are_the_softmax_of_masked_input_scores() -> None:
    model = GapLinear(channels=3, seed=6)
    x = _image(6, (6, 6))
    result = compute_cam(model, x, target=0, method="scorecam")
    np.testing.assert_allclose(result.raw, _scorecam_reference(model, x, 0), rtol=1e-4, atol=1e-6)


def test_ablationcam_weights_are_the_relative_drop_when_a_channel_is_zeroed() -> None:
    model = GapLinear(channels=4, seed=7)
    x = _image(7, (6, 5))
    result = compute_cam(model, x, target=1, method="ablationcam")
    with torch.no_grad():
        acts = model.features(x[None])
        base = model.fc(acts.mean(dim=(2, 3)))[0, 1]
        drops = []
        for k in range(4):
            ablated = acts.clone()
            ablated[:, k] = 0
            drops.append((base - model.fc(ablated.mean(dim=(2, 3)))[0, 1]) / base)
        expected = torch.einsum("k,khw->hw", torch.stack(drops), acts[0]).numpy()
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)


def test_binary_head_negative_class_gets_the_negated_map() -> None:
    torch.manual_seed(0)
    model = Binary()
    x = _image(8, (10, 10))
    for method in ("cam", "gradcam"):
        pos = compute_cam(model, x, target=1, method=method)
        neg = compute_cam(model, x, target=0, method=method)
        np.testing.assert_allclose(neg.raw, -pos.raw, rtol=1e-5, atol=1e-7)
        assert neg.score == pytest.approx(-pos.score)
        assert pos.probability + neg.probability == pytest.approx(1.0)
    top = compute_cam(model, x)
    assert top.target == int(top.score > 0) or top.score > 0


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"cam"}))
def test_a_constant_score_gives_an_empty_map_not_nan(method: str) -> None:
    torch.manual_seed(1)
    result = compute_cam(ConstantScore(), _image(9, (8, 8)), target=0, method=method)
    assert not np.isnan(result.heatmap).any()
    if method != "eigencam":
        assert result.empty
        assert result.heatmap.max() == 0.0


def test_an_all_negative_map_is_empty() -> None:
    model = GapLinear(channels=1, classes=2)
    with torch.no_grad():
        model.features.weight.fill_(1.0)
        model.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
    x = _image(10)
    neg = compute_cam(model, x, target=0, method="cam")
    assert neg.empty and neg.heatmap.max() == 0.0 and (neg.raw < 0).all()
    assert not compute_cam(model, x, target=1, method="cam").empty


def test_a_map_constant_up_to_float_noise_is_empty_not_stretched() -> None:
    model = GapLinear(channels=1, classes=1)
    with torch.no_grad():
        model.features.weight.fill_(1.0)
        model.fc.weight.fill_(1.0)
    x = torch.full((3, 6, 6), 0.5) + 1e-9 * torch.rand(3, 6, 6)
    assert compute_cam(model, x, target=1, method="cam").empty


def test_a_batch_gives_the_same_maps_as_single_calls() -> None:
    model = GapLinear(channels=5, classes=3, seed=11)
    xs = torch.stack([_image(i, (7, 7)) for i in range(4)])
    batch = compute_cam(model, xs, target=[0, 1, 2, 0])
    assert len(batch) == 4
    for i, r in enumerate(batch):
        single = compute_cam(model, xs[i], target=[0, 1, 2, 0][i])
        np.testing.assert_allclose(r.raw, single.raw, rtol=1e-5, atol=1e-6)
        assert r.target == single.target


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "eigencam"])
def test_a_batch_of_mixed_targets_equals_single_calls(method: str) -> None:
    """Class scores of a batch are gathered in one operation and a repeated class is resolved once: names, plain
    and numpy indices, top-1 (None) and callables, mixed in one batch, give what one call per image gives."""
    names = ["ant", "bee", "cat"]
    model = GapLinear(channels=5, classes=3, seed=21)
    xs = torch.stack([_image(i, (7, 7)) for i in range(9)])
    targets = ["cat", 1, None, np.int64(2), "cat", lambda row: row[0] - row[1], None, "ant", 0]
    batch = compute_cam(model, xs, target=targets, method=method, categories=names)
    for i, r in enumerate(batch):
        single = compute_cam(model, xs[i], target=targets[i], method=method, categories=names)
        np.testing.assert_allclose(r.raw, single.raw, rtol=1e-5, atol=1e-6)
        assert (r.target, r.label) == (single.target, single.label)
        assert r.score == pytest.approx(single.score, rel=1e-6)
    with torch.no_grad():
        logits = model(xs)
    assert [r.target for r in batch] == [2, 1, int(logits[2].argmax()), 2, 2, -1, int(logits[6].argmax()), 0, 0]
    assert batch[5].score == pytest.approx(float(logits[5, 0] - logits[5, 1]), rel=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam", "cam"])
def test_several_targets_for_one_image_equal_separate_calls(method: str) -> None:
    model = GapLinear(channels=5, classes=4, seed=12)
    x = _image(12, (6, 6))
    many = compute_cam(model, x, target=[3, 0, 2], method=method)
    assert [r.target for r in many] == [3, 0, 2]
    for r in many:
        np.testing.assert_allclose(r.raw, compute_cam(model, x, target=r.target, method=method).raw, rtol=1e-4,
                                   atol=1e-6)


@pytest.mark.parametrize("batched_backward", [True, False])
def test_many_targets_on_one_image_share_a_batched_backward_with_the_same_maps(monkeypatch: pytest.MonkeyPatch,
                                                                               batched_backward: bool) -> None:
    """20 targets span two blocks of batched backward passes; with the batched backward refused (an operator
    without a batching rule) the one-backward-per-target fallback gives the same maps."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=20).eval()
    x = _image(5, (64, 64))
    singles = [compute_cam(model, x, target=c, layer="layer3") for c in range(20)]
    calls: list[bool] = []
    grad = torch.autograd.grad

    def spy(*args: object, is_grads_batched: bool = False, **kwargs: object) -> object:
        calls.append(is_grads_batched)
        if is_grads_batched and not batched_backward:
            raise RuntimeError("Batching rule not implemented for this operator")
        return grad(*args, is_grads_batched=is_grads_batched, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    many = compute_cam(model, x, target=list(range(20)), layer="layer3")
    assert calls.count(True) == 2 and calls.count(False) == (0 if batched_backward else 20)
    for r, single in zip(many, singles):
        np.testing.assert_allclose(r.raw, single.raw, rtol=1e-4, atol=1e-5 * np.abs(single.raw).max())
        assert r.target == single.target


def test_class_names_resolve_through_categories() -> None:
    model = GapLinear(classes=3)
    r = compute_cam(model, _image(), target="Tiger Cat", categories=["dog", "tiger cat", "fish"])
    assert (r.target, r.label) == (1, "tiger cat")
    assert [t[0] for t in r.top] == sorted(range(3), key=lambda c: -r.top[[t[0] for t in r.top].index(c)][2])


def test_top1_target_and_probability() -> None:
    model = GapLinear(classes=4, seed=13)
    x = _image(13)
    r = compute_cam(model, x)
    with torch.no_grad():
        logits = model(x[None])[0]
    assert r.target == int(logits.argmax())
    assert r.probability == pytest.approx(float(torch.softmax(logits, 0).max()), rel=1e-5)
    assert r.score == pytest.approx(float(logits.max()), rel=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_each_result_of_a_batch_has_its_own_image_top_classes_and_probability(method: str) -> None:
    model = GapLinear(classes=6, seed=16)
    x = torch.stack([_image(s) for s in range(4)])
    targets = [5, 0, None, 3]
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    for i, r in enumerate(compute_cam(model, x, target=targets, method=method)):
        expected = int(probs[i].argmax()) if targets[i] is None else targets[i]
        assert r.target == expected
        assert r.probability == pytest.approx(float(probs[i, expected]), rel=1e-5)
        values, classes = probs[i].topk(5)
        assert [c for c, _, _ in r.top] == classes.tolist()
        assert [p for _, _, p in r.top] == pytest.approx(values.tolist(), rel=1e-5)
    several = compute_cam(model, x[1], target=[2, 4], method=method)
    assert [r.probability for r in several] == pytest.approx([float(probs[1, 2]), float(probs[1, 4])], rel=1e-5)
    assert several[0].top == several[1].top


def test_callable_target_and_dict_outputs() -> None:
    class Seg(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> dict:
            return {"out": self.features(x)}

    torch.manual_seed(2)
    model = Seg()
    x = _image(14, (6, 8))
    r = compute_cam(model, x, target=lambda out: out[1].sum(), layer="features", method="hirescam")
    with torch.no_grad():
        acts = model.features(x[None])[0]
    np.testing.assert_allclose(r.raw, acts[1].numpy(), rtol=1e-5)  # dScore/dA is 1 on channel 1, 0 on channel 0
    assert r.label is None and r.probability is None


def test_models_returning_tuples_or_logits_objects() -> None:
    base = GapLinear(seed=15)

    class Tuple(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = base

        def forward(self, x: torch.Tensor) -> tuple:
            return self.net(x), torch.zeros(1)

    class Obj(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = base

        def forward(self, x: torch.Tensor) -> object:
            return type("Out", (), {"logits": self.net(x)})()

    x = _image(15)
    ref = compute_cam(base, x, target=2).raw
    np.testing.assert_allclose(compute_cam(Tuple(), x, target=2).raw, ref, rtol=1e-6)
    np.testing.assert_allclose(compute_cam(Obj(), x, target=2).raw, ref, rtol=1e-6)


class _LayoutSensitive(torch.nn.Module):
    """A model whose logits read the feature map's raw storage (``as_strided``), so a channels-last input gives
    different numbers; ``view_after_conv`` instead fails on channels-last input (``.view`` needs contiguity)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(6 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.mode == "view":
            return self.fc(f.view(f.shape[0], -1))
        flat = f.as_strided((f.shape[0], 6 * 8 * 8), (6 * 8 * 8, 1))
        return self.fc(flat)


def _masked_layouts(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module, x: torch.Tensor,
                    layer: str = "features") -> tuple[set, object]:
    from pytest_camcheck.engine import evidence

    seen: set = set()
    forward = evidence._forward

    def spy(m: torch.nn.Module, inp: torch.Tensor) -> object:
        if inp.shape[0] > 1:
            seen.add("channels_last" if inp.is_contiguous(memory_format=torch.channels_last)
                     and not inp.is_contiguous() else "contiguous")
        return forward(m, inp)

    monkeypatch.setattr(evidence, "_forward", spy)
    return seen, compute_cam(model, x, target=1, method="scorecam", layer=layer)


@pytest.mark.parametrize("mode", ["view", "storage"])
def test_scorecam_keeps_the_contiguous_layout_for_models_that_need_it(monkeypatch: pytest.MonkeyPatch,
                                                                      mode: str) -> None:
    model = _LayoutSensitive(mode).eval()
    x = _image(2, (8, 8))
    seen, result = _masked_layouts(monkeypatch, model, x)
    assert seen == {"contiguous"}
    np.testing.assert_allclose(result.raw, _scorecam_reference(model, x, 1), rtol=1e-4, atol=1e-6)


def test_scorecam_runs_the_masked_forwards_channels_last_when_the_model_allows_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = _image(3, (64, 64))
    seen, fast = _masked_layouts(monkeypatch, model, x, "layer3")
    assert seen == {"channels_last"}
    from pytest_camcheck.engine import evidence

    monkeypatch.setattr(evidence, "_fast_layout", lambda *a: torch.contiguous_format)
    slow = compute_cam(model, x, target=1, method="scorecam", layer="layer3")
    np.testing.assert_allclose(fast.raw, slow.raw, rtol=1e-4, atol=1e-6 * np.abs(slow.raw).max())


def test_ablation_gives_the_same_map_in_one_batch_or_many(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    from pytest_camcheck.engine import evidence

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = _image(7, (64, 64))
    one_batch = compute_cam(model, x, target=2, method="ablationcam")
    calls: list[int] = []
    suffix = evidence._suffix_forward
    monkeypatch.setattr(evidence, "_suffix_forward", lambda run, x1, a: calls.append(a.shape[0]) or suffix(run, x1, a))
    monkeypatch.setattr(evidence, "ABLATION_BYTES", 1)  # forces batches of CHUNK channels
    many = compute_cam(model, x, target=2, method="ablationcam")
    assert len(calls) == 512 // evidence.CHUNK and max(calls) == evidence.CHUNK
    np.testing.assert_allclose(many.raw, one_batch.raw, rtol=1e-4, atol=1e-6 * np.abs(one_batch.raw).max())


def test_normalise_spans_zero_to_one_flags_empty_rows_and_refuses_non_finite_maps() -> None:
    """One batch holding a normal map, an all-negative one, a constant one and one constant up to float noise:
    the normal map spans exactly [0, 1], the others are exact zeros and flagged; NaN or inf anywhere is an error."""
    from pytest_camcheck.engine.core import _normalise
    from pytest_camcheck.errors import CamCheckError

    raw = torch.tensor([
        [[-1.0, 0.5], [2.0, 1.0]],
        [[-1.0, -2.0], [-0.5, -3.0]],
        [[0.7, 0.7], [0.7, 0.7]],
        [[1.0, 1.0 + 1e-7], [1.0, 1.0]],
    ])
    norm, empty = _normalise(raw)
    assert empty == [False, True, True, True]
    assert norm[0].max().item() == 1.0 and norm[0].min().item() == 0.0
    expected = torch.relu(raw[0]) / 2.0
    assert torch.equal(norm[0], expected)
    assert torch.count_nonzero(norm[1:]).item() == 0
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = raw.clone()
        broken[2, 1, 0] = bad
        with pytest.raises(CamCheckError, match="NaN or infinite"):
            _normalise(broken)


@pytest.mark.parametrize("method", ["gradcam", "cam", "eigencam"])
def test_a_float64_model_reports_its_scores_in_full_precision(method: str) -> None:
    """Scores come back as Python floats of the model's own precision, not rounded through float32; a callable
    returning a plain number sits in the same batch as class scores."""
    model = GapLinear(channels=5, classes=3, seed=23).double()
    xs = torch.stack([_image(i, (7, 7)) for i in range(3)]).double()
    with torch.no_grad():
        logits = model(xs)
    results = compute_cam(model, xs, target=[0, 2, 1], method=method)
    assert [r.score for r in results] == logits[[0, 1, 2], [0, 2, 1]].tolist()
    if method == "eigencam":  # a plain number has no gradient, and CAM explains class logits only
        mixed = compute_cam(model, xs[0], target=[1, lambda row: float(row[1])], method=method)
        assert mixed[0].score == mixed[1].score == logits[0, 1].item()
