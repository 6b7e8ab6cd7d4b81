"""Explanation-quality checks at their edges: maps judged on the pixels the model saw (a centre crop),
seeded randomisation from several threads, EXIF orientation with ``heatmap=``, inference mode, the empty-map and
internal-batch messages, refusals instead of tracebacks, the failure picture's size, the noise's dtype."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageOps
from torch import nn

from pytest_camcheck import (CamCheckError, assert_faithful, assert_stable, compute_cam, context, geometry_neutral,
                             quality)
from pytest_camcheck.errors import InputError, TargetError
from pytest_camcheck.scenes import make_scene

from .test_quality import SEEDS, shapes  # noqa: F401 - the module's bundled-model fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NORM = [T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)]


def _tiny(classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()


@pytest.fixture(scope="module")
def banded() -> tuple:
    """A held-out scene, the same scene between grey side bands (40% of the wider picture), and the
    preprocessings that show the model exactly the scene's pixels from either."""
    s = make_scene(SEEDS[0])
    h, w = s.image.shape[:2]
    pad = round(w * 0.4 / 0.6 / 2)
    canvas = np.full((h, w + 2 * pad, 3), 128, np.uint8)
    canvas[:, pad:pad + w] = s.image
    plain = T.Compose([T.Resize((112, 112))] + NORM)
    crop = T.Compose([T.CenterCrop((h, w)), T.Resize((112, 112))] + NORM)
    return s, canvas, plain, crop, (slice(0, h), slice(pad, pad + w))


# ------------------------------------------------------------------------- 1. only the pixels the model saw

def test_the_seen_box_of_a_centre_crop_is_its_rectangle(shapes: nn.Module, banded: tuple) -> None:
    s, canvas, _, crop, box = banded
    geometry = quality.compute_cam(shapes, canvas, s.name, preprocess=crop).geometry
    assert quality._seen_box(geometry, canvas.shape[:2]) == box
    assert quality._seen_box(None, (5, 7)) == (slice(0, 5), slice(0, 7))
    m = np.zeros((5, 7), np.float32)
    assert quality._seen_part(m, (slice(0, 5), slice(0, 7))) is m  # all seen: the map itself, not a copy


def test_faithfulness_through_a_crop_is_the_check_on_the_seen_pixels(shapes: nn.Module, banded: tuple) -> None:
    """A pure-noise map that is 0 on the unseen bands (as every computed map is) is judged as the same noise on the
    pre-cropped scene: before, the random orderings wasted their steps on unseen pixels and the noise "won"."""
    s, canvas, plain, crop, box = banded
    noise = np.random.default_rng(3).random(s.image.shape[:2])
    wide = np.zeros(canvas.shape[:2])
    wide[box] = noise
    for metric in ("deletion", "insertion"):
        kw = dict(steps=5, orderings=3, baseline="zero", metric=metric)  # the same baseline pixels in both
        a = quality.faithfulness(shapes, s.image, s.name, heatmap=noise, preprocess=plain, **kw)
        b = quality.faithfulness(shapes, canvas, s.name, heatmap=wide, preprocess=crop, **kw)
        assert b.curve == pytest.approx(a.curve, abs=1e-5)
        assert b.random_aucs == pytest.approx(a.random_aucs, abs=1e-5)
        assert b.gain == pytest.approx(a.gain, abs=1e-5) and b.passed == a.passed
        assert b.ranked == a.ranked and b.pixels == noise.size
    assert "the model saw only" in "\n".join(quality._faithful_message(b))


def test_a_flat_map_through_a_crop_counts_the_seen_pixels(shapes: nn.Module, banded: tuple) -> None:
    s, canvas, _, crop, box = banded
    sparse = np.zeros(canvas.shape[:2])
    sparse[box][:2, :2] = 1.0  # 4 ranked pixels, fewer than one step of the seen part
    r = quality.faithfulness(shapes, canvas, s.name, heatmap=sparse, preprocess=crop, steps=5, orderings=2)
    assert r.ranked == 4 and r.flat and not r.passed


def test_sanity_through_a_crop_is_the_check_on_the_seen_pixels(shapes: nn.Module, banded: tuple) -> None:
    s, canvas, plain, crop, box = banded
    a = quality.sanity(shapes, s.image, s.name, preprocess=plain)
    b = quality.sanity(shapes, canvas, s.name, preprocess=crop)
    assert [c.spearman for c in b.curve] == pytest.approx([c.spearman for c in a.curve], abs=1e-3)
    assert [c.ssim for c in b.curve] == pytest.approx([c.ssim for c in a.curve], abs=1e-3)
    assert b.passed == a.passed


def test_stability_through_a_crop_measures_the_seen_pixels(shapes: nn.Module, banded: tuple) -> None:
    s, canvas, _, crop, box = banded
    r = quality.stability(shapes, canvas, s.name, preprocess=crop, noise=0.15, samples=2)
    clean = r.clean.heatmap[box]
    assert r.ssims == [quality.map_similarity_ssim(clean, p.heatmap[box]) for p in r.perturbed]
    change = max(float(np.linalg.norm(p.heatmap[box].astype(np.float64) - clean)) for p in r.perturbed)
    assert r.sensitivity == pytest.approx(change / float(np.linalg.norm(clean.astype(np.float64))), rel=1e-9)
    assert r.similarity == min(r.ssims)


def test_maps_seen_whole_give_the_whole_map_numbers(shapes: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """No crop: exactly the numbers of the whole maps (the formulas from before the seen-part change)."""
    s = make_scene(SEEDS[1])
    r = quality.sanity(shapes, s.image, s.name)
    ranks = quality._average_ranks(r.maps[0])
    assert [tuple(c[2:]) for c in r.curve[1:]] == [quality._similarity(r.maps[0], ranks, m) for m in r.maps[1:]]
    st = quality.stability(shapes, s.image, s.name, samples=2)
    assert st.ssims == [quality.map_similarity_ssim(st.clean.heatmap, p.heatmap) for p in st.perturbed]
    seen: list = []
    real = quality._curve_probabilities
    monkeypatch.setattr(quality, "_curve_probabilities", lambda *a: seen.append(a[2].clone()) or real(*a))
    f = quality.faithfulness(shapes, s.image, s.name, steps=4, orderings=2, seed=5)
    h = f.heatmap
    rng = np.random.default_rng(5)
    ranks = np.stack([quality._ranks(h, rng)] + [rng.permutation(h.size).reshape(h.shape) for _ in range(2)])
    counts = torch.tensor([round(k * h.size / 4) for k in range(1, 4)])[None, :, None, None]
    assert torch.equal(seen[0], (torch.from_numpy(ranks)[:, None] < counts).reshape(-1, *h.shape))
    assert f.ranked == int(np.count_nonzero(h > h.min())) and f.pixels == h.size


# ------------------------------------------------------------------------------ 2. threads and the global RNG

class _SlowInit(nn.Module):
    """A convolution whose re-initialisation pauses between its draws, so that calls in threads overlap there."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.zeros(8))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.3)
        time.sleep(0.02)
        nn.init.normal_(self.bias, std=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, self.bias, padding=1)


def test_sanity_in_threads_is_seeded_and_leaves_the_rng_as_it_was() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(_SlowInit(), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    x = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))
    alone = [c.spearman for c in quality.sanity(model, x, 1, seed=3).curve]
    torch.manual_seed(123)
    state = torch.get_rng_state().clone()
    out: dict = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, quality.sanity(model, x, 1, seed=3)))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(torch.get_rng_state(), state)
    assert all([c.spearman for c in out[i].curve] == alone for i in range(4))


def test_a_reset_parameters_that_runs_a_check_itself_does_not_deadlock() -> None:
    """The lock around the seeded re-initialisation is reentrant: a module whose own reset_parameters calls a
    check (nested sanity) finishes instead of waiting on itself."""
    import threading

    inner_model, x = _tiny(), torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))

    class Nesting(nn.Linear):
        def reset_parameters(self) -> None:
            super().reset_parameters()
            if getattr(self, "armed", False):
                quality.sanity(inner_model, x, 1)

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.extra = _tiny(), Nesting(2, 2)  # extra is re-initialised by the cascade, never run
            self.extra.armed = True

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.net(t)

    model = Wrapped().eval()
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(quality.sanity(model, x, 1)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert done, "sanity waited on its own lock"


# ------------------------------------------------------------------------------------ 3. EXIF and heatmap=

def _with_orientation(arr: np.ndarray, orientation: int) -> Image.Image:
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    buf.seek(0)
    return Image.open(buf)


def test_a_given_map_for_a_turned_picture_is_refused_with_the_fix() -> None:
    model = _tiny()
    arr = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)  # square: no shape to tell
    raw = _with_orientation(arr, 6)
    h = np.random.default_rng(1).random((16, 16))
    with pytest.raises(CamCheckError, match=r"EXIF orientation 6.*PIL\.ImageOps\.exif_transpose\(img\)"):
        quality.faithfulness(model, raw, 1, heatmap=h, steps=4)
    upright = ImageOps.exif_transpose(raw)
    assert quality.faithfulness(model, upright, 1, heatmap=h, steps=4).target == 1
    assert quality.faithfulness(model, _with_orientation(arr, 1), 1, heatmap=h, steps=4).target == 1


def test_a_given_map_for_a_turned_non_square_picture_is_taken_in_displayed_pixels() -> None:
    """compute_cam's own map of an EXIF-turned photo is in its displayed pixels; judged as such, not refused. A map
    of the stored pixels' shape, and a flip (the same shape either way), are refused."""
    model = _tiny()
    arr = (np.random.default_rng(0).random((12, 20, 3)) * 255).astype(np.uint8)  # stored 12 x 20
    raw = _with_orientation(arr, 6)  # shown 20 x 12
    own = compute_cam(model, raw, 1)
    assert own.heatmap.shape == (20, 12)
    given = quality.faithfulness(model, raw, 1, heatmap=own.heatmap, steps=4)
    upright = quality.faithfulness(model, ImageOps.exif_transpose(raw), 1, heatmap=own.heatmap, steps=4)
    assert given.auc == upright.auc and given.random_aucs == upright.random_aucs
    with pytest.raises(CamCheckError, match=r"shape \(12, 20\), the picture's stored \(unturned\) pixels.*EXIF "
                                            r"orientation 6.*exif_transpose"):
        quality.faithfulness(model, raw, 1, heatmap=np.random.default_rng(1).random((12, 20)), steps=4)
    with pytest.raises(CamCheckError, match=r"EXIF orientation 3, which flips or half-turns it.*same shape"):
        quality.faithfulness(model, _with_orientation(arr, 3), 1, heatmap=np.zeros((12, 20)), steps=4)


# ------------------------------------------------------------------------------------------ 4. inference mode

def test_sanity_inside_inference_mode_is_the_same_check() -> None:
    model, x = _tiny(), torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    outside = [c.spearman for c in quality.sanity(model, x, 1).curve]
    with torch.inference_mode():
        inside = [c.spearman for c in quality.sanity(model, x, 1).curve]
    assert inside == outside
    with torch.inference_mode():
        built = _tiny()
    with pytest.raises(CamCheckError, match=r"inference tensors.*built or loaded under.*inference_mode"):
        quality.sanity(built, x, 1)


# --------------------------------------------------------------------------------------------- 5. empty map

def test_stability_of_an_empty_map_says_it_cannot_be_judged(tmp_path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 3)).eval()
    with torch.no_grad():
        m[4].weight.fill_(-1.0)
        m[4].weight[0].fill_(1.0)
        m[4].bias.zero_()  # class 1: only negative evidence
    context.set_artifacts_dir(tmp_path)
    try:
        with pytest.raises(AssertionError) as err:
            assert_stable(m, torch.rand(3, 16, 16), 1, samples=2, layer="1")
    finally:
        context.set_artifacts_dir(None)
    text = str(err.value)
    assert "the clean map is EMPTY" in text and "another layer= or method=" in text and "target=None" in text
    assert "MAP is unstable" not in text and " inf" not in text


# ------------------------------------------------------------------------------- 6. refusals, not tracebacks

def test_a_reset_parameters_that_takes_arguments_is_refused_naming_the_module() -> None:
    class MyConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)

        def reset_parameters(self, std: float) -> None:
            nn.init.normal_(self.weight, std=std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(x, self.weight, padding=1)

    torch.manual_seed(0)
    m = nn.Sequential(MyConv(), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 4)).eval()
    before = m[0].weight.detach().clone()
    with pytest.raises(CamCheckError, match=r"module '0' \(MyConv\).*reset_parameters.*defaults"):
        quality.sanity(m, torch.rand(3, 16, 16), 1)
    assert torch.equal(m[0].weight, before)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_odd_heatmap_kinds_are_judged_or_refused() -> None:
    model, x = _tiny(), torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4))
    good = np.random.default_rng(0).random((16, 16))
    a = quality.faithfulness(model, x, 1, steps=4, heatmap=good)
    assert quality.faithfulness(model, x, 1, steps=4, heatmap=np.asmatrix(good)).curve == a.curve
    with pytest.raises(CamCheckError, match=r"sparse.*to_dense"):
        quality.faithfulness(model, x, 1, steps=4, heatmap=torch.from_numpy(good).to_sparse())


def test_a_preprocess_failing_on_a_perturbed_copy_is_an_input_error() -> None:
    model = _tiny()
    pic = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    calls = {"n": 0}

    @geometry_neutral
    def picky(img: Image.Image) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("cannot preprocess this one")
        return T.functional.to_tensor(img)

    with pytest.raises(InputError, match="preprocess failed on a perturbed copy of the image.*cannot preprocess"):
        quality.faithfulness(model, pic, 1, steps=4, preprocess=picky)
    calls["n"] = 0
    with pytest.raises(InputError, match="perturbed copy 1 of the image") as err:
        quality.stability(model, pic, 1, samples=3, preprocess=picky)
    assert "of the batch" not in str(err.value)


# ------------------------------------------------------------------------------------------------ 7. messages

def test_a_nan_baseline_image_names_the_baseline_and_the_fix() -> None:
    pic = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    standardise = T.Compose([T.ToTensor(), geometry_neutral(lambda t: (t - t.mean()) / t.std())])
    with pytest.raises(TargetError, match=r"'zero' baseline.*baseline='blur' or baseline='mean'"):
        quality.faithfulness(_tiny(), pic, 1, steps=4, preprocess=standardise, baseline="zero")


def test_a_one_element_target_tensor_is_one_target_in_every_check() -> None:
    model, x = _tiny(), torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([1])
    assert quality.sanity(model, x, t).curve == quality.sanity(model, x, 1).curve
    assert quality.faithfulness(model, x, t, steps=4).curve == quality.faithfulness(model, x, 1, steps=4).curve
    a, b = quality.stability(model, x, t, samples=2), quality.stability(model, x, 1, samples=2)
    assert a.ssims == b.ssims and a.clean.target == 1


# ------------------------------------------------------------------------------------- 8. the failure picture

def test_the_failure_picture_of_a_very_wide_image_is_bounded(tmp_path) -> None:
    context.set_artifacts_dir(tmp_path)
    try:
        with pytest.raises(AssertionError) as err:
            assert_faithful(_tiny(), torch.rand(3, 3, 600), 1, steps=4, min_gain=1.0)
        with Image.open(str(err.value).split("picture:")[1].strip()) as img:
            assert img.width <= quality.SHEET_WIDTH + 64 and img.height <= 200
        with pytest.raises(AssertionError) as err:  # an ordinary picture keeps its 160 px tiles
            assert_stable(_tiny(), torch.rand(3, 24, 32), 1, samples=2, min_similarity=1.0, noise=0.5)
        with Image.open(str(err.value).split("picture:")[1].strip()) as img:
            assert img.height >= quality.TILE_HEIGHT and img.width > 3 * quality.TILE_HEIGHT
    finally:
        context.set_artifacts_dir(None)


# ---------------------------------------------------------------------------------------- 9. the noise's dtype

def test_the_seeded_noise_does_not_depend_on_the_default_dtype() -> None:
    model, x = _tiny(), torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(6))
    a = quality.stability(model, x, 1, samples=2, noise=0.1).ssims
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        b = quality.stability(model, x, 1, samples=2, noise=0.1).ssims
    finally:
        torch.set_default_dtype(before)
    assert a == b
