"""Work the quality checks share or overlap to cost less, with the same results: the image prepared once for
sanity's copies (``cam_of_copies``), perturbed copies built one chunk ahead in a background thread
(``one_ahead``), and the ranks behind sanity's Spearman."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from scipy.stats import rankdata
from torch import nn

from pytest_camcheck import compute_cam, quality
from pytest_camcheck._ahead import one_ahead
from pytest_camcheck.engine.core import cam_of_copies
from pytest_camcheck.errors import CamCheckError

from .models import SmallCNN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class WritesToItsInput(SmallCNN):
    """A model that scales its input in place before using it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0)
        return super().forward(x)


def _picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 52, 3), dtype=np.uint8))


def test_cam_of_copies_gives_what_compute_cam_gives_for_the_model_and_its_copies() -> None:
    torch.manual_seed(0)
    net = SmallCNN().eval()
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.fc.weight.mul_(-1.0)
    explain = cam_of_copies(net, _picture(), 1, layer="features")
    for model in (net, twin, net):
        expected = compute_cam(model, _picture(), 1, layer="features")
        got = explain(model)
        assert np.array_equal(got.heatmap, expected.heatmap) and got.score == expected.score
        assert got.layer == expected.layer and got.image_size == expected.image_size


def test_each_call_of_cam_of_copies_explains_its_own_copy_of_the_input() -> None:
    torch.manual_seed(0)
    net = WritesToItsInput().eval()
    x = torch.rand(3, 32, 32)
    explain = cam_of_copies(net, x, 0)
    first, second = explain(net), explain(net)
    assert np.array_equal(first.heatmap, second.heatmap) and first.score == second.score
    assert first.score == compute_cam(net, x, 0).score


def test_cam_of_copies_leaves_the_copy_as_it_was_and_keeps_list_results() -> None:
    torch.manual_seed(0)
    net = SmallCNN()  # training mode
    explain = cam_of_copies(net, [torch.rand(3, 24, 24), torch.rand(3, 24, 24)], [0, 1])
    results = explain(net)
    assert isinstance(results, list) and len(results) == 2
    assert all(m.training for m in net.modules())
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())


def test_cam_of_copies_refuses_a_copy_on_another_device() -> None:
    net = SmallCNN().eval()
    explain = cam_of_copies(net, torch.rand(3, 24, 24), 0)
    other = copy.deepcopy(net).to("meta")
    with pytest.raises(CamCheckError):
        explain(other)


def test_one_ahead_keeps_the_order_works_beside_the_caller_and_raises_where_taken() -> None:
    names = []

    def square(n: int) -> int:
        names.append(threading.current_thread().name)
        return n * n

    assert list(one_ahead(square, range(5), "camcheck-test")) == [0, 1, 4, 9, 16]
    assert names and all(n.startswith("camcheck-test") for n in names)
    assert list(one_ahead(square, [], "camcheck-test")) == []

    def fail(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        return n

    got = []
    with pytest.raises(ValueError, match="two"):
        for value in one_ahead(fail, range(4), "camcheck-test"):
            got.append(value)
    assert got == [0, 1]


@pytest.mark.parametrize("kind", ["picture", "tensor"])
@pytest.mark.parametrize("copies", [3, 62, 63, 64, 130])
def test_chunked_curve_equals_one_batch_bit_for_bit(kind: str, copies: int) -> None:
    """Built and run chunk by chunk (the last chunk first), the probabilities are those of the whole batch cut
    into the same chunks."""
    torch.manual_seed(0)
    net = SmallCNN().eval()
    image = _picture(1) if kind == "picture" else torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(1))
    source = quality._Source(net, image, {})
    base = quality._baseline(source, "mean")
    changed = torch.rand((copies, 40, 52), generator=torch.Generator().manual_seed(2)) < 0.5
    got = quality._curve_probabilities(net, source, changed, base, source.pixels, base, 1)
    stack = torch.where(source.masks(changed), base[None], source.pixels[None])
    whole = torch.cat([source.pixels[None], stack, base[None]])
    expected = quality._probabilities(net, source, source.inputs(whole), 1)
    assert got.shape == (copies + 2,) and np.array_equal(got, expected)


def test_average_ranks_are_scipys_average_ranks() -> None:
    rng = np.random.default_rng(0)
    maps = [rng.random((30, 40)), np.round(rng.random((30, 40)), 1), np.maximum(rng.normal(size=(30, 40)), 0),
            np.zeros((5, 5)), rng.normal(size=(30, 40)), np.array([[-0.0, 0.0, -1e-30], [1e-30, -3.0, 2.0]]),
            np.array([[np.inf, -np.inf, 0.0]]), rng.integers(-3, 3, size=(200, 300))]
    for m in maps:
        m = m.astype(np.float32)
        assert np.array_equal(quality._average_ranks(m), rankdata(m.ravel()) - 1)


class _FailsOnBatches(torch.nn.Module):
    """A classifier that raises on any batch of more than one image (the faithfulness curve's forwards)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            raise RuntimeError("boom on a batch")
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_an_error_in_the_curves_forwards_stops_the_background_thread_at_once() -> None:
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    heatmap = np.random.default_rng(1).random((40, 48)).astype(np.float32)
    with pytest.raises(Exception, match="boom on a batch") as caught:  # the traceback is kept, as pytest keeps it
        quality.faithfulness(_FailsOnBatches().eval(), picture, 1, heatmap=heatmap, steps=40)
    assert caught.value is not None
    alive = [t.name for t in threading.enumerate() if t.name.startswith("camcheck-perturb")]
    assert alive == [], alive


def test_a_copy_of_another_dtype_is_refused_with_the_reason() -> None:
    from pytest_camcheck import CamCheckError
    from pytest_camcheck.engine.core import cam_of_copies

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    explain = cam_of_copies(net, torch.rand(3, 32, 32), 1)
    with pytest.raises(CamCheckError, match="in torch.float64.*in torch.float32"):
        explain(copy.deepcopy(net).double())
