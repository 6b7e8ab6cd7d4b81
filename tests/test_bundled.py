"""The bundled models: loading, hash check, categories, preprocessing, and the training script."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from pytest_camcheck import bundled, compute_cam
from pytest_camcheck.bundled import (BUNDLED_MODELS, INPUT_SIZE, ShapesViT, bundled_categories, bundled_preprocess,
                                     load_bundled, weights_paths)
from pytest_camcheck.errors import CamCheckError
from pytest_camcheck.scenes import CLASSES, HELD_OUT, make_scene
from pytest_camcheck.train import RECIPES, train_model
from pytest_camcheck.zoo import model_info, sha256_of

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_loads_in_eval_mode_with_categories_and_preprocessing_attached(name: str) -> None:
    model = load_bundled(name)
    assert not model.training and not any(m.training for m in model.modules())
    info = model_info(model)
    assert info.name == name and tuple(info.categories) == bundled_categories(name) == CLASSES
    assert [type(t).__name__ for t in info.preprocess.transforms] == ["Resize", "ToTensor", "Normalize"]
    scene = make_scene(HELD_OUT)
    with torch.no_grad():
        logits = model(info.preprocess(Image.fromarray(scene.image))[None])
    assert logits.shape == (1, len(CLASSES)) and torch.isfinite(logits).all()


def test_preprocessing_is_only_geometry_the_engine_can_invert() -> None:
    prep = bundled_preprocess("camcheck-shapes")
    assert isinstance(prep, transforms.Compose) and prep is not bundled_preprocess("camcheck-shapes")
    assert all(isinstance(t, (transforms.Resize, transforms.CenterCrop, transforms.ToTensor, transforms.Normalize))
               for t in prep.transforms)
    assert prep(Image.new("RGB", (170, 97))).shape == (3, *INPUT_SIZE)


def test_architecture_is_features_then_global_average_pool_then_linear() -> None:
    model = load_bundled("camcheck-shapes")
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d) and isinstance(model.fc, nn.Linear)
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, *INPUT_SIZE))
    assert feats.shape[-2:] == (INPUT_SIZE[0] // 8, INPUT_SIZE[1] // 8) and min(feats.shape[-2:]) >= 12
    scene = make_scene(HELD_OUT + 3)
    cam = compute_cam(model, scene.image, scene.label, method="cam")
    grad = compute_cam(model, scene.image, scene.label, method="gradcam")
    assert cam.layer == grad.layer == "features"
    assert cam.heatmap.shape == scene.image.shape[:2]
    np.testing.assert_allclose(cam.heatmap, grad.heatmap, atol=1e-4)


def test_transformer_is_laid_out_like_a_timm_vision_transformer() -> None:
    model = load_bundled("camcheck-shapes-vit")
    assert isinstance(model, ShapesViT) and (model.global_pool, model.num_prefix_tokens) == ("avg", 1)
    embed = model.patch_embed
    assert (embed.img_size, embed.patch_size, embed.grid_size, embed.num_patches) == (INPUT_SIZE, (8, 8), (14, 14), 196)
    names = dict(model.named_modules())
    assert [n for n in names if n.startswith("blocks.") and n.count(".") == 1] == [f"blocks.{i}" for i in range(4)]
    assert all(f"blocks.3.{part}" in names for part in ("norm1", "attn", "ls1", "norm2", "mlp", "ls2"))
    assert names["blocks.3.ls1"].gamma.shape == (96,)
    seen = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            seen[name] = tuple(output.shape)
        return hook

    hooks = [names[n].register_forward_hook(record(n)) for n in ("patch_embed", "blocks.3", "tokens_to_grid")]
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, *INPUT_SIZE))
    for hook in hooks:
        hook.remove()
    assert seen == {"patch_embed": (2, 196, 96), "blocks.3": (2, 197, 96), "tokens_to_grid": (2, 96, 14, 14)}
    assert logits.shape == (2, len(CLASSES))


def test_transformer_needs_no_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ast.parse(Path(bundled.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "timm" not in imported
    monkeypatch.setitem(sys.modules, "timm", None)  # any import of timm now raises ImportError
    model = load_bundled("camcheck-shapes-vit")
    scene = make_scene(HELD_OUT + 1)
    assert compute_cam(model, scene.image, scene.label).heatmap.shape == scene.image.shape[:2]


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_weights_are_small_float16_and_match_their_recorded_hash(name: str) -> None:
    weights, meta = weights_paths(name)
    assert weights.stat().st_size < (2_000_000 if name == "camcheck-shapes-vit" else 1_000_000)
    record = json.loads(meta.read_text())
    assert record["sha256"] == sha256_of(weights)
    assert record["scenes"] <= HELD_OUT, "training scenes are seeds 0 .. scenes-1, below the held-out seeds"
    state = torch.load(weights, weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert all(p.dtype == torch.float32 for p in load_bundled(name).parameters())


def test_weights_are_read_with_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_bundled("camcheck-shapes")
    assert calls == [True]


@pytest.fixture
def weights_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in BUNDLED_MODELS:
        for path in weights_paths(name):
            shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(bundled, "DATA_DIR", tmp_path)
    return tmp_path


def test_a_modified_weights_file_is_refused(weights_copy: Path) -> None:
    path = weights_copy / "camcheck-shapes.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CamCheckError, match=r"corrupt or was modified.*-m pytest_camcheck\.train --model camcheck-shapes "):
        load_bundled("camcheck-shapes")
    load_bundled("camcheck-shapes-shortcut")


def test_missing_weights_say_how_to_rebuild_them(weights_copy: Path) -> None:
    (weights_copy / "camcheck-shapes-shortcut.pt").unlink()
    with pytest.raises(CamCheckError, match=r"missing.*-m pytest_camcheck\.train --model camcheck-shapes-shortcut"):
        load_bundled("camcheck-shapes-shortcut")


def test_unknown_name_lists_the_bundled_models() -> None:
    for call in (load_bundled, bundled_categories, bundled_preprocess):
        with pytest.raises(CamCheckError, match="camcheck-shapes, camcheck-shapes-shortcut"):
            call("camcheck-shape")


@pytest.mark.parametrize("name", ["camcheck-shapes", "camcheck-shapes-vit"])
def test_training_is_deterministic_given_the_seed(name: str) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        model, _ = train_model(name, epochs=1, scenes=16, seed=seed, log=lambda line: None)
        return list(model.state_dict().values())

    first, again, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_quick_training_run_writes_loadable_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_camcheck.train", "--model", "camcheck-shapes-shortcut", "--out", str(tmp_path),
         "--quick"], cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    weights, meta = weights_paths("camcheck-shapes-shortcut", tmp_path)
    record = json.loads(meta.read_text())
    assert record["sha256"] == sha256_of(weights)
    assert (record["scenes"], record["epochs"], record["mix"]) == (64, 1, [["shortcut", "watermark"]])
    monkeypatch.setattr(bundled, "DATA_DIR", tmp_path)
    model = load_bundled("camcheck-shapes-shortcut")
    assert compute_cam(model, make_scene(HELD_OUT, "shortcut").image).heatmap.ndim == 2


def test_recipes_cover_every_bundled_model() -> None:
    assert set(RECIPES) == set(BUNDLED_MODELS)
    assert {cue for _, cue in RECIPES["camcheck-shapes"].mix} == {"both", "object"}, "the watermark never predicts"
    assert RECIPES["camcheck-shapes-shortcut"].mix == (("shortcut", "watermark"),), "only the watermark predicts"
    assert RECIPES["camcheck-shapes-vit"].mix == RECIPES["camcheck-shapes"].mix, "the transformer sees the same scenes"
    assert RECIPES["camcheck-shapes-vit"].arch == "vit"


def test_deletion_training_replaces_a_share_of_pixels_and_softens_the_target() -> None:
    from pytest_camcheck.train import _deleted

    x = torch.zeros(400, 3, 20, 20, dtype=torch.uint8)
    blurred = torch.full_like(x, 255)
    y = torch.arange(400) % 6
    out, goal = _deleted(x, blurred, y, 0.5, torch.Generator().manual_seed(0))
    gone = (out == 255).float()
    assert torch.equal(gone[:, 0], gone[:, 1]) and torch.equal(gone[:, 0], gone[:, 2])  # whole pixels replaced
    share = gone.mean(dim=(1, 2, 3))
    assert torch.allclose(goal.sum(dim=1), torch.ones(400))
    kept = goal.max(dim=1).values == 1  # a one-hot target: the image is shown as it is
    assert 0.4 < kept.float().mean() < 0.6 and torch.equal(goal[kept].argmax(dim=1), y[kept])
    assert torch.all(share[kept] == 0)
    # the others: the label keeps 1 - f plus its even share f / 6, f being the share of pixels replaced
    f = (1 - goal[torch.arange(400), y]) * 6 / 5
    assert torch.allclose(share[~kept], f[~kept], atol=0.12)
    assert f[~kept].max() > 0.9 and f[~kept].min() < 0.1  # f spans [0, 1]
    assert torch.allclose(goal[~kept].sum(dim=1) - goal[~kept, :].max(dim=1).values,
                          f[~kept] * 5 / 6, atol=1e-6)  # the rest spread evenly: f / 6 on each other class


def test_the_recipes_train_the_clean_models_with_deletion() -> None:
    assert RECIPES["camcheck-shapes"].deletion == RECIPES["camcheck-shapes-vit"].deletion == 0.5
    assert RECIPES["camcheck-shapes-shortcut"].deletion == 0.0  # not retrained: its figures are unchanged
    meta = json.loads(weights_paths("camcheck-shapes")[1].read_text())
    assert meta["deletion"] == 0.5 and meta["epochs"] == RECIPES["camcheck-shapes"].epochs
