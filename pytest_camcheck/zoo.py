"""Model catalogue: torchvision classification models, the bundled models and the user's own, with what
pytest-camcheck knows about each (class names and preprocessing).

Information is kept beside the model (a weak reference). A model served here also carries one small picklable
tag (``_camcheck_served``: how it was made), so that a ``copy.deepcopy`` or a pickle of it finds the same class
names and preprocessing. Models of timm and Hugging Face need nothing attached: :func:`model_info` reads theirs
from the model (:mod:`pytest_camcheck.integrations`), and wrappers (DataParallel, ``torch.compile``) answer for
the module they wrap.

Names are looked up in this order: models registered with :func:`register_model`, the bundled models
(``camcheck-shapes``, ``camcheck-shapes-shortcut``, ``camcheck-shapes-vit``), ``timm:NAME`` and ``hf:REPO`` (from
the local timm / Hugging Face caches only, hash-checked, never downloaded), torchvision classification models
(``resnet18``...).
Published torchvision weights are found by the file name torch.hub gives them (``resnet18-f37072fd.pth``) in
``weights_dir`` (or ``$CAMCHECK_WEIGHTS_DIR``), then in the torch hub cache (``torch.hub.get_dir()/checkpoints``),
else downloaded there unless offline. Every file is read with ``torch.load(weights_only=True)`` and checked
against the sha256 prefix in its name.

Example:
    >>> model = load_model("resnet18", weights=None)  # random initialisation, fixed seed
    >>> model.training, model_info(model).categories[207]
    (False, 'golden retriever')
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import pickle
import re
import threading
import urllib.request
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import torch
from torch import nn

from .devices import Accelerators, select_device
from ._io import atomic_file
from .errors import CamCheckError
from .settings import SETTINGS

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "RANDOM_INIT_SEED",
    "WEIGHTS_DIR_ENV",
    "ModelCache",
    "ModelInfo",
    "WeightsFile",
    "WeightsUnavailable",
    "attach_info",
    "find_weights",
    "load_model",
    "load_state_dict",
    "model_info",
    "register_model",
    "sha256_of",
]

WEIGHTS_DIR_ENV = SETTINGS["weights_dir"].env
DOWNLOAD_TIMEOUT_S = 20.0
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ModelInfo:
    """Class names and preprocessing known for a model.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> attach_info(net, ModelInfo(name="toy", categories=("a", "b")))
        >>> model_info(net).categories
        ('a', 'b')
    """

    name: str | None = None
    categories: Sequence[str] | None = None
    preprocess: Callable | None = None
    preprocess_note: str | None = None


_INFO: "weakref.WeakKeyDictionary[torch.nn.Module, ModelInfo]" = weakref.WeakKeyDictionary()
_SERVED_TAG = "_camcheck_served"
_SERVED: dict[str, ModelInfo] = {}


def attach_info(model: torch.nn.Module, info: ModelInfo) -> None:
    """Remember ``info`` for ``model`` without touching the model object.

    Example:
        >>> import torch
        >>> attach_info(torch.nn.Identity(), ModelInfo(name="id"))
    """
    _INFO[model] = info


def model_info(model: torch.nn.Module) -> ModelInfo | None:
    """What is known about ``model``: what was attached with :func:`attach_info`, else what a served model's tag
    says (copies and pickles of served models), else what timm or transformers say (ImageNet names and the data
    config of a timm model, ``config.id2label`` of a Hugging Face one), else ``None``. A DataParallel or
    ``torch.compile`` wrapper answers for the module it wraps.

    Example:
        >>> import torch
        >>> model_info(torch.nn.Identity()) is None
        True
    """
    from .integrations import library_info, unwrap_model

    model = unwrap_model(model, refuse_script=False)
    found = _INFO.get(model)
    if found is not None:
        return found
    tag = model.__dict__.get(_SERVED_TAG) if isinstance(model, nn.Module) else None
    if isinstance(tag, tuple) and len(tag) == 2:
        found = _SERVED.get(tag[1]) or _info_from_recipe(tag[0])
        if found is not None:
            _INFO[model] = found
            return found
    return library_info(model)


def _serve(model: nn.Module, info: ModelInfo, recipe: tuple) -> nn.Module:
    """Attach ``info`` and tag the model with its recipe (plain strings: a copy or a pickle keeps it)."""
    attach_info(model, info)
    key = uuid.uuid4().hex
    _SERVED[key] = info
    model.__dict__[_SERVED_TAG] = (recipe, key)
    return model


def _info_from_recipe(recipe: tuple) -> ModelInfo | None:
    """The information of a served model rebuilt from its tag's recipe (a pickle loaded in another process)."""
    kind, name = recipe[0], recipe[1]
    if kind == "torchvision":
        from torchvision.models import get_model_weights

        enum = get_model_weights(name)
        described = enum[recipe[2]] if recipe[2] is not None else enum.DEFAULT
        return ModelInfo(name=name, categories=tuple(described.meta["categories"]), preprocess=described.transforms())
    if kind == "bundled":
        from .bundled import bundled_categories, bundled_preprocess

        return ModelInfo(name=name, categories=bundled_categories(name), preprocess=bundled_preprocess(name))
    if kind == "registered" and name in _REGISTRY:
        entry = _REGISTRY[name]
        return ModelInfo(name=name, categories=entry.categories, preprocess=entry.preprocess)
    return None


class WeightsUnavailable(CamCheckError):
    """A weights file is neither on disk nor downloadable now (offline, or the download failed).

    The pytest fixture ``camcheck_model`` turns it into a skip with the same message.
    """


@dataclass(frozen=True)
class WeightsFile:
    """A published weights file: its URL, the file name torch.hub stores it under, and the sha256 prefix that
    name carries (the hex after the last ``-``).

    Example:
        >>> f = WeightsFile("https://download.pytorch.org/models/resnet18-f37072fd.pth")
        >>> f.file_name, f.sha256_prefix
        ('resnet18-f37072fd.pth', 'f37072fd')
    """

    url: str

    @property
    def file_name(self) -> str:
        """The last part of the URL's path, as torch.hub names the cached file."""
        return os.path.basename(urlsplit(self.url).path)

    @property
    def sha256_prefix(self) -> str | None:
        """The hex after the last ``-`` of the file name, or ``None`` when the name carries no hash."""
        match = re.search(r"-([0-9a-f]{6,})\.[^-]*$", self.file_name)
        return match.group(1) if match else None


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     sha256_of(f.name)[:8]
        'e3b0c442'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(actual: str, expected: str, where: str, fix: str) -> None:
    if not actual.startswith(expected):
        raise CamCheckError(
            f"{where}: sha256 starts with {actual[:len(expected)]}, expected {expected}; the file is incomplete, "
            f"damaged or not the one expected. Fix: {fix}"
        )


def _default_weights_dir(weights_dir: str | os.PathLike | None) -> Path | None:
    if weights_dir is None:
        weights_dir = os.environ.get(WEIGHTS_DIR_ENV) or None
    if weights_dir is None:
        return None
    folder = Path(weights_dir).expanduser()
    if not folder.is_dir():
        raise CamCheckError(
            f"weights folder {folder.resolve()} does not exist; create it and put the weights files there, or "
            f"name another folder (weights_dir=, --camcheck-weights-dir, {WEIGHTS_DIR_ENV})"
        )
    return folder


def find_weights(
    file: WeightsFile,
    *,
    weights_dir: str | os.PathLike | None = None,
    offline: bool = False,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Path of a published weights file, its hash checked: ``weights_dir`` (default ``$CAMCHECK_WEIGHTS_DIR``)
    first, then the torch hub cache; otherwise downloaded into the hub cache unless ``offline``.

    Raises :class:`WeightsUnavailable` when the file is not there and cannot be downloaded, and
    :class:`CamCheckError` when a file with that name has the wrong hash.

    Example:
        >>> f = WeightsFile("https://download.pytorch.org/models/resnet18-f37072fd.pth")
        >>> try:
        ...     find_weights(f, offline=True)
        ... except WeightsUnavailable as err:
        ...     "resnet18-f37072fd.pth" in str(err)
        True
    """
    folder = _default_weights_dir(weights_dir)
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    places = ([(folder, "weights dir")] if folder is not None else []) + [(hub, "torch hub cache")]
    redownload = f"delete it and download again from {file.url}"
    for place, what in places:
        path = place / file.file_name
        if not path.is_file() and os.path.lexists(path):  # there, but not a file to read
            if path.is_dir():
                kind = "a folder"
            elif not path.exists():
                kind = f"a symbolic link to nothing ({os.readlink(path)!r})"
            else:
                kind = "not a regular file"
            raise CamCheckError(f"the weights file {path} (in the {what}) is {kind}, not the file {file.url} "
                                f"publishes. Fix: remove it and put the downloaded {file.file_name} there")
        if path.is_file():
            if file.sha256_prefix is not None:
                _check_hash(sha256_of(path), file.sha256_prefix, str(path), redownload)
            return path
    if offline:
        reason = "offline mode is on (offline=True, --camcheck-offline or CAMCHECK_OFFLINE=1), so it was not downloaded"
    else:
        try:
            return _download(file, hub, timeout)
        except (OSError, http.client.HTTPException) as err:
            reason = f"downloading it failed ({type(err).__name__}: {err})"
    searched = ", ".join(f"{place.resolve()} ({what})" for place, what in places)
    raise WeightsUnavailable(
        f"weights file {file.file_name} not found in {searched}, and {reason}. Fix: download {file.url} and put "
        f"{file.file_name} in {places[0][0].resolve()}, or set {WEIGHTS_DIR_ENV} (--camcheck-weights-dir) to a folder that holds it"
    )


def _download(file: WeightsFile, folder: Path, timeout: float) -> Path:
    target = folder / file.file_name
    digest = hashlib.sha256()
    request = urllib.request.Request(file.url, headers={"User-Agent": "torch.hub"})
    with atomic_file(target) as out, urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            digest.update(chunk)
        if file.sha256_prefix is not None:
            _check_hash(digest.hexdigest(), file.sha256_prefix, f"download of {file.url}",
                        "download it again; if this repeats, a proxy is altering the file: fetch it by other means")
    return target


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True, map_location="cpu")``: a checkpoint can never
    run code. Anything but a mapping of names to tensors is refused with a :class:`CamCheckError`.

    Example:
        >>> import tempfile, torch
        >>> with tempfile.TemporaryDirectory() as d:
        ...     torch.save(torch.nn.Linear(2, 1).state_dict(), f"{d}/lin.pt")
        ...     sorted(load_state_dict(f"{d}/lin.pt"))
        ['bias', 'weight']
    """
    if Path(path).is_dir():
        raise CamCheckError(f"{path} is a folder, not a checkpoint file. Fix: pass the path of the state dict file "
                            "inside it (saved with torch.save(model.state_dict(), path))")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"a Python object ({blocked.group(1)})" if blocked else "something that is not a torch checkpoint"
        raise CamCheckError(
            f"{path} holds {what}; pytest-camcheck reads checkpoints with torch.load(weights_only=True) so that a "
            "file cannot run code. Fix: save only tensors, torch.save(model.state_dict(), path)"
        ) from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:  # KeyError: torch's legacy reader on text
        raise CamCheckError(
            f"{path} cannot be read as a torch checkpoint ({type(err).__name__}: {err}). "
            "Fix: save it with torch.save(model.state_dict(), path)"
        ) from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = f"keys {sorted(map(str, state))[:6]}" if isinstance(state, Mapping) else type(state).__name__
        raise CamCheckError(
            f"{path} is not a state dict of tensors (it holds {found}). Fix: save torch.save(model.state_dict(), path)"
        )
    return dict(state)


@dataclass(frozen=True, eq=False)
class _Registered:
    name: str
    factory: Callable[[], nn.Module]
    checkpoint: Path | None
    preprocess: Callable | None
    categories: tuple[str, ...] | None
    sha256: str | None


_REGISTRY: dict[str, _Registered] = {}


def _torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def _bundled_names() -> tuple[str, ...]:
    from .bundled import BUNDLED_MODELS

    return BUNDLED_MODELS


def register_model(
    name: str,
    factory: Callable[[], nn.Module] | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    preprocess: Callable | None = None,
    categories: Sequence[str] | None = None,
    sha256: str | None = None,
    replace: bool = False,
) -> Any:
    """Make ``camcheck_model(name)`` / :func:`load_model` serve your own model.

    ``factory`` takes no argument and returns the ``nn.Module``; ``checkpoint`` (a state dict file, relative
    paths from the current directory, so prefer ``Path(__file__).parent / "model.pt"``) is loaded into it with
    ``weights_only=True``, its hash checked when ``sha256`` (the hex digest, or its first 8+ characters) is
    given. ``categories`` and ``preprocess`` are attached so that ``compute_cam`` needs neither. A name already
    taken (registered, bundled or torchvision) is an error unless ``replace=True``. Without ``factory`` it
    returns a decorator.

    Example:
        >>> import torch
        >>> @register_model("doc-toy", categories=["no", "yes"], replace=True)
        ... def toy() -> torch.nn.Module:
        ...     return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> model_info(load_model("doc-toy")).categories
        ('no', 'yes')
    """
    if factory is None:
        return lambda f: register_model(name, f, checkpoint=checkpoint, preprocess=preprocess,
                                        categories=categories, sha256=sha256, replace=replace)
    if not isinstance(name, str) or not name.strip():
        raise CamCheckError(f"model name must be a non-empty string, not {name!r}")
    if not callable(factory):
        raise CamCheckError(f"register_model({name!r}, ...) needs a factory: a function returning the nn.Module, "
                            f"not {type(factory).__name__}")
    if sha256 is not None:
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", sha256):
            raise CamCheckError(f"sha256={sha256!r} for model {name!r} is not a hex digest; give the 64 hex characters "
                                "of sha256 (or at least their first 8), e.g. from `sha256sum model.pt`")
        if checkpoint is None:
            raise CamCheckError(f"sha256= for model {name!r} checks the checkpoint file, but no checkpoint= was given")
    if categories is not None and (isinstance(categories, str) or not all(isinstance(c, str) for c in categories)):
        raise CamCheckError(f"categories for model {name!r} must be a list of class names (strings), one per output")
    if not replace:
        taken = ("registered" if name in _REGISTRY else "bundled" if name in _bundled_names()
                 else "torchvision" if name in _torchvision_names() else None)
        if taken:
            raise CamCheckError(f"model name {name!r} is already taken ({taken}); choose another name, or pass "
                                "replace=True to serve this model under that name")
    _REGISTRY[name] = _Registered(
        name=name,
        factory=factory,
        checkpoint=Path(checkpoint).expanduser().absolute() if checkpoint is not None else None,
        preprocess=preprocess,
        categories=tuple(categories) if categories is not None else None,
        sha256=sha256,
    )
    return factory


def _build_registered(entry: _Registered, device: torch.device) -> nn.Module:
    model = entry.factory()
    if not isinstance(model, nn.Module):
        raise CamCheckError(f"the factory registered as {entry.name!r} returned {type(model).__name__}, not a "
                            "torch.nn.Module; make it return the model")
    if entry.checkpoint is not None:
        if entry.checkpoint.is_dir():
            raise CamCheckError(f"checkpoint {entry.checkpoint} of model {entry.name!r} is a folder, not a file; "
                                "give register_model the path of the state dict file inside it (e.g. "
                                f"{entry.checkpoint / 'model.pt'})")
        if not entry.checkpoint.is_file():
            raise CamCheckError(f"checkpoint {entry.checkpoint} of model {entry.name!r} does not exist; fix the path "
                                "given to register_model (e.g. Path(__file__).parent / 'model.pt' in conftest.py)")
        if entry.sha256 is not None:
            _check_hash(sha256_of(entry.checkpoint), entry.sha256, str(entry.checkpoint),
                        f"save the checkpoint again, or update sha256= in register_model({entry.name!r}, ...)")
        try:
            model.load_state_dict(load_state_dict(entry.checkpoint))
        except RuntimeError as err:
            problems = "; ".join(line.strip().rstrip(".") for line in str(err).splitlines()[1:])
            raise CamCheckError(
                f"checkpoint {entry.checkpoint} does not fit the model built for {entry.name!r}: "
                f"{problems[:600]}. Fix: save the state_dict of the same architecture as the factory builds"
            ) from err
    known = model_info(model) or ModelInfo()
    _serve(model, ModelInfo(
        name=entry.name,
        categories=entry.categories if entry.categories is not None else known.categories,
        preprocess=entry.preprocess if entry.preprocess is not None else known.preprocess,
        preprocess_note=None if entry.preprocess is not None else known.preprocess_note,
    ), ("registered", entry.name))
    return model.to(device).eval()


def _build_bundled(name: str, device: torch.device) -> nn.Module:
    from .bundled import load_bundled

    model = load_bundled(name, device=device).eval()
    return _serve(model, model_info(model) or ModelInfo(name=name), ("bundled", name))


def _build_timm(name: str, weights: Any, device: torch.device, weights_dir: Path | None) -> nn.Module:
    from .integrations.timm import load_timm, timm_info

    model = load_timm(name, weights, device, weights_dir)
    info = timm_info(model)
    return _serve(model, ModelInfo(name=f"timm:{name}", categories=info.categories, preprocess=info.preprocess,
                                   preprocess_note=info.preprocess_note), ("timm", name))


def _build_hf(repo: str, weights: Any, device: torch.device) -> nn.Module:
    from .integrations.hf import ImageProcessorPreprocess, hf_info, load_hf

    model, processor = load_hf(repo, weights, device)
    known = hf_info(model) or ModelInfo()
    preprocess = ImageProcessorPreprocess(processor) if processor is not None else None
    note = f"the image processor of {repo} ({type(processor).__name__})" if processor is not None else None
    return _serve(model, ModelInfo(name=f"hf:{repo}", categories=known.categories, preprocess=preprocess,
                                   preprocess_note=note), ("hf", repo))


_SERVING = threading.Lock()


@contextmanager
def _serving(weights: Any, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """Let torchvision's own builder load ``state``: builders read weights through ``weights.get_state_dict``,
    and keep doing every architecture's adjustments (DenseNet key renaming, Inception aux heads, ViT sizes)."""
    with _SERVING:
        weights.get_state_dict = lambda *args, **kwargs: state
        try:
            yield
        finally:
            del weights.get_state_dict


def _torchvision_weights(name: str, weights: Any) -> Any:
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    if weights is None:
        return None
    try:
        member = enum.verify(weights)
    except (KeyError, TypeError) as err:
        raise CamCheckError(
            f"{name} has no weights {str(weights)!r}; use one of {', '.join(['DEFAULT'] + [m.name for m in enum])}, "
            "or weights=None for a random initialisation"
        ) from err
    if member.meta.get("categories") is None:
        raise CamCheckError(f"{member} holds feature-extraction weights without a trained classifier; use "
                            f"weights='DEFAULT' ({enum.DEFAULT.name})")
    return member


def _build_torchvision(name: str, weights: Any, device: torch.device, weights_dir: Path | None, offline: bool
                       ) -> nn.Module:
    from torchvision.models import get_model, get_model_weights

    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = get_model(name, weights=None)
    else:
        state = load_state_dict(find_weights(WeightsFile(weights.url), weights_dir=weights_dir, offline=offline))
        with _serving(weights, state):
            model = get_model(name, weights=weights)
    described = weights if weights is not None else get_model_weights(name).DEFAULT
    _serve(model, ModelInfo(name=name, categories=tuple(described.meta["categories"]),
                            preprocess=described.transforms()),
           ("torchvision", name, weights.name if weights is not None else None))
    return model.to(device).eval()


def _unknown(name: str) -> CamCheckError:
    registered, bundled, torchvision_names = sorted(_REGISTRY), _bundled_names(), _torchvision_names()
    close = difflib.get_close_matches(name, [*registered, *bundled, *torchvision_names], n=5, cutoff=0.6)
    return CamCheckError(
        f"unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
        + f" Known: registered [{', '.join(registered) or 'none'}], bundled [{', '.join(bundled)}], and the "
        f"{len(torchvision_names)} torchvision classification models (torchvision.models.list_models(module="
        "torchvision.models)), plus timm:NAME and hf:REPO from the local caches. Fix: correct the name, or "
        "register your model with pytest_camcheck.register_model(name, factory) in conftest.py"
    )


def _recipe(name: str, weights: Any) -> tuple[tuple, Callable[[torch.device, Path | None, bool], nn.Module]]:
    """(cache key, builder) for a model name and the weights asked for."""
    if not isinstance(name, str):
        raise CamCheckError(f"a model name is a string such as 'resnet18', not {type(name).__name__}; a model object "
                            "you already have needs no loading: pass it to compute_cam directly")
    if name in _REGISTRY or name in _bundled_names():
        if weights != "DEFAULT":
            raise CamCheckError(f"weights= applies to torchvision, timm: and hf: models only; {name!r} always loads its own "
                                "weights (bundled, or the checkpoint given to register_model): leave weights out")
        if name in _REGISTRY:
            entry = _REGISTRY[name]
            return ("registered", name, entry), lambda device, _dir, _offline: _build_registered(entry, device)
        return ("bundled", name), lambda device, _dir, _offline: _build_bundled(name, device)
    if name.startswith("timm:") and len(name) > 5:
        arch = name[5:]
        return ("timm", arch, weights), lambda device, weights_dir, _offline: _build_timm(arch, weights, device,
                                                                                             weights_dir)
    if name.startswith("hf:") and len(name) > 3:
        repo = name[3:]
        return ("hf", repo, weights), lambda device, _dir, _offline: _build_hf(repo, weights, device)
    if name not in _torchvision_names():
        raise _unknown(name)
    member = _torchvision_weights(name, weights)
    key = ("torchvision", name, member.name if member is not None else None)
    return key, lambda device, weights_dir, offline: _build_torchvision(name, member, device, weights_dir, offline)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    return select_device(str(device), Accelerators.probe(), asked_by="device")


def load_model(
    name: str,
    *,
    weights: Any = "DEFAULT",
    device: str | torch.device | None = None,
    weights_dir: str | os.PathLike | None = None,
    offline: bool = False,
) -> nn.Module:
    """A model by name, in eval mode on ``device`` (CPU by default; ``auto``, ``cuda``, ``cuda:N``, ``mps``
    accepted), with its categories and preprocessing attached.

    ``weights``: ``"DEFAULT"``, a weights name (``"IMAGENET1K_V1"``, torchvision only) or enum member, or ``None``
    for a random initialisation with a fixed seed (categories and preprocessing still those of the default
    weights). ``"timm:NAME"`` (``timm:resnet18.a1_in1k``) and ``"hf:REPO"`` (``hf:google/vit-base-patch16-224``)
    read their weights from the local Hugging Face / torch hub caches only. Raises :class:`WeightsUnavailable` when the weights file is missing and cannot be
    downloaded, :class:`CamCheckError` for an unknown name (with close matches) or a wrong hash.

    Example:
        >>> model = load_model("resnet18", weights=None, device="cpu")
        >>> model_info(model).categories[:2], next(model.parameters()).device
        (('tench', 'goldfish'), device(type='cpu'))
    """
    _key, build = _recipe(name, weights)
    return build(_device(device), _default_weights_dir(weights_dir), offline)


class ModelCache:
    """Models built once per (name, weights) for one device; a model whose weights are unavailable is tried
    once and its :class:`WeightsUnavailable` raised again on every later request (no repeated downloads).

    The models are shared: every :meth:`get` puts the model back in eval mode, but a test that changes its
    weights should work on ``copy.deepcopy(model)``.

    Example:
        >>> cache = ModelCache(device="cpu", offline=True)
        >>> cache.get("resnet18", weights=None) is cache.get("resnet18", weights=None)
        True
    """

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        weights_dir: str | os.PathLike | None = None,
        offline: bool = False,
    ) -> None:
        self.device = _device(device)
        self.weights_dir = _default_weights_dir(weights_dir)
        self.offline = offline
        self._built: dict[tuple, nn.Module | str] = {}

    def get(self, name: str, *, weights: Any = "DEFAULT") -> nn.Module:
        """The model ``name`` as :func:`load_model` gives it, built on first request.

        Example:
            >>> ModelCache().get("resnet18", weights=None).training
            False
        """
        key, build = _recipe(name, weights)
        if key not in self._built:
            try:
                self._built[key] = build(self.device, self.weights_dir, self.offline)
            except WeightsUnavailable as err:
                self._built[key] = str(err)
        found = self._built[key]
        if isinstance(found, str):
            raise WeightsUnavailable(found)
        return found.eval()
