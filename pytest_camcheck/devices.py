"""Which torch device a test session runs on: parsing what was asked, checking it exists, spreading xdist workers.

Everything here is a plain function of what was asked and of an :class:`Accelerators` snapshot, so the rules
can be tested on a machine without a GPU.

torch is imported by the functions that need it, not by this module (the plugin reads the settings without it).

Example:
    >>> gpus = Accelerators(cuda_available=True, device_count=2, cuda_version="12.4")
    >>> select_device("auto", gpus, worker="gw3")
    device(type='cuda', index=1)
    >>> select_device("auto", Accelerators(cuda_available=False))
    device(type='cpu')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import CamCheckError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEVICE_CHOICES",
    "Accelerators",
    "DeviceError",
    "cuda_skip_reason",
    "header_lines",
    "parse_device",
    "select_device",
    "spreads_workers",
    "worker_index",
]

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"

_CUDA_INDEX = re.compile(r"cuda:(.*)")
_WORKER = re.compile(r"gw(\d+)")


class DeviceError(CamCheckError):
    """The device asked for is not a valid choice, or is not present on this machine."""


@dataclass(frozen=True)
class Accelerators:
    """What this machine offers: CUDA (and how many GPUs), the CUDA version torch was built with, and MPS.

    Example:
        >>> Accelerators(cuda_available=False).device_count
        0
        >>> isinstance(Accelerators.probe().cuda_available, bool)
        True
    """

    cuda_available: bool
    device_count: int = 0
    cuda_version: str | None = None
    mps_available: bool = False

    @classmethod
    def probe(cls) -> "Accelerators":
        """Ask torch what this machine has, without creating a CUDA context.

        Example:
            >>> Accelerators.probe().device_count >= 0
            True
        """
        import torch

        cuda = torch.cuda.is_available()
        return cls(
            cuda_available=cuda,
            device_count=torch.cuda.device_count() if cuda else 0,
            cuda_version=torch.version.cuda,
            mps_available=torch.backends.mps.is_available(),
        )


def parse_device(value: str, *, asked_by: str = "device") -> str:
    """Normalise a device string to one of ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    ``asked_by`` names the setting the value came from (``--camcheck-device``, ``CAMCHECK_DEVICE``...) so that
    the error says where to fix it.

    Example:
        >>> parse_device(" CUDA:1 ")
        'cuda:1'
        >>> try:
        ...     parse_device("gpu", asked_by="--camcheck-device")
        ... except DeviceError as err:
        ...     print(str(err)[:47])
        --camcheck-device=gpu is not a device: use auto
    """
    text = value.strip().lower()
    if text in ("auto", "cpu", "cuda", "mps"):
        return text
    indexed = _CUDA_INDEX.fullmatch(text)
    if indexed:
        if not indexed.group(1).isdigit():
            raise DeviceError(
                f"{asked_by}={value} is not a device: the GPU index after 'cuda:' must be a whole number "
                f"(cuda:0, cuda:1, ...); use {DEVICE_CHOICES}"
            )
        return f"cuda:{int(indexed.group(1))}"
    hint = " (for a GPU: cuda)" if text in ("gpu", "nvidia") or text.startswith("gpu:") else ""
    raise DeviceError(f"{asked_by}={value} is not a device: use {DEVICE_CHOICES}{hint}")


def worker_index(worker: str | None) -> int | None:
    """The number of a pytest-xdist worker id (``"gw3"`` -> 3), ``None`` outside xdist.

    Example:
        >>> worker_index("gw12"), worker_index(None), worker_index("master")
        (12, None, None)
    """
    match = _WORKER.fullmatch(worker or "")
    return int(match.group(1)) if match else None


def spreads_workers(value: str, accelerators: Accelerators) -> bool:
    """Whether xdist workers are spread over several GPUs: plain ``cuda`` (or ``auto`` choosing CUDA) with
    more than one GPU. ``cuda:N`` pins every worker to GPU N.

    Example:
        >>> spreads_workers("cuda", Accelerators(cuda_available=True, device_count=4))
        True
        >>> spreads_workers("cuda:0", Accelerators(cuda_available=True, device_count=4))
        False
    """
    return parse_device(value) in ("auto", "cuda") and accelerators.cuda_available and accelerators.device_count > 1


def select_device(
    value: str, accelerators: Accelerators, *, worker: str | None = None, asked_by: str = "device"
) -> torch.device:
    """The device in force for ``value``: ``auto`` takes CUDA, else MPS, else the CPU; a device asked for by
    name must exist (:class:`DeviceError` otherwise, never a silent fall-back). With plain ``cuda``/``auto``
    and several GPUs, xdist worker ``gwN`` gets ``cuda:(N % count)``.

    Example:
        >>> select_device("cuda", Accelerators(cuda_available=True, device_count=2), worker="gw1")
        device(type='cuda', index=1)
        >>> select_device("mps", Accelerators(cuda_available=False, mps_available=True))
        device(type='mps')
    """
    import torch

    wanted = parse_device(value, asked_by=asked_by)
    if wanted == "auto":
        if accelerators.cuda_available:
            wanted = "cuda"
        elif accelerators.mps_available:
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted == "mps":
        if not accelerators.mps_available:
            raise DeviceError(
                f"{asked_by}={value} asked for MPS, but torch.backends.mps.is_available() is False (MPS needs "
                f"Apple silicon with macOS 12.3+ and a torch build with MPS): run on such a Mac or use {asked_by}=cpu"
            )
        return torch.device("mps")
    if not accelerators.cuda_available:
        raise DeviceError(
            f"{asked_by}={value} asked for CUDA, but {_no_cuda(accelerators)}: run on a GPU runner or use {asked_by}=cpu"
        )
    count = accelerators.device_count
    if wanted == "cuda":
        n = worker_index(worker)
        return torch.device("cuda", 0 if n is None else n % count)
    index = int(wanted.split(":")[1])
    if index >= count:
        visible = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise DeviceError(
            f"{asked_by}={value} asked for GPU {index}, but only {count} CUDA device{'s' if count > 1 else ''} "
            f"{'are' if count > 1 else 'is'} visible ({visible}; CUDA_VISIBLE_DEVICES renumbers them from 0): "
            f"use {visible} or {asked_by}=cuda"
        )
    return torch.device("cuda", index)


def cuda_skip_reason(device: torch.device, accelerators: Accelerators, *, asked_by: str = "device") -> str | None:
    """Why a test that needs CUDA cannot run on ``device`` (``None`` when it can).

    Example:
        >>> import torch
        >>> cuda_skip_reason(torch.device("cpu"), Accelerators(cuda_available=False, cuda_version=None))
        'test needs a CUDA device: torch.cuda.is_available() is False (this torch build has no CUDA support)'
    """
    if device.type == "cuda":
        return None
    if not accelerators.cuda_available:
        return f"test needs a CUDA device: {_no_cuda(accelerators)}"
    return f"test needs a CUDA device, but the session runs on {device} ({asked_by}); use {asked_by}=cuda to run it"


def header_lines(
    device: torch.device,
    asked: str,
    accelerators: Accelerators,
    *,
    torch_version: str,
    torchvision_version: str,
    gpu_names: tuple[str, ...] = (),
    cudnn_version: int | None = None,
    xdist: bool = False,
) -> list[str]:
    """Lines for pytest's report header: versions, the device in force and why, the GPUs when present, and
    how pytest-xdist workers share them (``xdist``: the run has workers).

    Example:
        >>> import torch
        >>> header_lines(torch.device("cpu"), "auto", Accelerators(cuda_available=False, cuda_version="12.4"),
        ...              torch_version="2.5.0", torchvision_version="0.20.0")
        ['camcheck: torch 2.5.0, torchvision 0.20.0', 'camcheck: device cpu (asked: auto; no CUDA device, no MPS)']
    """
    lines = [f"camcheck: torch {torch_version}, torchvision {torchvision_version}"]
    if asked == "auto" and device.type == "cpu":
        why = f"asked: auto; no CUDA {'build' if accelerators.cuda_version is None else 'device'}, no MPS"
    else:
        why = f"asked: {asked}"
    lines.append(f"camcheck: device {device} ({why})")
    if accelerators.cuda_available:
        gpus = ", ".join(f"cuda:{i} {name}" for i, name in enumerate(gpu_names))
        lines.append(f"camcheck: CUDA {accelerators.cuda_version}, cuDNN {cudnn_version}, GPUs: {gpus}")
    if xdist and spreads_workers(asked, accelerators):
        count = accelerators.device_count
        lines.append(f"camcheck: xdist workers spread over {count} GPUs (worker gwN runs on cuda:N % {count})")
    return lines


def _no_cuda(accelerators: Accelerators) -> str:
    if accelerators.cuda_version is None:
        return "torch.cuda.is_available() is False (this torch build has no CUDA support)"
    return (
        f"torch.cuda.is_available() is False (torch built with CUDA {accelerators.cuda_version}, "
        "but no GPU or driver is visible)"
    )
