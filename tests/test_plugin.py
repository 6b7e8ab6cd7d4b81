"""The pytest plugin in real sessions (pytester): options, ini, environment, marker, header, fixtures, xdist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pytest_camcheck import context, zoo
from pytest_camcheck.plugin import CamcheckConfig

from .models import TinyClassifier
from .sessions import LEAN, lean_run

NO_CUDA = not torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(not NO_CUDA, reason="checks what happens on a machine without CUDA")

DEVICE_TEST = """
    import torch

    def test_device(camcheck_device, camcheck_config):
        assert camcheck_device == torch.device("cpu")
        print("ASKED", camcheck_config.device_asked, "BY", camcheck_config.device_asked_by)
"""

CONFTEST = """
    from pathlib import Path

    from pytest_camcheck.zoo import register_model
    from tests_models import TinyClassifier

    CHECKPOINT = Path(__file__).parent / "tiny.pt"


    @register_model("our-classifier", checkpoint=CHECKPOINT, categories=["cat", "dog", "bird"])
    def tiny():
        return TinyClassifier()
"""

MODELS_TEST = """
    import torch

    from pytest_camcheck import compute_cam
    from pytest_camcheck.zoo import model_info
    from conftest import CHECKPOINT


    def test_registered(camcheck_model, camcheck_device):
        model = camcheck_model("our-classifier")
        assert model is camcheck_model("our-classifier")
        assert not model.training
        assert model_info(model).categories == ("cat", "dog", "bird")
        assert torch.equal(model.fc.weight, torch.load(CHECKPOINT, weights_only=True)["fc.weight"])
        assert next(model.parameters()).device == camcheck_device
        assert compute_cam(model, torch.rand(3, 24, 24), target="dog", layer="features").label == "dog"


    def test_bundled(camcheck_model):
        model = camcheck_model("camcheck-shapes")
        assert not model.training
        assert model_info(model).categories[:3] == ("circle", "square", "triangle")


    def test_resnet18(camcheck_model):
        camcheck_model("resnet18")
        raise AssertionError("resnet18 weights cannot be here")
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("CAMCHECK_", "PYTEST_XDIST_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(zoo, "_REGISTRY", {})


@pytest.fixture
def models_project(project: pytest.Pytester) -> pytest.Pytester:
    """A project with a registered model (conftest + checkpoint) and tests of three kinds of model."""
    project.makeconftest(CONFTEST)
    torch.save(TinyClassifier(seed=0).state_dict(), project.path / "tiny.pt")
    project.makepyfile(test_models=MODELS_TEST)
    return project


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return lean_run(pytester, *args)


def run_subprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return lean_run(pytester, *args, subprocess=True)


def asked(result: pytest.RunResult) -> str:
    lines = [line[line.index("ASKED "):] for line in result.outlines if "ASKED " in line]
    assert len(lines) == 1, result.outlines
    return lines[0]


def test_option_sets_the_device(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TEST)
    result = run(pytester, "--camcheck-device=cpu", "-s")
    result.assert_outcomes(passed=1)
    assert asked(result) == "ASKED cpu BY --camcheck-device"


def test_ini_sets_the_device(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ncamcheck_device = CPU\n")
    pytester.makepyfile(DEVICE_TEST)
    result = run(pytester, "-s")
    result.assert_outcomes(passed=1)
    assert asked(result) == "ASKED cpu BY ini camcheck_device"


def test_command_line_beats_environment_beats_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\ncamcheck_device = gpu\n")
    pytester.makepyfile(DEVICE_TEST)
    monkeypatch.setenv("CAMCHECK_DEVICE", "cpu")
    result = run(pytester, "-s")
    result.assert_outcomes(passed=1)
    assert asked(result) == "ASKED cpu BY CAMCHECK_DEVICE"
    monkeypatch.setenv("CAMCHECK_DEVICE", "cuda:x")
    result = run(pytester, "-s", "--camcheck-device=cpu")
    result.assert_outcomes(passed=1)
    assert asked(result) == "ASKED cpu BY --camcheck-device"


@needs_no_cuda
def test_missing_cuda_stops_the_run_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TEST)
    result = run(pytester, "--camcheck-device=cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: --camcheck-device=cuda asked for CUDA, but torch.cuda.is_available() is False (*): "
        "run on a GPU runner or use --camcheck-device=cpu",
    ])
    assert "passed" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (["--camcheck-device=gpu"], "", "ERROR: --camcheck-device=gpu is not a device: use auto, cpu, cuda, cuda:N *"),
        (["--camcheck-device=cuda:x"], "", "ERROR: --camcheck-device=cuda:x is not a device: the GPU index *"),
        ([], "camcheck_device = tpu", "ERROR: ini camcheck_device=tpu is not a device: use auto, *"),
        (["--camcheck-weights-dir=nowhere"], "", "ERROR: --camcheck-weights-dir=nowhere: folder */nowhere does not "
                                                 "exist; create it or fix the path"),
        (["--camcheck-images-dir=pics"], "", "ERROR: --camcheck-images-dir=pics: folder */pics does not exist; *"),
        ([], "camcheck_images_dir =\n    pics", "ERROR: ini camcheck_images_dir=pics: folder */pics does not exist*"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], ini: str, expected: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(DEVICE_TEST)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


@pytest.mark.parametrize("value, expected", [
    ("afile", "ERROR: --camcheck-artifacts=afile: it is a file, not a folder; give a folder*"),
    ("afile/sub", "ERROR: --camcheck-artifacts=afile/sub: */afile is a file, not a folder; give a folder*"),
])
def test_an_artifacts_path_that_is_a_file_is_a_usage_error(pytester: pytest.Pytester, value: str,
                                                           expected: str) -> None:
    (pytester.path / "afile").write_text("the user's file")
    pytester.makepyfile(DEVICE_TEST)
    result = run(pytester, f"--camcheck-artifacts={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert (pytester.path / "afile").read_text() == "the user's file"


def test_bad_offline_environment_value(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(DEVICE_TEST)
    monkeypatch.setenv("CAMCHECK_OFFLINE", "maybe")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: CAMCHECK_OFFLINE=maybe is not a yes/no value; use 1 or 0*"])


def test_cuda_marker_is_registered_and_skips_without_cuda(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.camcheck_cuda
        def test_on_gpu(camcheck_device):
            assert camcheck_device.type == "cuda"

        def test_anywhere():
            pass
    """)
    result = run(pytester, "--strict-markers", "-rs")
    if NO_CUDA:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines([
            "SKIPPED [[]1[]] test_cuda_marker_is_registered_and_skips_without_cuda.py:3: test needs a CUDA device: "
            "torch.cuda.is_available() is False*",
        ])
    else:
        result.assert_outcomes(passed=2)
    result = run(pytester, "--strict-markers", "-rs", "--camcheck-device=cpu")
    result.assert_outcomes(passed=1, skipped=1)
    if not NO_CUDA:
        result.stdout.fnmatch_lines(
            ["SKIPPED * the session runs on cpu (--camcheck-device); use --camcheck-device=cuda*"])
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.camcheck_cuda: test needs a CUDA device; skipped without one*"])


def test_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run(pytester, "--fixtures")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*fixtures defined from pytest_camcheck.plugin*",
        "camcheck_config [[]session scope[]]*",
        "    The session's camcheck settings*",
        "camcheck_device [[]session scope[]]*",
        "    The ``torch.device`` in force*",
        "camcheck_model [[]session scope[]]*",
        '    Factory ``camcheck_model(name, *, weights="DEFAULT") -> nn.Module``*',
        "camcheck_image [[]session scope[]]*",
        "    Factory ``camcheck_image(name) -> SampleImage``*",
    ])


def test_help_lists_the_options_in_one_group(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    assert result.ret == 0
    text = result.stdout.str()
    group = text.index("camcheck: tests about where a vision model looks:")
    for option in ("--camcheck-device=DEVICE", "--camcheck-weights-dir=DIR", "--camcheck-offline",
                   "--camcheck-images-dir=DIR", "--camcheck-artifacts=DIR"):
        assert text.index(option) > group, option
    for ini in ("camcheck_device", "camcheck_weights_dir", "camcheck_offline", "camcheck_images_dir",
                "camcheck_artifacts"):
        assert f"  {ini} (" in text, ini


def test_report_header_shows_versions_and_device(pytester: pytest.Pytester) -> None:
    from importlib.metadata import version

    versions = f"camcheck: torch {version('torch')}, torchvision {version('torchvision')}"
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run(pytester)
    result.stdout.fnmatch_lines([versions, "camcheck: device auto (chosen when a camcheck fixture first needs it*"])
    assert "camcheck: device cpu" not in result.stdout.str() and "camcheck: device cuda" not in result.stdout.str()
    device = "cpu" if NO_CUDA else "cuda:0"
    pytester.makepyfile("def test_device(camcheck_device):\n    pass\n")
    result = run(pytester)  # chosen during the run: the terminal summary says which and why
    result.stdout.fnmatch_lines([versions, "camcheck: device auto (chosen when*", "*",
                                 f"camcheck: device {device} (asked: auto*"])
    result = run(pytester, "--camcheck-device=cpu")  # named explicitly: checked and shown at start
    result.stdout.fnmatch_lines([versions, "camcheck: device cpu (asked: cpu)", "*"])
    if not NO_CUDA:
        result = run(pytester, "--camcheck-device=cuda")
        result.stdout.fnmatch_lines([f"camcheck: CUDA {torch.version.cuda}, cuDNN *, GPUs: cuda:0 *"])


def test_missing_torchvision_weights_offline_skip_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_resnet18(camcheck_model):
            camcheck_model("resnet18")
            raise AssertionError("resnet18 weights cannot be here")

        def test_again(camcheck_model):
            camcheck_model("resnet18", weights="IMAGENET1K_V1")
    """)
    result = run(pytester, "--camcheck-offline", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "SKIPPED [[]1[]] test_missing_torchvision_weights_offline_skip_the_test.py:2: weights file "
        "resnet18-f37072fd.pth not found in */torch-home/hub/checkpoints (torch hub cache), and offline mode is on*"
        "Fix: download https://download.pytorch.org/models/resnet18-f37072fd.pth and put resnet18-f37072fd.pth in "
        "*/torch-home/hub/checkpoints, or set CAMCHECK_WEIGHTS_DIR*",
        "SKIPPED [[]1[]] test_missing_torchvision_weights_offline_skip_the_test.py:6: weights file "
        "resnet18-f37072fd.pth*",
    ])


def test_offline_from_ini_and_a_weights_dir_with_a_damaged_file(pytester: pytest.Pytester) -> None:
    (pytester.mkdir("weights") / "resnet18-f37072fd.pth").write_bytes(b"not the published file")
    pytester.makeini("[pytest]\ncamcheck_offline = true\ncamcheck_weights_dir = weights\n")
    pytester.makepyfile("""
        def test_resnet18(camcheck_model):
            camcheck_model("resnet18")
    """)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*CamCheckError: */weights/resnet18-f37072fd.pth: sha256 starts with *, expected f37072fd; the file is "
        "incomplete, damaged or not the one expected. Fix: delete it and download again from "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ])


def test_registered_and_bundled_models_are_served(models_project: pytest.Pytester) -> None:
    result = run(models_project, "--camcheck-offline", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] test_models.py:25: weights file resnet18-f37072fd.pth not found in *"])


def test_same_results_under_xdist(models_project: pytest.Pytester) -> None:
    models_project.makepyfile(test_workers="""
        import os

        import torch

        def test_worker_device(camcheck_device, camcheck_config, tmp_path_factory):
            assert os.environ["PYTEST_XDIST_WORKER"] in ("gw0", "gw1")
            assert camcheck_device == torch.device("cpu")
            assert camcheck_config.artifacts_dir == tmp_path_factory.getbasetemp() / "camcheck"
            assert camcheck_config.artifacts_dir.parent.name == "popen-" + os.environ["PYTEST_XDIST_WORKER"]
    """)
    result = run_subprocess(models_project, "-n", "2", "-p", "xdist", "--camcheck-offline", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines([
        "created: 2/2 workers",
        "SKIPPED [[]1[]] test_models.py:25: weights file resnet18-f37072fd.pth not found in *",
    ])


def test_images_from_fixtures_and_images_dir(pytester: pytest.Pytester) -> None:
    from PIL import Image

    for folder, name in (("fixtures", "scene"), ("more/pics", "other")):
        where = pytester.path / folder
        where.mkdir(parents=True)
        Image.new("RGB", (40, 30), "gray").save(where / f"{name}.png")
        (where / f"{name}.json").write_text(f'{{"image": "{name}.png", "regions": {{"thing": [5, 6, 20, 25]}}}}')
    pytester.makepyfile("""
        def test_images(camcheck_image, camcheck_config, pytestconfig):
            assert camcheck_image("scene").regions["thing"].x0 == 5
            assert camcheck_image("other").image.size == (40, 30)
            assert camcheck_image("astronaut").regions["helmet"] is not None
            root = pytestconfig.rootpath
            assert camcheck_config.images_dirs == ((root / "more/pics").resolve(), (root / "fixtures").resolve())
    """)
    result = run(pytester, "--camcheck-images-dir=more/pics")
    result.assert_outcomes(passed=1)


def test_artifacts_dir_option_and_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from pytest_camcheck import context

        def test_artifacts(camcheck_config, tmp_path_factory, request):
            expected = request.config.getoption("camcheck_artifacts")
            if expected is None:
                assert camcheck_config.artifacts_dir == tmp_path_factory.getbasetemp() / "camcheck"
            else:
                assert camcheck_config.artifacts_dir == request.config.invocation_params.dir / expected
            assert context.artifacts_dir() == camcheck_config.artifacts_dir
    """)
    before = context.artifacts_dir()
    run(pytester).assert_outcomes(passed=1)
    run(pytester, "--camcheck-artifacts=out/pictures").assert_outcomes(passed=1)
    assert context.artifacts_dir() == before


def test_config_is_a_frozen_dataclass_on_the_stash(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure(*LEAN, "--camcheck-device=cpu", "--camcheck-offline")
    from pytest_camcheck.plugin import CONFIG_KEY

    settings = config.stash[CONFIG_KEY]
    assert isinstance(settings, CamcheckConfig)
    assert (settings.device, settings.offline, settings.weights_dir, settings.artifacts_dir) == (
        torch.device("cpu"), True, None, None)
    with pytest.raises(AttributeError):
        settings.offline = False  # type: ignore[misc]
