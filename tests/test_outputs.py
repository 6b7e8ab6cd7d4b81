"""Which tensor of a model output holds the logits, and which class a name means: refused when ambiguous,
picked explicitly with ``output=``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytest_camcheck import CamCheckError, compute_cam
from pytest_camcheck.engine.targets import find_logits

from .models import SmallCNN


class EmbeddingAndLogits(nn.Module):
    """Returns (embedding, logits), as retrieval or distillation models do: the first tensor is not the logits."""

    def __init__(self, classes: int = 5, dim: int = 12, order: str = "embedding-first", as_dict: bool = False):
        super().__init__()
        self.net = SmallCNN(classes)
        self.embed = nn.Linear(16, dim)
        self.order, self.as_dict = order, as_dict

    def forward(self, x: torch.Tensor):
        feats = self.net.pool(self.net.features(x)).flatten(1)
        emb, logits = self.embed(feats), self.net.fc(feats)
        if self.as_dict:
            return {"embedding": emb, "scores": logits}
        return (emb, logits) if self.order == "embedding-first" else (logits, emb)


def _plain(model: EmbeddingAndLogits) -> nn.Module:
    """The same network returning its logits only: the reference map."""
    return model.net


torch.manual_seed(0)
MODEL = EmbeddingAndLogits().eval()
X = torch.rand(3, 16, 16)
NAMES = ["a", "b", "c", "d", "e"]


def test_two_candidate_tensors_without_class_names_are_refused() -> None:
    with pytest.raises(CamCheckError, match=r"2 tensors that could be the logits \(item 0: \(1, 12\), item 1: "
                                            r"\(1, 5\)\).*output=<index>"):
        compute_cam(MODEL, X, target=3, layer="net.features")


def test_top1_on_an_ambiguous_output_is_refused_too() -> None:
    with pytest.raises(CamCheckError, match="could be the logits"):
        compute_cam(MODEL, X, layer="net.features")


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam"])
def test_the_candidate_with_as_many_columns_as_class_names_is_taken(method: str) -> None:
    got = compute_cam(MODEL, X, target="d", categories=NAMES, method=method, layer="net.features")
    want = compute_cam(_plain(MODEL), X, target=3, method=method, layer="features")
    assert got.target == 3 and got.label == "d"
    assert np.allclose(got.heatmap, want.heatmap, atol=1e-5)
    assert len(got.top) == 5 and got.probability == pytest.approx(want.probability, rel=1e-5)


def test_class_names_matching_no_candidate_are_refused() -> None:
    with pytest.raises(CamCheckError, match="none of them has 7 columns"):
        compute_cam(MODEL, X, target=0, categories=list("abcdefg"), layer="net.features")


@pytest.mark.parametrize("pick", [1, -1, (lambda out: out[1])], ids=["index", "negative index", "callable"])
def test_output_picks_the_logits_explicitly(pick) -> None:
    got = compute_cam(MODEL, X, target=2, layer="net.features", output=pick)
    want = compute_cam(_plain(MODEL), X, target=2, layer="features")
    assert np.allclose(got.heatmap, want.heatmap, atol=1e-6) and got.score == pytest.approx(want.score)


def test_output_picks_a_dict_key() -> None:
    model = EmbeddingAndLogits(as_dict=True).eval()
    got = compute_cam(model, X, target=2, layer="net.features", output="scores")
    want = compute_cam(model.net, X, target=2, layer="features")
    assert np.allclose(got.heatmap, want.heatmap, atol=1e-6)


def test_the_first_item_is_not_taken_just_because_it_comes_first() -> None:
    """(logits, embedding) with known names: the logits are item 0 and are taken; the embedding never is."""
    model = EmbeddingAndLogits(order="logits-first").eval()
    got = compute_cam(model, X, target=1, categories=NAMES, layer="net.features")
    want = compute_cam(model.net, X, target=1, layer="features")
    assert np.allclose(got.heatmap, want.heatmap, atol=1e-6)


@pytest.mark.parametrize("pick,pattern", [
    (5, "out of range: the model returns 2 items"),
    ("logits", "cannot be applied to a model output of type tuple"),
    (lambda out: out.nothing, "failed on the model output.*AttributeError"),
    (lambda out: 3, "returned int, not a tensor"),
    (1.5, "not understood"),
])
def test_a_bad_output_pick_is_refused(pick, pattern: str) -> None:
    with pytest.raises(CamCheckError, match=pattern):
        compute_cam(MODEL, X, target=0, layer="net.features", output=pick)


def test_find_logits_on_the_usual_outputs() -> None:
    t = torch.zeros(2, 4)
    aux = torch.zeros(2, 4)
    assert find_logits(t) is t
    assert find_logits({"out": t, "aux": aux}) is t
    assert find_logits((t, "a caption")) is t
    assert find_logits((t, torch.tensor(0.5))) is t  # a scalar loss next to the logits is no candidate
    assert find_logits({"features": t}) is None
    assert find_logits(object()) is None
    with pytest.raises(CamCheckError, match="several of them have 4 columns"):
        find_logits((t, aux), num_classes=4)


# --- class names -----------------------------------------------------------------------------------------------

SMALL = SmallCNN().eval()


def test_an_exact_name_wins_over_a_case_insensitive_one() -> None:
    names = ["Cross", "b", "c", "d", "cross"]
    assert compute_cam(SMALL, X, target="cross", categories=names, layer="features").target == 4
    assert compute_cam(SMALL, X, target="Cross", categories=names, layer="features").target == 0


def test_case_is_ignored_only_when_that_is_unique() -> None:
    assert compute_cam(SMALL, X, target="B", categories=["a", "b", "c", "d", "e"], layer="features").target == 1
    with pytest.raises(CamCheckError, match=r"matches 2 categories when case is ignored \('Cross' \(index 0\), "
                                            r"'CROSS' \(index 4\)\)"):
        compute_cam(SMALL, X, target="cross", categories=["Cross", "b", "c", "d", "CROSS"], layer="features")


def test_a_name_given_twice_is_refused_when_asked_for() -> None:
    names = ["crane", "b", "crane", "d", "e"]
    with pytest.raises(CamCheckError, match=r"'crane' is given 2 times in the categories \(indices 0, 2\)"):
        compute_cam(SMALL, X, target="crane", categories=names, layer="features")
    assert compute_cam(SMALL, X, target=2, categories=names, layer="features").label == "crane"


@pytest.mark.parametrize("categories,pattern", [
    ("abcde", "categories is a string"),
    ([1, 2, 3, 4, 5], r"item 0 is 1 \(int\) and 4 more"),
    (["a", "b", None, "d", "e"], r"item 2 is None"),
    (5, "not a sequence of class names"),
])
def test_categories_that_are_not_strings_are_refused(categories, pattern: str) -> None:
    with pytest.raises(CamCheckError, match=pattern):
        compute_cam(SMALL, X, target=0, categories=categories, layer="features")
