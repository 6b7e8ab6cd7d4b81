"""timm and Hugging Face models: class names, their own preprocessing, fixed input sizes, batches of one, and
``timm:`` / ``hf:`` models read from a local cache laid out as the Hugging Face hub lays it out."""

from __future__ import annotations

import hashlib
import os
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pytest_camcheck import CamCheckError, assert_attends_to, assert_not_attends_to, compute_cam
from pytest_camcheck.errors import InputError, TargetError
from pytest_camcheck.zoo import WeightsUnavailable, load_model, model_info

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
from timm.data import create_transform, resolve_data_config  # noqa: E402
from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor,  # noqa: E402
                          ViTConfig, ViTForImageClassification)

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def picture(size: tuple[int, int] = (48, 64), seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8))


def tiny_convnext(id2label: dict[int, str] | None = LABELS, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3,
                            **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
                               if id2label else {}))
    return ConvNextForImageClassification(config).eval()


def hub_repo(cache: Path, repo: str, source: Path, revision: str = "a" * 40) -> Path:
    """Lay out the files of ``source`` as the Hugging Face hub cache does: blobs named by their hash (sha256 for
    weights, the git blob sha1 for small files), snapshot links to them, refs/main naming the snapshot."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        if file.suffix in (".safetensors", ".bin"):
            name = hashlib.sha256(data).hexdigest()
        else:
            name = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        blob = folder / "blobs" / name
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    return folder


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return cache


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# --- class names -------------------------------------------------------------------------------------------------

def test_hf_class_names_come_from_id2label_unless_generic() -> None:
    model = tiny_convnext()
    assert model_info(model).categories == ("cat", "dog", "bird")
    r = compute_cam(model, picture(), target="dog")
    assert (r.target, r.label) == (1, "dog") and r.heatmap.shape == (48, 64)
    generic = tiny_convnext(id2label=None)
    assert generic.config.id2label[0] == "LABEL_0"
    assert model_info(generic).categories is None
    with pytest.raises(TargetError, match="no class names are known"):
        compute_cam(generic, picture(), target="LABEL_1")


def test_timm_imagenet_models_get_imagenet_names() -> None:
    model = timm.create_model("test_resnet", pretrained=False).eval()
    categories = model_info(model).categories
    assert len(categories) == 1000 and categories[207] == "golden retriever" and categories[0] == "tench"
    r = compute_cam(model, picture((64, 64)), target="golden retriever")
    assert (r.target, r.label) == (207, "golden retriever")
    assert model_info(timm.create_model("test_resnet", pretrained=False, num_classes=21843)).categories[1] == "benthos"
    assert model_info(timm.create_model("test_resnet", pretrained=False, num_classes=10)).categories is None
    model.reset_classifier(10)  # what is remembered for the model follows its head
    assert model_info(model).categories is None


# --- the model's own preprocessing and fixed input sizes ---------------------------------------------------------

def test_a_timm_model_without_preprocess_uses_its_data_config_and_says_so() -> None:
    model = timm.create_model("test_resnet", pretrained=False).eval()
    image = picture((60, 150))
    r = compute_cam(model, image)
    assert r.preprocessing.startswith("timm data config of test_resnet (input 160x160")
    explicit = compute_cam(model, image, preprocess=create_transform(**resolve_data_config({}, model=model)))
    np.testing.assert_array_equal(r.heatmap, explicit.heatmap)
    assert explicit.preprocessing.startswith("given: Compose")
    assert r.heatmap.shape == (60, 150)
    # Resize(168) makes it 168 x 420 and CenterCrop(160) keeps x in [130, 290): original x in [46.4, 103.6)
    assert not r.empty and r.heatmap[:, 47:103].max() > 0.9
    assert r.heatmap[:, :46].max() == 0 and r.heatmap[:, 104:].max() == 0


def test_preprocessing_notes_for_tensors_and_unknown_models() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert compute_cam(net, torch.rand(3, 16, 16), target=0).preprocessing == "none: the tensor is fed as it is"
    assert compute_cam(net, picture(), target=0).preprocessing.startswith("ToTensor only")


def tiny_timm_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                             embed_dim=32, num_heads=2, num_classes=3).eval()


def test_a_timm_vit_given_another_size_is_refused_with_the_fix() -> None:
    model = tiny_timm_vit()
    with pytest.raises(InputError) as err:
        compute_cam(model, torch.rand(3, 48, 48), target=0)
    message = str(err.value)
    assert "takes 32x32 inputs only" in message and "48x48" in message and "dynamic_img_size=True" in message
    with pytest.raises(InputError) as err:  # its data config (224) does not fit its img_size (32)
        compute_cam(model, picture(), target=0)
    assert "resolve_data_config({'input_size': (3, 32, 32)}, model=model)" in str(err.value)
    assert "preprocess=None" not in str(err.value)  # the data config is what failed: it is not offered as the fix


def test_a_hf_vit_given_another_size_is_refused_with_the_fix() -> None:
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, image_size=32, patch_size=8,
                                                num_labels=3)).eval()
    with pytest.raises(InputError, match=r"takes 32x32 inputs only .* Fix: pass its image processor as preprocess="):
        compute_cam(model, torch.rand(3, 40, 40), target=0)


# --- a batch of one, as Hugging Face processors give it ----------------------------------------------------------

class Brightness(nn.Module):
    """Class 0 scores how bright the picture is, class 1 the opposite: Grad-CAM of class 0 is the brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.features.weight.fill_(1.0)
            self.features.bias.zero_()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_pixel_values_of_one_image_are_a_batch_of_one_and_the_assertions_take_them() -> None:
    pixels = torch.zeros(1, 3, 32, 32)
    pixels[0, :, 4:12, 20:28] = 1.0
    model = Brightness().eval()
    results = compute_cam(model, pixels, target=0)
    assert isinstance(results, list) and len(results) == 1
    np.testing.assert_array_equal(results[0].heatmap, compute_cam(model, pixels[0], target=0).heatmap)
    r = assert_attends_to(model, pixels, 0, (20, 4, 28, 12))
    assert r.heatmap.shape == (32, 32)
    assert_not_attends_to(model, pixels, 0, (0, 16, 16, 32))
    with pytest.raises(AssertionError, match="camcheck attends_to failed"):
        assert_attends_to(model, pixels, 0, (0, 16, 16, 32))
    with pytest.raises(CamCheckError, match="one image and one target at a time"):
        assert_attends_to(model, pixels.repeat(2, 1, 1, 1), 0, (20, 4, 28, 12))


def test_compute_cam_overloads_tell_single_from_batch() -> None:
    overloads = typing.get_overloads(compute_cam)
    returns = [typing.get_type_hints(f)["return"] for f in overloads]
    from pytest_camcheck import CamResult

    assert returns[0] is CamResult and list[CamResult] in returns and CamResult | list[CamResult] in returns


# --- hf: and timm: models from the local caches ------------------------------------------------------------------

def saved_hf(tmp_path: Path, with_processor: bool = True) -> tuple[nn.Module, Path]:
    model = tiny_convnext(seed=4)
    source = tmp_path / "saved"
    model.save_pretrained(source)
    if with_processor:
        ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(source)
    return model, source


def test_hf_model_is_served_from_the_hub_cache_with_its_names_and_processor(hub: Path, tmp_path: Path) -> None:
    saved, source = saved_hf(tmp_path)
    hub_repo(hub, "acme/tiny-convnext", source)
    model = load_model("hf:acme/tiny-convnext")
    assert same_weights(model, saved) and not model.training
    info = model_info(model)
    assert info.name == "hf:acme/tiny-convnext" and info.categories == ("cat", "dog", "bird")
    r = compute_cam(model, picture((40, 70)), target="bird")
    assert r.label == "bird" and r.heatmap.shape == (40, 70)
    assert r.preprocessing == "the image processor of acme/tiny-convnext (ConvNextImageProcessor)"
    expected = compute_cam(saved, picture((40, 70)), target=2,
                           preprocess=ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875))
    np.testing.assert_allclose(r.heatmap, expected.heatmap, atol=1e-6)


def test_hf_weights_none_needs_only_the_config_and_missing_files_are_unavailable(hub: Path, tmp_path: Path) -> None:
    saved, source = saved_hf(tmp_path, with_processor=False)
    (source / "model.safetensors").unlink()
    hub_repo(hub, "acme/config-only", source)
    with pytest.raises(WeightsUnavailable, match=r"no weights \(model.safetensors or pytorch_model.bin\) in the hub"):
        load_model("hf:acme/config-only")
    a, b = load_model("hf:acme/config-only", weights=None), load_model("hf:acme/config-only", weights=None)
    assert same_weights(a, b) and not same_weights(a, saved)
    assert model_info(a).categories == ("cat", "dog", "bird") and model_info(a).preprocess is None
    with pytest.raises(WeightsUnavailable, match=r"'acme/absent' has no config.json in the hub cache .*hf download"):
        load_model("hf:acme/absent")


def test_a_damaged_hub_blob_is_refused(hub: Path, tmp_path: Path) -> None:
    _, source = saved_hf(tmp_path)
    folder = hub_repo(hub, "acme/damaged", source)
    blob = (folder / "snapshots" / ("a" * 40) / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(CamCheckError, match="does not match the hash the hub gave it"):
        load_model("hf:acme/damaged")


def test_timm_model_is_served_from_the_hub_cache(hub: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(7)
    trained = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    source = tmp_path / "timm-saved"
    source.mkdir()
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(source / "model.safetensors"))
    hub_repo(hub, "timm/test_resnet.r160_in1k", source)
    model = load_model("timm:test_resnet.r160_in1k")
    assert same_weights(model, trained) and not model.training
    info = model_info(model)
    assert info.name == "timm:test_resnet.r160_in1k" and info.categories[207] == "golden retriever"
    assert compute_cam(model, picture((64, 64))).preprocessing.startswith("timm data config of test_resnet")


def test_timm_weights_none_is_seeded_and_missing_weights_are_unavailable(hub: Path) -> None:
    a, b = load_model("timm:test_resnet", weights=None), load_model("timm:test_resnet", weights=None)
    assert same_weights(a, b)
    with pytest.raises(WeightsUnavailable) as err:
        load_model("timm:test_resnet.r160_in1k")
    assert "hf download timm/test_resnet.r160_in1k" in str(err.value) and str(hub) in str(err.value)
    with pytest.raises(CamCheckError, match="timm has no model 'test_resnot'; did you mean test_resnet"):
        load_model("timm:test_resnot", weights=None)


pytest_plugins = ["pytester"]


def test_the_fixture_skips_a_model_missing_from_the_caches(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_user="""
        def test_hf(camcheck_model):
            camcheck_model("hf:acme/absent")

        def test_timm(camcheck_model):
            camcheck_model("timm:test_resnet.r160_in1k")
    """)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
        mp.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
        result = pytester.runpytest_inprocess("-rs", "-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*acme/absent*no config.json in the hub cache*",
                                 "*weights of timm model 'test_resnet.r160_in1k' not found*"])


def test_a_hub_checkpoint_without_the_classifier_head_is_refused_not_served_with_a_random_one(hub: Path,
                                                                                               tmp_path: Path) -> None:
    from transformers import ViTModel

    torch.manual_seed(0)
    backbone = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  image_size=32, patch_size=8, num_labels=3))  # an -in21k style repo: no head
    source = tmp_path / "backbone"
    backbone.save_pretrained(source)
    hub_repo(hub, "acme/vit-backbone", source)
    with pytest.raises(CamCheckError, match=r"'acme/vit-backbone' lacks 2 of the model's weights \(classifier.bias, "
                                            r"classifier.weight\).*initialise them at random.*register_model"):
        load_model("hf:acme/vit-backbone")


def test_a_truncated_hub_file_without_a_hash_name_is_a_clear_error(hub: Path, tmp_path: Path) -> None:
    """A cache copied without its links (cp -rL) holds plain files, which have no hash to check: a damaged one
    is said in one line, not as transformers' traceback."""
    _, source = saved_hf(tmp_path)
    data = (source / "model.safetensors").read_bytes()
    (source / "model.safetensors").write_bytes(data[:40])
    folder = hub_repo(hub, "acme/truncated", source)
    for link in (folder / "snapshots" / ("a" * 40)).iterdir():
        target = link.resolve()
        link.unlink()
        link.write_bytes(target.read_bytes())  # plain files, as a copied cache has
    with pytest.raises(CamCheckError, match=r"weights of Hugging Face model 'acme/truncated' in the hub cache .* "
                                            r"cannot be read"):
        load_model("hf:acme/truncated")
