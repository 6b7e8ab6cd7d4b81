"""The one step where a layer's output becomes the (N, C, H, W) grid the methods work on.

A :class:`Layout` says how a layer's output is laid out and rearranges it (and its gradient, which has the same
layout) into the grid:

- ``NCHW``: convolutional feature maps, as they are;
- ``NHWC``: channels last (Swin stages, torchvision ``Permute``, LayerNorm or Linear applied to a 4-D map);
- ``tokens``: (N, P + h*w, C) with ``P`` prefix tokens (CLS, DeiT's distillation token, register tokens),
  which are dropped; the patch tokens are the h x w grid in row-major order;
- ``reshape``: the caller's own rearrangement (``compute_cam(..., reshape=fn)``).

The prefix count and patch size come from the model where it says so (timm ``num_prefix_tokens`` and
``patch_embed.patch_size``, torchvision ViT ``patch_size`` and ``class_token``, Hugging Face ``config.patch_size``
and the ``cls_token`` / ``distillation_token`` / ``register_tokens`` parameters), else from the patch embedding's
stride; the grid then follows from the input size and is checked against the token count. An output whose
layout cannot be told (attention internals, a first dimension that is not the images, a token count that is no
grid of this input) is refused with a LayerError naming the fix, never guessed.

Some models keep their prefix tokens one set per stage, each stage with its own patch embedding and grid: timm
CoaT (``cls_token1`` .. ``cls_token4``, one per serial stage at strides 4 to 32) and CrossViT (``cls_token_0``,
``cls_token_1``, one per branch, each branch on its own patch size). A numbered name says which stage a token
belongs to, not which layers carry it, so the tokens are never added up into one model-wide count: a layer gets a
stage's tokens only where its module path, read from the module that holds the parameters, runs through that
stage's modules (see :class:`Stages`), and its token count must then be exactly that stage's prefix tokens plus
the grid the stage's own patch embedding declares (or that grid alone, before the tokens are added). Refused: a
token layer of such a model that its path places in no single stage (inside CoaT's parallel blocks, which hold
stages 2 to 4 side by side), one whose token count is not its stage's (CrossViT's cross-attention
``blocks.0.fusion.0``, which joins branch 0's token to branch 1's patches), and a stage that sees a crop of the
input (CrossViT's ``crop_scale=True``), whose grid would be spread over the whole image.
"""

from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import LayerError
from .capture import Flow, structure

Reshape = Callable[[torch.Tensor], torch.Tensor]

# CLIP-like vision towers (Hugging Face CLIP, AltCLIP, Chinese-CLIP, BLIP, open_clip) call their CLS token
# class_embedding; SigLIP has none (its tokens are all patches)
_PREFIX_PARAMETERS = {"cls_token", "class_token", "class_embedding", "dist_token", "distillation_token",
                      "reg_token", "register_tokens"}
# a per-stage prefix parameter: a known name and the stage's number (CoaT's cls_token2, CrossViT's cls_token_1)
_STAGE_PARAMETER = re.compile("(?:" + "|".join(sorted(_PREFIX_PARAMETERS)) + r")_?(\d+)")
_NUMBERED = re.compile(r".*\D(\d+)")  # a module named with a stage's number: serial_blocks2, norm4, patch_embed_1
_CHANNELS_LAST_MODULES = {"SwinTransformerStage", "SwinTransformerBlock", "SwinTransformerBlockV2",
                          "PatchMerging", "PatchMergingV2"}
_RESHAPE_FIX = ("pass reshape=fn to compute_cam, fn mapping the layer's output (N, ...) to (N, C, H, W) by "
                "rearranging it")


def is_spatial(t: torch.Tensor) -> bool:
    """A (N, C, H, W) tensor with more than one position."""
    return t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1


@dataclass(frozen=True)
class Layout:
    """How a layer's output is laid out: ``name`` ("NCHW", "NHWC", "tokens" or "reshape"), the number of
    prefix tokens and the (h, w) grid of a token layout, or the caller's ``reshape``."""

    name: str
    prefix: int = 0
    size: tuple[int, int] | None = None
    reshape: Reshape | None = None

    def __str__(self) -> str:
        if self.name == "tokens" and self.size is not None:
            return f"tokens ({self.prefix} prefix + {self.size[0]}x{self.size[1]})"
        return self.name

    def grid(self, t: torch.Tensor) -> torch.Tensor:
        """The (N, C, H, W) grid of a layer output (or of its gradient)."""
        if self.name == "NCHW":
            return t
        if self.name == "NHWC":
            return t.permute(0, 3, 1, 2)
        if self.name == "tokens":
            h, w = self.size
            return t[:, self.prefix:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
        out = self.reshape(t)
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != t.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LayerError(
                f"reshape turned the layer's output of shape {tuple(t.shape)} into {got}, not (N, C, H, W) with "
                f"N = {t.shape[0]}. Fix: make reshape return the images' channels on a grid, e.g. "
                "lambda t: t[:, 1:].reshape(t.shape[0], 14, 14, -1).permute(0, 3, 1, 2)"
            )
        return out

    def zero_channels(self, one: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """Copies of one image's layer output (shape (1, ...)), copy ``j`` with grid channel ``channels[j]`` set
        to zero at every grid position (prefix tokens are kept): what Ablation-CAM feeds to the layers after the
        chosen one."""
        copies = one.repeat(len(channels), *([1] * (one.dim() - 1)))
        rows = torch.arange(len(channels), device=one.device)
        if self.name == "NCHW":
            copies[rows, channels] = 0
        elif self.name == "NHWC":
            copies[rows, :, :, channels] = 0
        elif self.name == "tokens":
            copies[rows, self.prefix:, channels] = 0
        else:  # where each grid value comes from: the caller's reshape applied to the positions themselves
            where = self.grid(torch.arange(one.numel(), device=one.device, dtype=torch.float64).reshape(one.shape))
            positions = where[0, channels.to(where.device)].flatten(1).long()
            copies.view(len(channels), -1)[rows[:, None], positions] = 0
        return copies


NCHW = Layout("NCHW")
NHWC = Layout("NHWC")


@dataclass(frozen=True)
class Stages:
    """Prefix tokens a model keeps one set per stage, and where its stages are. ``owner``: the dotted path of the
    module holding the parameters ("" for the model); ``prefix``: each stage number's prefix-token count;
    ``names``: its parameters; ``embeds``: the dotted path of its patch embedding, the one module of the stage that
    declares a grid (``grid_size``, or ``img_size`` and ``patch_size``); ``listed``: how a module path says its
    stage, None when the stages' patch embeddings are not found (no layer is then placed in a stage).

    - numbered stages (``listed`` False; CoaT): the owner's child named with the stage's number (``serial_blocks2``,
      ``norm2``, ``patch_embed2`` go with ``cls_token2``); what lies deeper (``serial_blocks2.0.norm1``) says nothing;
    - listed stages (``listed`` True; CrossViT, whose numbers count from 0): entry ``k`` of a ModuleList with one
      entry per stage, at any depth (``patch_embed.1``, ``norm.1``, ``blocks.0.blocks.1`` go with ``cls_token_1``;
      ``blocks.0``, of a ModuleList of another length, says nothing). Every such entry on the path must agree.
    """

    owner: str
    prefix: dict[int, int]
    names: dict[int, tuple[str, ...]]
    embeds: dict[int, str]
    listed: bool | None


@dataclass(frozen=True)
class Tokens:
    """What a model says about its tokens: prefix tokens (None: not said), patch size (None: not said), and the
    prefix tokens it keeps per stage, one :class:`Stages` per module holding such parameters."""

    prefix: int | None
    patch: tuple[int, int] | None
    stages: tuple[Stages, ...] = ()


_TOKENS: "weakref.WeakKeyDictionary[nn.Module, Tokens]" = weakref.WeakKeyDictionary()


def _pair(v: object) -> tuple[int, int] | None:
    if isinstance(v, int) and v > 0:
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) and i > 0 for i in v):
        return (int(v[0]), int(v[1]))
    return None


def model_tokens(model: nn.Module) -> Tokens:
    """The prefix-token count and patch size the model declares (timm, torchvision ViT, Hugging Face), else
    its patch embedding's stride (the first convolution whose stride equals its kernel); found once per
    model."""
    found = _TOKENS.get(model)
    if found is None:
        found = Tokens(_declared_prefix(model), _declared_patch(model), _declared_stages(model))
        _TOKENS[model] = found
    return found


def _declared_prefix(model: nn.Module) -> int | None:
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int) and count >= 0:
        return count
    total, seen = 0, False
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in _PREFIX_PARAMETERS:
            seen = True
            total += int(p.shape[-2]) if p.dim() >= 2 else 1
    return total if seen else None


def _declared_grid(module: nn.Module) -> tuple[int, int] | None:
    """The (h, w) grid a patch embedding declares: timm's ``grid_size``, else ``img_size`` // ``patch_size``."""
    grid = _pair(getattr(module, "grid_size", None))
    if grid is None:
        size, patch = _pair(getattr(module, "img_size", None)), _pair(getattr(module, "patch_size", None))
        if size is not None and patch is not None:
            grid = _pair((size[0] // patch[0], size[1] // patch[1]))
    return grid


def _declared_stages(model: nn.Module) -> tuple[Stages, ...]:
    """The per-stage prefix tokens of ``model`` (parameters named like ``cls_token2``), grouped by the module
    holding them, with each stage's patch embedding."""
    groups: dict[str, dict[int, list[tuple[str, int]]]] = {}
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        numbered = _STAGE_PARAMETER.fullmatch(leaf)
        if numbered:
            count = int(p.shape[-2]) if p.dim() >= 2 else 1
            groups.setdefault(owner, {}).setdefault(int(numbered[1]), []).append((name, count))
    found = []
    for owner, numbers in groups.items():
        holder = model.get_submodule(owner) if owner else model
        embeds, listed = _stage_embeds(holder, set(numbers))
        found.append(Stages(owner, {n: sum(c for _, c in ps) for n, ps in numbers.items()},
                            {n: tuple(name for name, _ in ps) for n, ps in numbers.items()},
                            {n: f"{owner}.{e}" if owner else e for n, e in embeds.items()}, listed))
    return tuple(found)


def _stage_embeds(holder: nn.Module, numbers: set[int]) -> tuple[dict[int, str], bool | None]:
    """Each stage number's patch embedding (a path below ``holder``) and whether the stages are listed: the one
    numbered child per stage that declares a grid (CoaT's ``patch_embed2``), else the one ModuleList child with an
    entry per stage, each declaring a grid (CrossViT's ``patch_embed``), when the numbers count from 0."""
    numbered: dict[int, list[str]] = {}
    for name, child in holder.named_children():
        match = _NUMBERED.fullmatch(name)
        if match and int(match[1]) in numbers and _declared_grid(child) is not None:
            numbered.setdefault(int(match[1]), []).append(name)
    if set(numbered) == numbers and all(len(names) == 1 for names in numbered.values()):
        return {n: names[0] for n, names in numbered.items()}, False
    if numbers == set(range(len(numbers))):
        lists = [name for name, child in holder.named_children() if isinstance(child, nn.ModuleList)
                 and len(child) == len(numbers) and all(_declared_grid(entry) is not None for entry in child)]
        if len(lists) == 1:
            return {n: f"{lists[0]}.{n}" for n in numbers}, True
    return {}, None


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:  # replaced since the model's tokens were read
        return None


def _stages_on_path(model: nn.Module, layer_name: str, stages: Stages) -> set[int]:
    """The stage numbers that ``layer_name``'s module path runs through (see :class:`Stages`)."""
    if stages.listed is None or not layer_name or layer_name == "<model>":
        return set()
    if stages.owner:
        if not layer_name.startswith(stages.owner + "."):
            return set()
        layer_name = layer_name[len(stages.owner) + 1:]
    module = _submodule(model, stages.owner)
    found = set()
    for depth, part in enumerate(layer_name.split(".")):
        child = getattr(module, part, None)
        if not isinstance(child, nn.Module):
            break
        if not stages.listed:
            match = _NUMBERED.fullmatch(part) if depth == 0 else None
            if match and int(match[1]) in stages.prefix:
                found.add(int(match[1]))
        elif isinstance(module, nn.ModuleList) and len(module) == len(stages.prefix) and part.isdigit():
            found.add(int(part))
        module = child
    return found


def _declared_patch(model: nn.Module) -> tuple[int, int] | None:
    for holder in (getattr(model, "patch_embed", None), model, getattr(model, "config", None)):
        patch = _pair(getattr(holder, "patch_size", None))
        if patch is not None:
            return patch
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and patchifies(module):
            return _pair(module.stride)
    return None


def patchifies(conv: nn.Conv2d) -> bool:
    """Whether a convolution cuts its input into patches: stride equal to its kernel, and more than 1.

    Example:
        >>> patchifies(nn.Conv2d(3, 8, 16, stride=16)), patchifies(nn.Conv2d(3, 8, 3, padding=1))
        (True, False)
    """
    stride = _pair(conv.stride)
    return stride == _pair(conv.kernel_size) and stride != (1, 1)


def _fits(h: int, w: int, height: int, width: int) -> bool:
    """Whether an h x w grid is the input's (height x width) at one stride, up to the rounding of padding."""
    if h < 1 or w < 1:
        return False
    s = math.sqrt(height * width / (h * w))
    return abs(h - height / s) <= max(1.5, 0.15 * h) and abs(w - width / s) <= max(1.5, 0.15 * w)


def _mismatch(h: int, w: int, height: int, width: int) -> float:
    """How far apart the strides of the two axes are (0: the same stride)."""
    return abs(math.log((height / h) / (width / w)))


def token_grids(count: int, tokens: Tokens, height: int, width: int) -> list[tuple[int, int, int]]:
    """Every (prefix, h, w) with count = prefix + h*w, h x w the input at the patch stride times a power of two
    (hierarchical stages), and prefix the model's declared count or 0."""
    strides = {2 ** k for k in range(7)}
    if tokens.patch is not None:
        strides |= {tokens.patch[0] * 2 ** k for k in range(6)}
    prefixes = {0} if tokens.prefix is None else {tokens.prefix, 0}
    found = set()
    for s in strides:
        for h in {height // s, -(-height // s)}:
            for w in {width // s, -(-width // s)}:
                for p in prefixes:
                    if h * w > 1 and p + h * w == count:
                        found.add((p, h, w))
    return sorted(found)


def _channels_last_module(module: nn.Module) -> bool | None:
    """What the module's type says about its 4-D output: True channels last, False channels first, None nothing
    (a Sequential says what its last module that says anything says)."""
    name = type(module).__name__
    data_format = getattr(module, "data_format", None)  # ConvNeXt's LayerNorm in timm and Hugging Face
    if data_format in ("channels_last", "channels_first"):
        return data_format == "channels_last"
    if name in _CHANNELS_LAST_MODULES or type(module) in (nn.LayerNorm, nn.Linear):
        return True
    if name == "Permute":
        dims = list(getattr(module, "dims", []))
        return True if dims == [0, 2, 3, 1] else False if dims == [0, 3, 1, 2] else None
    if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.MaxPool2d, nn.AvgPool2d)) or \
            "2d" in name.lower():
        return False
    if isinstance(module, nn.Sequential):  # its output is its last module's; other containers may permute back
        for child in reversed(list(module.children())):
            said = _channels_last_module(child)
            if said is not None:
                return said
    return None


def _keeps_layout(module: nn.Module) -> bool:
    """Whether the module's output is laid out as its input: an activation, dropout, drop path or identity."""
    cls = type(module)
    where = cls.__module__
    return (where in ("torch.nn.modules.activation", "torch.nn.modules.dropout") and cls is not nn.MultiheadAttention
            ) or cls is nn.Identity or where.endswith((".activations", ".activations_me")) or \
        cls.__name__.endswith(("DropPath", "StochasticDepth"))


def _said_by_flow(module: nn.Module, flow: Flow) -> bool | None:
    """What the pass's flow says about the layout of the module's output: the type of a module that returned
    the very same tensor (an in-place ReLU returns its convolution's), and for an activation, dropout or
    identity among them, of the module that made its input, and so on back; None when nothing says or the
    modules disagree."""
    said: set[bool] = set()
    todo, done = [flow.returned.get(module, [])], set()
    while todo:
        for other in todo.pop():  # the modules that returned one tensor
            if id(other) in done:
                continue
            done.add(id(other))
            value = _channels_last_module(other)
            if value is not None:
                said.add(value)
            elif _keeps_layout(other):
                todo.append(flow.fed.get(other, []))
    return said.pop() if len(said) == 1 else None


def inside_attention(model: nn.Module, layer_name: str) -> bool:
    """Whether the module or one of its parents is an attention module."""
    parts = layer_name.split(".") if layer_name and layer_name != "<model>" else []
    module = model
    for part in parts:
        module = getattr(module, part, None)
        if module is None:
            return False
        if "attention" in type(module).__name__.lower():
            return True
    return False


def decide_layout(output: torch.Tensor, layer_name: str, *, model: nn.Module, module: nn.Module,
                  images: int, input_size: tuple[int, int], reshape: Reshape | None = None,
                  flow: Callable[[], Flow] | None = None) -> Layout:
    """The layout of ``layer_name``'s output for a batch of ``images`` inputs of ``input_size``; a LayerError
    naming the problem and the fix when it cannot be told. ``flow``: gives the :class:`Flow` of a pass of the
    model, asked for only when a 4-D output reads as a grid both ways and neither the module's type nor the
    strides of the two readings decide.

    Example:
        >>> conv = nn.Conv2d(3, 8, 3, padding=1)
        >>> str(decide_layout(torch.zeros(1, 8, 32, 32), "conv", model=conv, module=conv, images=1,
        ...                   input_size=(32, 32)))
        'NCHW'
    """
    where = f"layer {layer_name!r} outputs shape {tuple(output.shape)}"
    if output.dim() >= 1 and output.shape[0] != images:
        raise LayerError(
            f"{where} for a batch of {images} image(s): its first dimension is not the images (e.g. the region "
            "proposals of a detector's RoI head, or windows of an attention layer), so it has no map per image. "
            "Fix: choose a layer of the backbone, before the RoI or window split (e.g. 'backbone.body.layer4')"
        )
    if reshape is not None:
        layout = Layout("reshape", reshape=reshape)
        layout.grid(output[:1])
        return layout
    if output.dim() == 4 and inside_attention(model, layer_name):
        raise _attention(where)
    if output.dim() == 4:
        return _four_dims(output, where, model, module, input_size, flow)
    if output.dim() == 3:
        return _tokens(output, where, model, layer_name, input_size)
    raise LayerError(
        f"{where}, which has no spatial (H, W) grid to build a map on. Fix: choose a convolutional layer "
        "before global pooling, a token layer of a transformer, or layer=None for auto"
    )


def _attention(where: str) -> LayerError:
    return LayerError(
        f"{where}: the (batch, heads, tokens, dim) internals of an attention layer, not a grid of positions. "
        "Fix: choose the block's input norm (e.g. 'blocks.11.norm1') or a block's output, or layer=None"
    )


# module -> (the model's structure, its output shape, the input size) -> what the flow of a pass said (a pass
# costs a forward: one per module, model and size, not one per call)
_FLOW_SAID: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, bool | None]]" = weakref.WeakKeyDictionary()


def _flow_verdict(model: nn.Module, module: nn.Module, shape: torch.Size, input_size: tuple[int, int],
                  flow: Callable[[], Flow] | None) -> bool | None:
    if flow is None:
        return None
    known = _FLOW_SAID.setdefault(module, {})  # setdefault and item assignment: atomic under the GIL
    key = (structure(model), tuple(shape[1:]), tuple(input_size))  # the flow depends on the model around it
    if key not in known:
        known[key] = _said_by_flow(module, flow())
    return known[key]


def _four_dims(output: torch.Tensor, where: str, model: nn.Module, module: nn.Module,
               input_size: tuple[int, int], flow: Callable[[], Flow] | None) -> Layout:
    _, d1, d2, d3 = output.shape
    first, last = _fits(d2, d3, *input_size) and d2 * d3 > 1, _fits(d1, d2, *input_size) and d1 * d2 > 1
    if first and last:  # both read as a grid: the module's type, the reading whose strides clearly agree
        said = _channels_last_module(module)  # better, what made the tensor; else refused
        if said is None:
            strides_first, strides_last = _mismatch(d2, d3, *input_size), _mismatch(d1, d2, *input_size)
            if abs(strides_first - strides_last) > 0.1:
                return NCHW if strides_first < strides_last else NHWC
            said = _flow_verdict(model, module, output.shape, input_size, flow)
        if said is None:
            raise LayerError(
                f"{where}, which reads as a grid both as (N, C, H, W) and as (N, H, W, C) for an input of "
                f"{input_size[0]}x{input_size[1]}, and neither its module ({type(module).__name__}) nor the modules "
                "that made its input say which, so its layout cannot be told. Fix: choose a neighbouring module "
                "whose type says (a convolution; a Linear or LayerNorm on channels last), or a block's output, or "
                f"{_RESHAPE_FIX}"
            )
        return NHWC if said else NCHW
    if first or last:
        return NCHW if first else NHWC
    if _channels_last_module(module) is False and d2 * d3 > 1:  # a convolution's map at different strides per axis
        return NCHW
    tokens = model_tokens(model)
    if tokens.prefix and token_grids(int(d2), tokens, *input_size):
        raise _attention(where)
    if d2 * d3 > 1 and d1 * d2 > 1:
        raise LayerError(
            f"{where}, which is neither (N, C, H, W) nor (N, H, W, C) for an input of {input_size[0]}x"
            f"{input_size[1]} (no reading gives a grid of that input at one stride), so its layout cannot be "
            f"told. Fix: choose another layer, or {_RESHAPE_FIX}"
        )
    raise LayerError(
        f"{where}, which has no spatial (H, W) grid to build a map on. Fix: choose a convolutional layer "
        "before global pooling, or layer=None for auto"
    )


def _tokens(output: torch.Tensor, where: str, model: nn.Module, layer_name: str, input_size: tuple[int, int]
            ) -> Layout:
    tokens = model_tokens(model)
    if tokens.prefix is None and tokens.stages:
        return _stage_tokens(output, where, model, layer_name, input_size, tokens.stages)
    found = token_grids(int(output.shape[1]), tokens, *input_size)
    if len(found) == 1:
        prefix, h, w = found[0]
        return Layout("tokens", prefix=prefix, size=(h, w))
    said = "no prefix tokens declared" if tokens.prefix is None else f"{tokens.prefix} prefix token(s)"
    if found:
        readings = ", ".join(f"{p} prefix + {h}x{w}" for p, h, w in found)
        problem = f"its {output.shape[1]} tokens read several ways ({readings})"
    else:
        problem = (f"its {output.shape[1]} tokens are not prefix tokens plus a grid of the {input_size[0]}x"
                   f"{input_size[1]} input ({said}; patch size {tokens.patch or 'unknown'})")
    raise LayerError(f"{where} as (N, tokens, C): {problem}, so the map's grid cannot be told. Fix: choose a "
                     f"layer of the model's token stages or a convolutional stage, or {_RESHAPE_FIX}")


def _stage_tokens(output: torch.Tensor, where: str, model: nn.Module, layer_name: str, input_size: tuple[int, int],
                  groups: tuple[Stages, ...]) -> Layout:
    """The layout of a token layer of a model with per-stage prefix tokens: the tokens and grid of the one stage
    its module path runs through, checked against its token count; refused when the path places it in no single
    stage, the count is not that stage's, or the stage's grid does not cover the whole input."""
    placed = [(group, number) for group in groups for number in sorted(_stages_on_path(model, layer_name, group))]
    count = int(output.shape[1])
    fix = f"Fix: choose a layer inside one stage, or {_RESHAPE_FIX}"
    if len(placed) != 1:
        names = ", ".join(name for group in groups for number in sorted(group.names) for name in group.names[number])
        embeds = ", ".join(e for group in groups for _, e in sorted(group.embeds.items()))
        if not embeds:
            problem = (f"the model keeps prefix tokens per stage ({names}) but no patch embedding per stage that "
                       "declares its grid was found next to them, so no layer can be placed in a stage")
        elif placed:
            problem = (f"the model keeps prefix tokens per stage ({names}), and the layer's module path runs through "
                       f"the modules of stages {', '.join(str(n) for _, n in placed)} at once")
        else:
            problem = (f"the model keeps prefix tokens per stage ({names}, with the patch embeddings {embeds}), and "
                       "the layer's module path places it in no single stage (a module holding several stages "
                       "side by side, or joining one stage's tokens to another's)")
        raise LayerError(f"{where} as (N, tokens, C): {problem}, so how many of its {count} tokens are prefix tokens "
                         f"and which grid the rest are cannot be told. {fix}")
    group, number = placed[0]
    prefix, embed_name = group.prefix[number], group.embeds[number]
    embed = _submodule(model, embed_name)
    grid = None if embed is None else _declared_grid(embed)
    stage = f"in stage {number} of the model ({', '.join(group.names[number])}: {prefix} prefix token(s)"
    if grid is None:
        raise LayerError(f"{where} as (N, tokens, C): it is {stage}), but the stage's patch embedding "
                         f"{embed_name!r} declares no grid any more. {fix}")
    h, w = grid
    stage += f"; {embed_name!r} declares a {h}x{w} grid)"
    if count not in (prefix + h * w, h * w) or h * w < 2:
        raise LayerError(f"{where} as (N, tokens, C): it is {stage}, but its {count} tokens are neither {prefix} + "
                         f"{h}x{w} nor {h}x{w}, so the map's grid cannot be told. {fix}")
    seen = _pair(getattr(embed, "img_size", None))
    if getattr(_submodule(model, group.owner), "crop_scale", False) is True and seen not in (None, tuple(input_size)):
        raise LayerError(f"{where}: it is {stage}, and that stage sees a {seen[0]}x{seen[1]} crop of the "
                         f"{input_size[0]}x{input_size[1]} input (the model's crop_scale=True), so its grid covers "
                         "only part of the image. Fix: choose a layer of a stage that sees the whole input, or pass "
                         "reshape=fn to compute_cam, fn mapping the layer's output (N, ...) to an (N, C, H, W) grid of "
                         "the whole input (the crop's cells where the crop lies)")
    if not _fits(h, w, *input_size):
        raise LayerError(f"{where}: it is {stage}, but a {h}x{w} grid is not the {input_size[0]}x{input_size[1]} "
                         f"input at one stride, so the map would not line up with the image. {fix}")
    return Layout("tokens", prefix=prefix if count > h * w else 0, size=(h, w))
