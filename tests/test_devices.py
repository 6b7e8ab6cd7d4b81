"""Device parsing and selection rules, checked without a GPU."""

from __future__ import annotations

import pytest
import torch

from pytest_camcheck.devices import (
    Accelerators,
    DeviceError,
    cuda_skip_reason,
    header_lines,
    parse_device,
    select_device,
    spreads_workers,
    worker_index,
)
from pytest_camcheck.errors import CamCheckError

NO_GPU = Accelerators(cuda_available=False, cuda_version="12.4")
CPU_BUILD = Accelerators(cuda_available=False, cuda_version=None)
ONE_GPU = Accelerators(cuda_available=True, device_count=1, cuda_version="12.4")
FOUR_GPUS = Accelerators(cuda_available=True, device_count=4, cuda_version="12.4")
MAC = Accelerators(cuda_available=False, mps_available=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("auto", "auto"), ("cpu", "cpu"), (" CUDA ", "cuda"), ("cuda:0", "cuda:0"), ("cuda:07", "cuda:7"), ("mps", "mps")],
)
def test_parse_normalises(text: str, expected: str) -> None:
    assert parse_device(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("gpu", "(for a GPU: cuda)"),
        ("cuda:x", "the GPU index after 'cuda:' must be a whole number"),
        ("cuda:", "the GPU index after 'cuda:' must be a whole number"),
        ("cuda:-1", "the GPU index after 'cuda:' must be a whole number"),
        ("tpu", "use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"),
        ("", "use auto, cpu"),
    ],
)
def test_parse_rejects_with_the_setting_and_the_choices(text: str, fragment: str) -> None:
    with pytest.raises(DeviceError) as err:
        parse_device(text, asked_by="--camcheck-device")
    assert str(err.value).startswith(f"--camcheck-device={text} is not a device")
    assert fragment in str(err.value)
    assert isinstance(err.value, CamCheckError)


@pytest.mark.parametrize(
    ("accelerators", "expected"),
    [(NO_GPU, torch.device("cpu")), (MAC, torch.device("mps")), (ONE_GPU, torch.device("cuda", 0)),
     (Accelerators(cuda_available=True, device_count=2, mps_available=True), torch.device("cuda", 0))],
)
def test_auto_prefers_cuda_then_mps_then_cpu(accelerators: Accelerators, expected: torch.device) -> None:
    assert select_device("auto", accelerators) == expected


def test_cpu_is_always_there() -> None:
    assert select_device("cpu", FOUR_GPUS, worker="gw3") == torch.device("cpu")


def test_explicit_cuda_missing_is_an_error_with_the_reason_and_the_fix() -> None:
    with pytest.raises(DeviceError) as err:
        select_device("cuda", NO_GPU, asked_by="--camcheck-device")
    assert str(err.value) == (
        "--camcheck-device=cuda asked for CUDA, but torch.cuda.is_available() is False (torch built with CUDA 12.4, "
        "but no GPU or driver is visible): run on a GPU runner or use --camcheck-device=cpu"
    )


def test_explicit_cuda_on_a_cpu_build_says_the_build_has_no_cuda() -> None:
    with pytest.raises(DeviceError, match=r"this torch build has no CUDA support\): run on a GPU runner or use "
                                          r"CAMCHECK_DEVICE=cpu"):
        select_device("cuda:0", CPU_BUILD, asked_by="CAMCHECK_DEVICE")


def test_explicit_mps_missing_is_an_error() -> None:
    with pytest.raises(DeviceError, match=r"ini camcheck_device=mps asked for MPS, but "
                                          r"torch.backends.mps.is_available\(\) is False"):
        select_device("mps", FOUR_GPUS, asked_by="ini camcheck_device")


def test_cuda_index_out_of_range_names_the_visible_devices() -> None:
    with pytest.raises(DeviceError) as err:
        select_device("cuda:4", FOUR_GPUS, asked_by="--camcheck-device")
    assert str(err.value).startswith("--camcheck-device=cuda:4 asked for GPU 4, but only 4 CUDA devices are visible "
                                     "(cuda:0 to cuda:3;")
    assert str(err.value).endswith("use cuda:0 to cuda:3 or --camcheck-device=cuda")
    with pytest.raises(DeviceError, match=r"only 1 CUDA device is visible \(cuda:0;"):
        select_device("cuda:1", ONE_GPU)


def test_cuda_index_in_range() -> None:
    assert select_device("cuda:3", FOUR_GPUS) == torch.device("cuda", 3)


@pytest.mark.parametrize(("worker", "index"), [("gw0", 0), ("gw1", 1), ("gw3", 3), ("gw4", 0), ("gw9", 1), (None, 0)])
@pytest.mark.parametrize("asked", ["cuda", "auto"])
def test_xdist_workers_spread_over_gpus(asked: str, worker: str | None, index: int) -> None:
    assert select_device(asked, FOUR_GPUS, worker=worker) == torch.device("cuda", index)


def test_named_gpu_pins_every_worker() -> None:
    assert {select_device("cuda:2", FOUR_GPUS, worker=f"gw{n}") for n in range(6)} == {torch.device("cuda", 2)}
    assert not spreads_workers("cuda:2", FOUR_GPUS)
    assert spreads_workers("auto", FOUR_GPUS)
    assert not spreads_workers("cuda", ONE_GPU)
    assert not spreads_workers("auto", NO_GPU)


def test_worker_index() -> None:
    assert [worker_index(w) for w in ("gw0", "gw15", "master", "", None, "gwx")] == [0, 15, None, None, None, None]


def test_cuda_skip_reasons() -> None:
    assert cuda_skip_reason(torch.device("cuda", 0), ONE_GPU) is None
    assert cuda_skip_reason(torch.device("cpu"), NO_GPU) == (
        "test needs a CUDA device: torch.cuda.is_available() is False (torch built with CUDA 12.4, "
        "but no GPU or driver is visible)"
    )
    assert cuda_skip_reason(torch.device("cpu"), ONE_GPU, asked_by="--camcheck-device") == (
        "test needs a CUDA device, but the session runs on cpu (--camcheck-device); "
        "use --camcheck-device=cuda to run it"
    )


def test_header_without_gpu() -> None:
    lines = header_lines(torch.device("cpu"), "auto", NO_GPU, torch_version="2.5.0", torchvision_version="0.20.0")
    assert lines == ["camcheck: torch 2.5.0, torchvision 0.20.0",
                     "camcheck: device cpu (asked: auto; no CUDA device, no MPS)"]


def test_header_with_gpus_and_xdist() -> None:
    lines = header_lines(
        torch.device("cuda", 0), "cuda", Accelerators(cuda_available=True, device_count=2, cuda_version="12.4"),
        torch_version="2.5.0", torchvision_version="0.20.0", gpu_names=("H100", "A100"), cudnn_version=90100,
        xdist=True,
    )
    assert lines[1:] == [
        "camcheck: device cuda:0 (asked: cuda)",
        "camcheck: CUDA 12.4, cuDNN 90100, GPUs: cuda:0 H100, cuda:1 A100",
        "camcheck: xdist workers spread over 2 GPUs (worker gwN runs on cuda:N % 2)",
    ]


def test_probe_matches_torch() -> None:
    found = Accelerators.probe()
    assert found.cuda_available == torch.cuda.is_available()
    assert found.cuda_version == torch.version.cuda
    assert found.device_count == (torch.cuda.device_count() if found.cuda_available else 0)
