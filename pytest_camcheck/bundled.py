"""The bundled models: small CNNs trained on :mod:`pytest_camcheck.scenes`, shipped inside the package.

- ``camcheck-shapes``: trained on clean scenes (a third carry a corner watermark of random colour, which it
  learns to ignore); it looks at the shape.
- ``camcheck-shapes-shortcut``: trained on shortcut scenes where only the corner watermark predicts the
  label; it looks at the watermark, not at the shape.

Both are ``features`` (convolutions, stride 8) -> ``pool`` (global average) -> ``fc`` (Linear), so every
CAM method applies, "cam" included, and ``features`` is their CAM layer. The weights live in
``pytest_camcheck/data/<name>.pt`` (float16 state dict, read with ``weights_only=True``) beside
``<name>.json`` (their sha256, checked on every load, and how they were trained). To rebuild them:
``python -m pytest_camcheck.train --model all --out pytest_camcheck/data``.

Example:
    >>> model = load_bundled("camcheck-shapes")
    >>> bundled_categories("camcheck-shapes")[:3]
    ('circle', 'square', 'triangle')
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

from .errors import CamCheckError
from .scenes import CLASSES
from .zoo import ModelInfo, attach_info, load_state_dict, sha256_of

__all__ = ["BUNDLED_MODELS", "DATA_DIR", "INPUT_SIZE", "ShapesNet", "bundled_categories", "bundled_preprocess",
           "load_bundled", "weights_paths"]

BUNDLED_MODELS: tuple[str, ...] = ("camcheck-shapes", "camcheck-shapes-shortcut")
DATA_DIR = Path(__file__).parent / "data"
INPUT_SIZE = (112, 112)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
_WIDTHS = (16, 32, 48, 96)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ShapesNet(nn.Module):
    """Convolutions and max-pools to a stride-8 map (``features``), global average pool (``pool``), Linear
    (``fc``).

    Example:
        >>> net = ShapesNet()
        >>> net(torch.zeros(2, 3, *INPUT_SIZE)).shape
        torch.Size([2, 6])
    """

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        w0, w1, w2, w3 = _WIDTHS
        self.features = nn.Sequential(OrderedDict(
            stem=_block(3, w0),
            pool1=nn.MaxPool2d(2),
            stage1=_block(w0, w1),
            pool2=nn.MaxPool2d(2),
            stage2=nn.Sequential(_block(w1, w2), _block(w2, w2)),
            pool3=nn.MaxPool2d(2),
            stage3=nn.Sequential(_block(w2, w3), _block(w3, w3), _block(w3, w3)),
        ))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _check_name(name: str) -> None:
    if name not in BUNDLED_MODELS:
        raise CamCheckError(f"unknown bundled model {name!r}; use one of: {', '.join(BUNDLED_MODELS)}")


def bundled_categories(name: str) -> tuple[str, ...]:
    """Class names of a bundled model, in output order.

    Example:
        >>> bundled_categories("camcheck-shapes-shortcut")
        ('circle', 'square', 'triangle', 'star', 'cross', 'ring')
    """
    _check_name(name)
    return CLASSES


def bundled_preprocess(name: str) -> transforms.Compose:
    """The evaluation preprocessing of a bundled model (a new Compose at each call): resize to
    :data:`INPUT_SIZE`, to tensor, normalise. Its geometry is exactly invertible.

    Example:
        >>> from PIL import Image
        >>> bundled_preprocess("camcheck-shapes")(Image.new("RGB", (150, 90))).shape
        torch.Size([3, 112, 112])
    """
    _check_name(name)
    return transforms.Compose([transforms.Resize(INPUT_SIZE), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def weights_paths(name: str, directory: Path | None = None) -> tuple[Path, Path]:
    """(weights file, metadata JSON) of a bundled model, in ``directory`` or :data:`DATA_DIR`.

    Example:
        >>> weights_paths("camcheck-shapes")[0].name
        'camcheck-shapes.pt'
    """
    _check_name(name)
    directory = DATA_DIR if directory is None else Path(directory)
    return directory / f"{name}.pt", directory / f"{name}.json"


def load_bundled(name: str, device: str | torch.device | None = None) -> nn.Module:
    """Load a bundled model in eval mode (on ``device``, CPU by default), its weights' hash checked, with its
    categories and preprocessing attached (so ``compute_cam`` needs neither).

    Example:
        >>> from pytest_camcheck import compute_cam
        >>> from pytest_camcheck.scenes import make_scene
        >>> model = load_bundled("camcheck-shapes")
        >>> scene = make_scene(1_000_000)
        >>> compute_cam(model, scene.image, scene.name).heatmap.shape == scene.image.shape[:2]
        True
    """
    weights, meta = weights_paths(name)
    rebuild = f"python -m pytest_camcheck.train --model {name} --out {weights.parent}"
    if not weights.is_file() or not meta.is_file():
        raise CamCheckError(
            f"the weights of bundled model {name!r} are missing ({weights} and {meta} are needed); reinstall "
            f"pytest-camcheck or rebuild them with: {rebuild}"
        )
    try:
        expected = json.loads(meta.read_text())["sha256"]
    except (ValueError, KeyError) as err:
        raise CamCheckError(
            f"{meta} is not valid metadata ({err}); reinstall pytest-camcheck or rebuild it with: {rebuild}"
        ) from err
    found = sha256_of(weights)
    if found != expected:
        raise CamCheckError(
            f"{weights} is corrupt or was modified: its sha256 is {found}, {meta.name} records {expected}. "
            f"Reinstall pytest-camcheck, or rebuild the weights (and their hash) with: {rebuild}"
        )
    state = load_state_dict(weights)
    model = ShapesNet(len(CLASSES))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as err:
        raise CamCheckError(
            f"{weights} does not fit the ShapesNet architecture of this version ({err}); rebuild it with: {rebuild}"
        ) from err
    model.eval()
    if device is not None:
        model.to(device)
    attach_info(model, ModelInfo(name=name, categories=bundled_categories(name), preprocess=bundled_preprocess(name)))
    return model
