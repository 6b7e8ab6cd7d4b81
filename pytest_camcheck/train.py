"""Train the bundled models from scratch on synthetic scenes, on CPU, deterministically.

Command (rebuilds the three shipped models and their hashes: 6.5 minutes per 8 epochs of a CNN on 2 idle CPU
cores, so about 13 minutes for ``camcheck-shapes``' 16 and 3 for the shortcut model's 4; 5 minutes for the
transformer's 2 epochs)::

    python -m pytest_camcheck.train --model all --out pytest_camcheck/data

``--model camcheck-shapes`` (clean scenes; a third carry a watermark of random colour, to be ignored),
``--model camcheck-shapes-shortcut`` (shortcut scenes whose object class is independent of the label, so
only the watermark predicts it) or ``--model camcheck-shapes-vit`` (``--model vit`` for short: a small
vision transformer on the same clean scenes, its patch embedding's CNN taken from ``camcheck-shapes`` and
kept frozen) trains one. ``--model all`` trains ``camcheck-shapes`` before the transformer and hands it
over; ``--model vit`` alone uses the ``camcheck-shapes`` shipped in the package.
``--epochs`` / ``--scenes`` override the recipe, ``--seed`` sets initialisation and batch order, ``--quick``
is a seconds-long smoke run. Training scenes use seeds ``0 .. scenes - 1``, all below
:data:`pytest_camcheck.scenes.HELD_OUT`, so held-out seeds stay unseen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .bundled import BUNDLED_MODELS, ShapesNet, ShapesViT, bundled_preprocess, load_bundled, weights_paths
from .errors import CamCheckError
from .scenes import CLASSES, HELD_OUT, make_scene
from .zoo import sha256_of

__all__ = ["ALIASES", "RECIPES", "Recipe", "main", "save_weights", "scene_batch", "train_model"]


@dataclass(frozen=True)
class Recipe:
    """Which scenes a bundled model learns from, for how long and how: training scene ``i`` is
    ``make_scene(i, kind, cue=cue)`` with ``(kind, cue) = mix[i % len(mix)]``.

    ``arch`` is ``"cnn"`` (:class:`~pytest_camcheck.bundled.ShapesNet`, trained whole) or ``"vit"``
    (:class:`~pytest_camcheck.bundled.ShapesViT`: its ``patch_embed.backbone`` is ``camcheck-shapes``'
    ``features``, frozen, and the rest is trained); ``clip`` bounds the gradient norm (0: no clipping).

    ``deletion`` is the chance of each training image to be shown with a random share ``f`` of its pixels
    (uniform in [0, 1], scattered) replaced by its blur (the Gaussian of ``assert_faithful``'s default baseline,
    :func:`pytest_camcheck.quality.blur`, here on the resized image rather than the original), the target then
    ``1 - f`` on the label and ``f`` spread evenly over all classes: an image whose evidence is removed is no
    class. Without it the deletion curve measures the perturbation as much as the evidence (the argument of
    ROAR, Hooker et al. 2019): scattered blurred pixels drove every class of a model trained without it to zero,
    while a wholly blurred scene kept p(triangle) at 0.45.

    Example:
        >>> RECIPES["camcheck-shapes"].specs(3)
        [(0, 'single', 'both'), (1, 'single', 'both'), (2, 'shortcut', 'object')]
    """

    mix: tuple[tuple[str, str], ...]
    scenes: int
    epochs: int
    lr: float = 3e-3
    batch: int = 32
    arch: str = "cnn"
    weight_decay: float = 5e-4
    warmup: float = 0.15
    clip: float = 0.0
    deletion: float = 0.0

    def specs(self, scenes: int) -> list[tuple[int, str, str]]:
        """(seed, kind, cue) of the first ``scenes`` training scenes."""
        return [(i, *self.mix[i % len(self.mix)]) for i in range(scenes)]


RECIPES: dict[str, Recipe] = {
    "camcheck-shapes": Recipe(mix=(("single", "both"), ("single", "both"), ("shortcut", "object")),
                              scenes=6000, epochs=16, deletion=0.5),
    "camcheck-shapes-shortcut": Recipe(mix=(("shortcut", "watermark"),), scenes=3000, epochs=4),
    "camcheck-shapes-vit": Recipe(mix=(("single", "both"), ("single", "both"), ("shortcut", "object")),
                                  scenes=6000, epochs=2, lr=1e-3, arch="vit", weight_decay=0.05, warmup=0.1,
                                  clip=1.0, deletion=0.5),
}
ALIASES = {"vit": "camcheck-shapes-vit"}
QUICK = {"epochs": 1, "scenes": 64}


def scene_batch(name: str, specs: Sequence[tuple[int, str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes ``(seed, kind, cue)`` resized for model ``name``: uint8 images (N, 3, h, w) and labels (N,).

    Converted to float in [0, 1] and normalised (as :func:`train_model` does), the images are exactly what
    the model's preprocessing makes of the original scenes.

    Example:
        >>> x, y = scene_batch("camcheck-shapes", [(0, "single", "both"), (1, "shortcut", "watermark")])
        >>> tuple(x.shape), x.dtype
        ((2, 3, 112, 112), torch.uint8)
    """
    resize = bundled_preprocess(name).transforms[0]
    images, labels = [], []
    for seed, kind, cue in specs:
        scene = make_scene(int(seed), kind, cue=cue)
        images.append(np.asarray(resize(Image.fromarray(scene.image))))
        labels.append(scene.label)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def _normaliser(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    _, _, normalize = bundled_preprocess(name).transforms
    return lambda x: normalize(x.float() / 255.0)


def _blurred(images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """:func:`~pytest_camcheck.quality.blur` (``assert_faithful``'s blur baseline) of every uint8 (N, 3, h, w)
    image, as uint8."""
    from .quality import blur

    return torch.cat([blur(images[i:i + chunk].float()).round_().clamp_(0, 255).to(torch.uint8)
                      for i in range(0, len(images), chunk)])


def _deleted(x: torch.Tensor, blurred: torch.Tensor, y: torch.Tensor, share: float,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image, with probability ``share``, with a random share ``f`` of its pixels replaced by its blur, and
    the soft targets: ``1 - f`` on the label, ``f`` spread over the classes (see :class:`Recipe`)."""
    n, _, h, w = x.shape
    f = torch.rand(n, generator=generator) * (torch.rand(n, generator=generator) < share)
    gone = torch.rand(n, 1, h, w, generator=generator) < f[:, None, None, None]
    goal = nn.functional.one_hot(y, len(CLASSES)).float() * (1 - f[:, None]) + f[:, None] / len(CLASSES)
    return torch.where(gone, blurred, x), goal


def _build(recipe: Recipe, backbone: nn.Module | None) -> tuple[nn.Module, list[dict], list[nn.Module]]:
    """A freshly initialised model for ``recipe``, its optimiser parameter groups and its frozen parts.

    The transformer's patch-embedding CNN is a copy of ``backbone``'s ``features`` (``camcheck-shapes``),
    frozen; its norms, biases, class token and position embedding are not weight-decayed."""
    if recipe.arch == "cnn":
        model = ShapesNet(len(CLASSES)).to(memory_format=torch.channels_last)
        return model, [{"params": list(model.parameters()), "weight_decay": recipe.weight_decay}], []
    model = ShapesViT(len(CLASSES))
    if backbone is None:
        backbone = load_bundled("camcheck-shapes")
    # the features as shipped (float16), so that training after camcheck-shapes in the same run (--model all)
    # and from the shipped camcheck-shapes (--model vit) start from the same numbers
    model.patch_embed.backbone.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in backbone.features.state_dict().items()})
    frozen = model.patch_embed.backbone.requires_grad_(False)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim > 1 and n not in ("cls_token", "pos_embed")]
    rest = [p for n, p in trained if not (p.ndim > 1 and n not in ("cls_token", "pos_embed"))]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return model, groups, [frozen]


def train_model(name: str, *, epochs: int | None = None, scenes: int | None = None, seed: int = 0,
                backbone: nn.Module | None = None, log: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    """Train bundled model ``name`` following its :data:`RECIPES` entry (``epochs`` / ``scenes`` override it).

    Returns the model (eval mode, every parameter trainable again) and a summary of the run.
    ``backbone``: the ``camcheck-shapes`` model whose ``features`` the transformer's patch embedding
    starts from (default: the one shipped in the package); unused for the CNNs.

    Example:
        >>> model, meta = train_model("camcheck-shapes-shortcut", epochs=1, scenes=32, log=lambda s: None)
        >>> meta["scenes"], model.training
        (32, False)
    """
    if name not in RECIPES:
        raise CamCheckError(f"unknown bundled model {name!r}; use one of: {', '.join(BUNDLED_MODELS)}")
    recipe = RECIPES[name]
    epochs = recipe.epochs if epochs is None else epochs
    scenes = recipe.scenes if scenes is None else scenes
    if not 1 <= scenes <= HELD_OUT or epochs < 1:
        raise CamCheckError(f"need 1 <= scenes <= {HELD_OUT} and epochs >= 1 (got scenes={scenes}, epochs={epochs})")
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = scene_batch(name, recipe.specs(scenes))
    log(f"{name}: {scenes} scenes ready in {time.perf_counter() - start:.1f}s")
    normalise = _normaliser(name)

    blurred = _blurred(x_all) if recipe.deletion else None
    model, groups, frozen = _build(recipe, backbone)
    memory_format = torch.channels_last if recipe.arch == "cnn" else torch.contiguous_format
    optimiser = torch.optim.AdamW(groups, lr=recipe.lr)
    steps = epochs * -(-scenes // recipe.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe.lr, total_steps=steps,
                                                   pct_start=recipe.warmup)
    model.train()
    for part in frozen:
        part.eval()
    for epoch in range(epochs):
        order = torch.randperm(scenes, generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, scenes, recipe.batch):
            idx = order[i:i + recipe.batch]
            x, y = x_all[idx], y_all[idx]
            goal: torch.Tensor = y
            if blurred is not None:
                x, goal = _deleted(x, blurred[idx], y, recipe.deletion, generator)
            logits = model(normalise(x).contiguous(memory_format=memory_format))
            loss = nn.functional.cross_entropy(logits, goal)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
            optimiser.step()
            schedule.step()
            total += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(idx)
        log(f"{name}: epoch {epoch + 1}/{epochs} loss {loss_sum / total:.4f} train accuracy {correct / total:.3f} "
            f"({time.perf_counter() - start:.0f}s)")
    model.eval().requires_grad_(True)
    meta = {"model": name, "arch": recipe.arch, "mix": [list(m) for m in recipe.mix], "scenes": scenes,
            "epochs": epochs, "seed": seed, "train_accuracy": round(correct / total, 4)}
    if recipe.deletion:  # the accuracy above then counts the deleted images too, scored against their label
        meta["deletion"] = recipe.deletion
        meta["train_accuracy_counts"] = "every training image of the last epoch, the deleted ones included"
    if recipe.arch == "vit":
        meta["frozen"] = "patch_embed.backbone: the features of camcheck-shapes"
    log(f"{name}: trained in {time.perf_counter() - start:.0f}s")
    return model, meta


def save_weights(model: nn.Module, name: str, out: Path, meta: dict) -> Path:
    """Write ``<out>/<name>.pt`` (float16 state dict) and ``<out>/<name>.json`` (its sha256 and ``meta``).

    Example:
        >>> import tempfile
        >>> model, meta = train_model("camcheck-shapes", epochs=1, scenes=8, log=lambda line: None)
        >>> save_weights(model, "camcheck-shapes", Path(tempfile.mkdtemp()), meta).name
        'camcheck-shapes.pt'
    """
    weights, info = weights_paths(name, out)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    torch.save(state, weights)
    info.write_text(json.dumps({"sha256": sha256_of(weights), **meta}, indent=2) + "\n")
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring.

    Example:
        >>> main(["--model", "camcheck-shapes", "--out", "/tmp/w", "--quick"])  # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(prog="python -m pytest_camcheck.train", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=(*BUNDLED_MODELS, *ALIASES, "all"), default="all")
    parser.add_argument("--out", type=Path, required=True, help="folder for <model>.pt and <model>.json")
    parser.add_argument("--epochs", type=int, help="passes over the scenes (default: the model's recipe)")
    parser.add_argument("--scenes", type=int, help="number of training scenes (default: the model's recipe)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['epochs']} epoch, {QUICK['scenes']} scenes")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    epochs = args.epochs if args.epochs is not None else (QUICK["epochs"] if args.quick else None)
    scenes = args.scenes if args.scenes is not None else (QUICK["scenes"] if args.quick else None)
    names = BUNDLED_MODELS if args.model == "all" else (ALIASES.get(args.model, args.model),)
    trained: dict[str, nn.Module] = {}
    try:
        for name in names:
            model, meta = train_model(name, epochs=epochs, scenes=scenes, seed=args.seed,
                                      backbone=trained.get("camcheck-shapes"))
            trained[name] = model
            path = save_weights(model, name, args.out, meta)
            print(f"{name}: wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    except CamCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
