"""The model catalogue: registered models, checkpoints read safely, hashes, torchvision weights found offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import GoogLeNet_Weights, ResNet18_Weights, SqueezeNet1_1_Weights, get_model
from torchvision.transforms._presets import ImageClassification

from pytest_camcheck import zoo
from pytest_camcheck.devices import DeviceError
from pytest_camcheck.errors import CamCheckError
from pytest_camcheck.zoo import (
    ModelCache,
    WeightsFile,
    WeightsUnavailable,
    find_weights,
    load_model,
    load_state_dict,
    model_info,
    register_model,
    sha256_of,
)

from .models import TinyClassifier

CATEGORIES = ["cat", "dog", "bird"]


class Opaque:
    """An arbitrary Python object: a weights-only load must refuse it."""


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(zoo, "_REGISTRY", {})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV, raising=False)


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(3)
    state = TinyClassifier().state_dict()
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    return path, state


def published(model: nn.Module, folder: Path, arch: str) -> tuple[Path, str]:
    """Save ``model``'s state dict the way torchvision publishes weights: ``<arch>-<sha256[:8]>.pth``."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / "scratch.pth"
    torch.save(model.state_dict(), scratch)
    digest = sha256_of(scratch)
    path = scratch.rename(folder / f"{arch}-{digest[:8]}.pth")
    return path, f"https://download.pytorch.org/models/{path.name}"


def same_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    found = model.state_dict()
    return found.keys() == state.keys() and all(torch.equal(found[k].cpu(), state[k]) for k in state)


def test_registered_model_is_loaded_from_its_checkpoint(checkpoint: tuple[Path, dict]) -> None:
    path, state = checkpoint
    preprocess = ImageClassification(crop_size=32, resize_size=36)
    register_model("tiny", TinyClassifier, checkpoint=path, categories=CATEGORIES, preprocess=preprocess)
    model = load_model("tiny")
    assert isinstance(model, TinyClassifier) and not model.training
    assert same_weights(model, state)
    assert next(model.parameters()).device == torch.device("cpu")
    info = model_info(model)
    assert (info.name, info.categories, info.preprocess) == ("tiny", ("cat", "dog", "bird"), preprocess)


def test_register_as_a_decorator_returns_the_factory(checkpoint: tuple[Path, dict]) -> None:
    path, state = checkpoint

    @register_model("tiny-deco", checkpoint=str(path), categories=CATEGORIES, sha256=sha256_of(path))
    def make() -> nn.Module:
        return TinyClassifier()

    assert make().__class__ is TinyClassifier
    assert same_weights(load_model("tiny-deco"), state)


def test_registered_without_checkpoint_keeps_the_factory_weights_and_its_info() -> None:
    def make() -> nn.Module:
        net = TinyClassifier()
        zoo.attach_info(net, zoo.ModelInfo(name="inner", categories=("a", "b", "c")))
        return net

    register_model("tiny-plain", make)
    assert model_info(load_model("tiny-plain")).categories == ("a", "b", "c")


def test_duplicate_and_taken_names_need_replace(checkpoint: tuple[Path, dict]) -> None:
    register_model("tiny", TinyClassifier)
    with pytest.raises(CamCheckError, match=r"model name 'tiny' is already taken \(registered\); choose another "
                                            r"name, or pass replace=True"):
        register_model("tiny", TinyClassifier)
    with pytest.raises(CamCheckError, match=r"'resnet18' is already taken \(torchvision\)"):
        register_model("resnet18", TinyClassifier)
    with pytest.raises(CamCheckError, match=r"'camcheck-shapes' is already taken \(bundled\)"):
        register_model("camcheck-shapes", TinyClassifier)
    register_model("tiny", lambda: TinyClassifier(classes=5), replace=True)
    assert load_model("tiny").fc.out_features == 5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sha256": "xyz"}, "sha256='xyz' for model 'bad' is not a hex digest"),
        ({"sha256": "ab12cd34"}, "sha256= for model 'bad' checks the checkpoint file, but no checkpoint= was given"),
        ({"categories": "cat"}, "categories for model 'bad' must be a list of class names"),
    ],
)
def test_bad_registrations_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(CamCheckError) as err:
        register_model("bad", TinyClassifier, **kwargs)
    assert fragment in str(err.value)
    assert "bad" not in zoo._REGISTRY


def test_a_checkpoint_holding_python_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(3, 4), "payload": Opaque()}, path)
    register_model("tiny", TinyClassifier, checkpoint=path)
    with pytest.raises(CamCheckError) as err:
        load_model("tiny")
    message = str(err.value)
    assert f"{path} holds a Python object (" in message and "Opaque" in message
    assert "torch.load(weights_only=True)" in message
    assert "torch.save(model.state_dict(), path)" in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"epoch": 3, "state_dict": {}}, "is not a state dict of tensors (it holds keys ['epoch', 'state_dict'])"),
        ([torch.zeros(1)], "is not a state dict of tensors (it holds list)"),
        (b"not a checkpoint", "holds something that is not a torch checkpoint"),
        (b"hello\n", "cannot be read as a torch checkpoint"),  # torch's legacy reader raised a bare KeyError
        (b"https://example.com/models/clf.pt\n", "cannot be read as a torch checkpoint"),
    ],
)
def test_what_is_not_a_state_dict_is_refused(tmp_path: Path, content: object, fragment: str) -> None:
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CamCheckError) as err:
        load_state_dict(path)
    assert fragment in str(err.value)


def test_sha256_of_a_registered_checkpoint_is_checked(checkpoint: tuple[Path, dict]) -> None:
    path, _ = checkpoint
    actual = sha256_of(path)
    wrong = ("0" if actual[0] != "0" else "1") + actual[1:12]
    register_model("tiny", TinyClassifier, checkpoint=path, sha256=wrong)
    with pytest.raises(CamCheckError) as err:
        load_model("tiny")
    assert str(err.value).startswith(f"{path}: sha256 starts with {actual[:12]}, expected {wrong};")
    assert "update sha256= in register_model('tiny', ...)" in str(err.value)
    register_model("tiny", TinyClassifier, checkpoint=path, sha256=actual.upper(), replace=True)
    assert load_model("tiny") is not None


def test_checkpoint_of_another_architecture_and_missing_checkpoint(tmp_path: Path, checkpoint: tuple) -> None:
    register_model("wide", lambda: TinyClassifier(classes=7), checkpoint=checkpoint[0])
    with pytest.raises(CamCheckError, match=r"does not fit the model built for 'wide': .*size mismatch for fc.weight"):
        load_model("wide")
    register_model("gone", TinyClassifier, checkpoint=tmp_path / "gone.pt")
    with pytest.raises(CamCheckError, match=r"gone.pt of model 'gone' does not exist; fix the path"):
        load_model("gone")


def test_a_factory_must_return_a_module() -> None:
    register_model("not-a-model", lambda: "resnet")
    with pytest.raises(CamCheckError, match=r"the factory registered as 'not-a-model' returned str, not a "
                                            r"torch.nn.Module"):
        load_model("not-a-model")


@pytest.mark.parametrize(
    ("name", "suggested"),
    [("resnet81", "resnet18"), ("our-clasifier", "our-classifier"), ("camcheck-shape", "camcheck-shapes")],
)
def test_unknown_names_suggest_close_matches(name: str, suggested: str) -> None:
    register_model("our-classifier", TinyClassifier)
    with pytest.raises(CamCheckError) as err:
        load_model(name)
    message = str(err.value)
    assert message.startswith(f"unknown model {name!r}; did you mean ")
    assert suggested in message.split("?")[0]
    assert "registered [our-classifier], bundled [camcheck-shapes, camcheck-shapes-shortcut, camcheck-shapes-vit]" in message
    assert "register your model with pytest_camcheck.register_model(name, factory)" in message


def test_a_model_name_must_be_a_string() -> None:
    with pytest.raises(CamCheckError, match=r"a model name is a string such as 'resnet18', not TinyClassifier; .* pass it "
                                            r"to compute_cam directly"):
        load_model(TinyClassifier())  # type: ignore[arg-type]


def test_weights_names_are_checked() -> None:
    with pytest.raises(CamCheckError, match=r"resnet18 has no weights 'IMAGENET1K_V9'; use one of DEFAULT, "
                                            r"IMAGENET1K_V1, or weights=None"):
        load_model("resnet18", weights="IMAGENET1K_V9")
    with pytest.raises(CamCheckError, match=r"resnet18 has no weights 'ResNet50_Weights.IMAGENET1K_V2'"):
        load_model("resnet18", weights="ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(CamCheckError, match=r"VGG16_Weights.IMAGENET1K_FEATURES holds feature-extraction weights"):
        load_model("vgg16", weights="IMAGENET1K_FEATURES")
    register_model("tiny", TinyClassifier)
    with pytest.raises(CamCheckError, match=r"weights= applies to torchvision, timm: and hf: models only; 'tiny'"):
        load_model("tiny", weights=None)


@pytest.mark.parametrize(
    ("url", "name", "prefix"),
    [
        ("https://download.pytorch.org/models/resnet18-f37072fd.pth", "resnet18-f37072fd.pth", "f37072fd"),
        ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "alexnet-owt-7be5be79.pth", "7be5be79"),
        ("https://example.org/w/model.pth?raw=1", "model.pth", None),
    ],
)
def test_weights_file_names(url: str, name: str, prefix: str | None) -> None:
    assert (WeightsFile(url).file_name, WeightsFile(url).sha256_prefix) == (name, prefix)


def test_torchvision_weights_found_in_the_weights_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = get_model("squeezenet1_1")
    path, url = published(source, tmp_path / "weights", "squeezenet1_1")
    monkeypatch.setattr(SqueezeNet1_1_Weights.IMAGENET1K_V1.value, "url", url)
    model = load_model("squeezenet1_1", weights_dir=path.parent, offline=True)
    assert not model.training
    assert same_weights(model, source.state_dict())
    info = model_info(model)
    assert info.name == "squeezenet1_1" and len(info.categories) == 1000 and info.categories[207] == "golden retriever"
    assert isinstance(info.preprocess, ImageClassification) and info.preprocess.crop_size == [224]
    assert "get_state_dict" not in vars(SqueezeNet1_1_Weights.IMAGENET1K_V1)


def test_weights_dir_from_the_environment_and_the_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = get_model("squeezenet1_1")
    path, url = published(source, tmp_path / "env-weights", "squeezenet1_1")
    monkeypatch.setattr(SqueezeNet1_1_Weights.IMAGENET1K_V1.value, "url", url)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(path.parent))
    assert same_weights(load_model("squeezenet1_1", offline=True), source.state_dict())
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV)
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    hub.mkdir(parents=True)
    path.rename(hub / path.name)
    assert same_weights(load_model("squeezenet1_1", offline=True), source.state_dict())


def test_torchvision_builder_adjustments_still_apply(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = get_model("googlenet", aux_logits=True, init_weights=False, transform_input=True)
    path, url = published(source, tmp_path / "weights", "googlenet")
    monkeypatch.setattr(GoogLeNet_Weights.IMAGENET1K_V1.value, "url", url)
    model = load_model("googlenet", weights="IMAGENET1K_V1", weights_dir=path.parent, offline=True)
    assert model.aux1 is None and model.aux2 is None and model.transform_input
    assert torch.equal(model.fc.weight, source.fc.weight)


def test_a_weights_file_with_the_wrong_content_is_a_hash_error(tmp_path: Path) -> None:
    (tmp_path / "resnet18-f37072fd.pth").write_bytes(b"truncated download")
    with pytest.raises(CamCheckError) as err:
        load_model("resnet18", weights_dir=tmp_path, offline=True)
    assert not isinstance(err.value, WeightsUnavailable)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'resnet18-f37072fd.pth'}: sha256 starts with ")
    assert "expected f37072fd" in message
    assert "delete it and download again from https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_missing_weights_offline_say_what_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable) as err:
        load_model("resnet18", weights_dir=tmp_path, offline=True)
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    assert str(err.value) == (
        f"weights file resnet18-f37072fd.pth not found in {tmp_path.resolve()} (weights dir), {hub.resolve()} "
        "(torch hub cache), and offline mode is on (offline=True, --camcheck-offline or CAMCHECK_OFFLINE=1), so it "
        "was not downloaded. Fix: download https://download.pytorch.org/models/resnet18-f37072fd.pth and put "
        f"resnet18-f37072fd.pth in {tmp_path.resolve()}, or set CAMCHECK_WEIGHTS_DIR (--camcheck-weights-dir) to a "
        "folder that holds it"
    )


def test_download_into_the_hub_cache_checks_the_hash(tmp_path: Path) -> None:
    source = tmp_path / "server"
    path, _ = published(nn.Linear(3, 2), source, "linear")
    found = find_weights(WeightsFile(path.as_uri()), timeout=5)
    assert found == Path(torch.hub.get_dir()) / "checkpoints" / path.name
    assert found.read_bytes() == path.read_bytes()

    damaged = source / "linear-00000000.pth"
    damaged.write_bytes(path.read_bytes())
    with pytest.raises(CamCheckError, match=r"download of file://.*linear-00000000.pth: sha256 starts with \w{8}, "
                                            r"expected 00000000;"):
        find_weights(WeightsFile(damaged.as_uri()))
    assert sorted(p.name for p in found.parent.iterdir()) == [path.name]


def test_a_failed_download_makes_the_weights_unavailable(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match=r"and downloading it failed \(URLError: .*\)\. Fix: download "
                                                  r"file://.*/nowhere/net-12345678.pth and put net-12345678.pth in"):
        find_weights(WeightsFile((tmp_path / "nowhere" / "net-12345678.pth").as_uri()))


def test_random_initialisation_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = load_model("resnet18", weights=None)
    assert torch.equal(torch.rand(1), expected_next)
    second = load_model("resnet18", weights=None)
    assert same_weights(second, first.state_dict())
    info = model_info(first)
    assert info.categories == tuple(ResNet18_Weights.DEFAULT.meta["categories"])
    assert isinstance(info.preprocess, ImageClassification) and not first.training


def test_device_is_checked_like_the_option() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the missing-device error cannot happen here")
    with pytest.raises(DeviceError, match=r"device=cuda asked for CUDA, but torch.cuda.is_available\(\) is False"):
        load_model("resnet18", weights=None, device="cuda")
    with pytest.raises(DeviceError, match=r"device=gpu is not a device"):
        load_model("resnet18", weights=None, device="gpu")


def test_model_cache_builds_once_and_remembers_missing_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = ModelCache(device="cpu", weights_dir=tmp_path)
    first = cache.get("resnet18", weights=None)
    first.train()
    assert cache.get("resnet18", weights=None) is first and not first.training
    attempts: list[str] = []

    def no_network(file: WeightsFile, folder: Path, timeout: float) -> Path:
        attempts.append(file.file_name)
        raise OSError("network is unreachable")

    monkeypatch.setattr(zoo, "_download", no_network)
    for _ in range(3):
        with pytest.raises(WeightsUnavailable, match=r"downloading it failed \(OSError: network is unreachable\)"):
            cache.get("resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(WeightsUnavailable):
        cache.get("resnet18")
    assert attempts == ["resnet18-f37072fd.pth"]


def test_bundled_model_is_served() -> None:
    model = load_model("camcheck-shapes")
    assert not model.training
    assert model_info(model).categories[:3] == ("circle", "square", "triangle")


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_a_folder_or_dangling_link_in_place_of_the_weights_file_is_said_so(tmp_path: Path, kind: str) -> None:
    file = zoo.WeightsFile("https://download.pytorch.org/models/resnet18-f37072fd.pth")
    place = tmp_path / "weights"
    place.mkdir()
    if kind == "folder":
        (place / file.file_name).mkdir()
    else:
        (place / file.file_name).symlink_to(tmp_path / "gone.pth")
    words = "is a folder" if kind == "folder" else "is a symbolic link to nothing"
    with pytest.raises(CamCheckError, match=rf"weights file .*resnet18-f37072fd.pth \(in the weights dir\) {words}"):
        zoo.find_weights(file, weights_dir=place, offline=True)  # it had said "not found", though the name is there
