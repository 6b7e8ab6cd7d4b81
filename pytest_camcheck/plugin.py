"""pytest hooks of pytest-camcheck: options and ini values, the ``camcheck_cuda`` marker, the report header and
the fixtures. The logic lives in :mod:`pytest_camcheck.devices` and :mod:`pytest_camcheck.zoo`.

Every setting is read from the command line, else its environment variable (where it has one), else the ini
file, else its default:

- ``--camcheck-device`` / ``CAMCHECK_DEVICE`` / ini ``camcheck_device``: auto (cuda, else mps, else cpu), cpu,
  cuda, cuda:N or mps. A device named but not present stops the run with a usage error.
- ``--camcheck-weights-dir`` / ``CAMCHECK_WEIGHTS_DIR`` / ini ``camcheck_weights_dir``: folder searched for
  weights files before the torch hub cache.
- ``--camcheck-offline`` / ``CAMCHECK_OFFLINE=1`` / ini ``camcheck_offline``: never download weights.
- ``--camcheck-images-dir`` (repeatable, adds to) ini ``camcheck_images_dir`` (one per line): folders of
  annotated images; ``<rootdir>/fixtures`` is searched too when it exists.
- ``--camcheck-artifacts`` / ``CAMCHECK_ARTIFACTS`` / ini ``camcheck_artifacts``: folder for overlay pictures,
  default ``<basetemp>/camcheck``.
- ``--camcheck-method`` / ini ``camcheck_method``, ``--camcheck-min-lift`` / ini ``camcheck_min_lift``,
  ``--camcheck-tolerance`` / ini ``camcheck_tolerance``: defaults of the ``camcheck`` fixture's assertions.

Every camcheck assertion made during a test is recorded in ``item.user_properties`` (JUnit XML) as
``camcheck.<check>`` with its metrics and verdict; with pytest-html, a failing check's overlay is embedded in the
report.

Paths on the command line or in the environment are relative to the invocation directory, ini paths to the
rootdir.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
import torchvision
from torch import nn

from . import context
from .devices import DEVICE_CHOICES, Accelerators, cuda_skip_reason, header_lines, parse_device, select_device
from .errors import CamCheckError
from .assertions import DEFAULT_RULE, CamCheck, Rule
from .benchmarking import CamBenchmark
from .regression import DEFAULT_SPEARMAN_MIN, DEFAULT_SSIM_MIN, CamRegression, baseline_location, check_threshold
from .report import CheckReport, receive_from_worker, send_to_controller
from .engine.methods import METHODS, get_method
from .images import SampleImage, sample_image
from .zoo import WEIGHTS_DIR_ENV, ModelCache, WeightsUnavailable

__all__ = ["CONFIG_KEY", "RECORDS_KEY", "REPORT_KEY", "CamcheckConfig"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class CamcheckConfig:
    """The session's camcheck settings, resolved and checked when pytest starts.

    ``device_asked`` is the device setting as written (``auto``, ``cuda``...) and ``device_asked_by`` the
    setting it came from (``--camcheck-device``, ``CAMCHECK_DEVICE`` or ``ini camcheck_device``).
    ``artifacts_dir`` is ``None`` in ``config.stash[CONFIG_KEY]`` when left at its default; the
    ``camcheck_config`` fixture fills in ``<basetemp>/camcheck``. Pytest-xdist workers each have their own
    basetemp, and artifact file names carry the test id, worker id and process id
    (:func:`pytest_camcheck.context.artifact_path`), so files never collide.

    Example:
        >>> CamcheckConfig(torch.device("cpu"), "auto", "ini camcheck_device", False, None, (), None).device
        device(type='cpu')
    """

    device: torch.device
    device_asked: str
    device_asked_by: str
    offline: bool
    weights_dir: Path | None
    images_dirs: tuple[Path, ...]
    artifacts_dir: Path | None
    method: str = "gradcam"
    rule: Rule = DEFAULT_RULE


CONFIG_KEY = pytest.StashKey[CamcheckConfig]()
RECORDS_KEY = pytest.StashKey[list]()
REPORT_KEY = pytest.StashKey[CheckReport]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("camcheck", "camcheck: tests about where a vision model looks")
    group.addoption(
        "--camcheck-device", dest="camcheck_device", metavar="DEVICE",
        help=f"torch device for models and maps: {DEVICE_CHOICES}; a device named but not present stops the run "
        "(env CAMCHECK_DEVICE, ini camcheck_device, default auto: cuda, else mps, else cpu)",
    )
    group.addoption(
        "--camcheck-weights-dir", dest="camcheck_weights_dir", metavar="DIR",
        help=f"folder searched first for weights files, before the torch hub cache (env {WEIGHTS_DIR_ENV}, "
        "ini camcheck_weights_dir)",
    )
    group.addoption(
        "--camcheck-offline", dest="camcheck_offline", action="store_true", default=None,
        help="never download weights: tests whose weights are missing are skipped, saying which file to provide "
        "(env CAMCHECK_OFFLINE=1, ini camcheck_offline)",
    )
    group.addoption(
        "--camcheck-images-dir", dest="camcheck_images_dir", metavar="DIR", action="append", default=[],
        help="folder of annotated images (<name>.json) for camcheck_image; may be repeated "
        "(ini camcheck_images_dir, one per line; <rootdir>/fixtures is always searched when it exists)",
    )
    group.addoption(
        "--camcheck-artifacts", dest="camcheck_artifacts", metavar="DIR",
        help="folder for overlay pictures of checks (env CAMCHECK_ARTIFACTS, ini camcheck_artifacts, "
        "default <basetemp>/camcheck)",
    )
    group.addoption(
        "--camcheck-method", dest="camcheck_method", metavar="METHOD",
        help=f"CAM method of the camcheck fixture's checks: {', '.join(METHODS)} (ini camcheck_method, "
        "default gradcam)",
    )
    group.addoption(
        "--camcheck-min-lift", dest="camcheck_min_lift", metavar="X",
        help=f"default min_lift of camcheck.attends_to (ini camcheck_min_lift, default {DEFAULT_RULE.min_lift})",
    )
    group.addoption(
        "--camcheck-tolerance", dest="camcheck_tolerance", metavar="PX",
        help=f"default pointing-game tolerance in px (ini camcheck_tolerance, default {DEFAULT_RULE.tolerance:g})",
    )
    group.addoption(
        "--camcheck-update", dest="camcheck_update", action="store_true", default=None,
        help="write the current maps as the new cam_regression baselines and pass, listing every file written "
        "(ini camcheck_update)",
    )
    group.addoption("--camcheck-ssim-min", dest="camcheck_ssim_min", metavar="X",
                    help=f"cam_regression: least SSIM with the baseline (ini camcheck_ssim_min, default "
                    f"{DEFAULT_SSIM_MIN})")
    group.addoption("--camcheck-spearman-min", dest="camcheck_spearman_min", metavar="X",
                    help=f"cam_regression: least rank correlation with the baseline (ini camcheck_spearman_min, "
                    f"default {DEFAULT_SPEARMAN_MIN})")
    group.addoption("--camcheck-report", dest="camcheck_report", metavar="PATH.html",
                    help="write one self-contained HTML page with every camcheck check of the run (ini camcheck_report)")
    group.addoption("--camcheck-report-json", dest="camcheck_report_json", metavar="PATH",
                    help="write every camcheck check of the run as JSON (ini camcheck_report_json)")
    parser.addini("camcheck_update", "write current maps as the new cam_regression baselines", type="bool",
                  default=False)
    parser.addini("camcheck_ssim_min", "cam_regression: least SSIM with the baseline", default=str(DEFAULT_SSIM_MIN))
    parser.addini("camcheck_spearman_min", "cam_regression: least rank correlation with the baseline",
                  default=str(DEFAULT_SPEARMAN_MIN))
    parser.addini("camcheck_report", "HTML report of every camcheck check (relative to rootdir)", default="")
    parser.addini("camcheck_report_json", "JSON report of every camcheck check (relative to rootdir)", default="")
    parser.addini("camcheck_device", f"torch device: {DEVICE_CHOICES}", default="auto")
    parser.addini("camcheck_method", "CAM method of the camcheck fixture's checks", default="gradcam")
    parser.addini("camcheck_min_lift", "default min_lift of camcheck.attends_to", default=str(DEFAULT_RULE.min_lift))
    parser.addini("camcheck_tolerance", "default pointing-game tolerance in px", default=str(DEFAULT_RULE.tolerance))
    parser.addini("camcheck_weights_dir", "folder searched first for weights files (relative to rootdir)", default="")
    parser.addini("camcheck_offline", "never download weights; skip tests whose weights are missing", type="bool",
                  default=False)
    parser.addini("camcheck_images_dir", "folders of annotated images, one per line (relative to rootdir)",
                  type="linelist", default=[])
    parser.addini("camcheck_artifacts", "folder for overlay pictures (relative to rootdir)", default="")


def _setting(config: pytest.Config, name: str, env: str) -> tuple[str, str, Path]:
    """(value, the setting it came from, the folder relative paths start from), empty value when unset."""
    given = config.getoption(name)
    if given is not None:
        return str(given), "--" + name.replace("_", "-"), config.invocation_params.dir
    if os.environ.get(env):
        return os.environ[env], env, config.invocation_params.dir
    return str(config.getini(name)), f"ini {name}", config.rootpath


def _folder(value: str, asked_by: str, base: Path) -> Path:
    folder = base / Path(value).expanduser()
    if not folder.is_dir():
        raise CamCheckError(f"{asked_by}={value}: folder {folder.resolve()} does not exist; create it or fix the path")
    return folder.resolve()


def _offline(config: pytest.Config) -> bool:
    if config.getoption("camcheck_offline"):
        return True
    if "CAMCHECK_OFFLINE" in os.environ:
        value = os.environ["CAMCHECK_OFFLINE"].strip().lower()
        if value not in _TRUE + _FALSE:
            raise CamCheckError(f"CAMCHECK_OFFLINE={value} is not a yes/no value; use 1 or 0 (true/false, yes/no)")
        return value in _TRUE
    return bool(config.getini("camcheck_offline"))


def _resolve(config: pytest.Config) -> CamcheckConfig:
    asked, asked_by, _ = _setting(config, "camcheck_device", "CAMCHECK_DEVICE")
    device = select_device(asked, Accelerators.probe(), worker=os.environ.get("PYTEST_XDIST_WORKER"),
                           asked_by=asked_by)
    weights, weights_by, weights_base = _setting(config, "camcheck_weights_dir", WEIGHTS_DIR_ENV)
    artifacts, _, artifacts_base = _setting(config, "camcheck_artifacts", "CAMCHECK_ARTIFACTS")
    images = [_folder(d, "--camcheck-images-dir", config.invocation_params.dir)
              for d in config.getoption("camcheck_images_dir")]
    images += [_folder(d, "ini camcheck_images_dir", config.rootpath) for d in config.getini("camcheck_images_dir")]
    if (config.rootpath / "fixtures").is_dir():
        images.append((config.rootpath / "fixtures").resolve())
    return CamcheckConfig(
        device=device,
        device_asked=parse_device(asked),
        device_asked_by=asked_by,
        offline=_offline(config),
        weights_dir=_folder(weights, weights_by, weights_base) if weights else None,
        images_dirs=tuple(dict.fromkeys(images)),
        artifacts_dir=(artifacts_base / Path(artifacts).expanduser()).resolve() if artifacts else None,
        method=_method(config),
        rule=Rule(min_lift=_number(config, "camcheck_min_lift"), tolerance=_number(config, "camcheck_tolerance")),
    )


def _method(config: pytest.Config) -> str:
    value, asked_by, _ = _setting(config, "camcheck_method", "CAMCHECK_METHOD")
    try:
        return get_method(value).name
    except CamCheckError as err:
        raise CamCheckError(f"{asked_by}={value}: {err}") from None


def _number(config: pytest.Config, name: str) -> float:
    value, asked_by, _ = _setting(config, name, name.upper())
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= 0 or number == float("inf"):
        raise CamCheckError(f"{asked_by}={value} is not a number >= 0; fix the setting")
    return number


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "camcheck_cuda: test needs a CUDA device; skipped without one (or when --camcheck-device names another)",
    )
    if config.option.help:
        return
    try:
        config.stash[CONFIG_KEY] = _resolve(config)
        for name in ("camcheck_ssim_min", "camcheck_spearman_min"):
            check_threshold(name, _option_or_ini(config, name))
    except CamCheckError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[REPORT_KEY] = CheckReport()


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[CONFIG_KEY]
    accelerators = Accelerators.probe()
    return header_lines(
        settings.device,
        settings.device_asked,
        accelerators,
        torch_version=torch.__version__,
        torchvision_version=torchvision.__version__,
        gpu_names=tuple(torch.cuda.get_device_name(i) for i in range(accelerators.device_count)),
        cudnn_version=torch.backends.cudnn.version() if accelerators.cuda_available else None,
        xdist=getattr(config.option, "dist", "no") != "no",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[CONFIG_KEY]
    reason = cuda_skip_reason(settings.device, Accelerators.probe(), asked_by=settings.device_asked_by)
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("camcheck_cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def camcheck_config(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CamcheckConfig:
    """The session's camcheck settings (:class:`pytest_camcheck.plugin.CamcheckConfig`): device, offline,
    weights_dir, images_dirs, and artifacts_dir (default ``<basetemp>/camcheck``, per xdist worker)."""
    settings = request.config.stash[CONFIG_KEY]
    if settings.artifacts_dir is None:
        settings = replace(settings, artifacts_dir=tmp_path_factory.getbasetemp() / "camcheck")
    return settings


@pytest.fixture(scope="session", autouse=True)
def _camcheck_artifacts(camcheck_config: CamcheckConfig) -> Iterator[None]:
    before = context.artifacts_dir()
    context.set_artifacts_dir(camcheck_config.artifacts_dir)
    yield
    context.set_artifacts_dir(before)


@pytest.fixture(scope="session")
def camcheck_device(camcheck_config: CamcheckConfig) -> torch.device:
    """The ``torch.device`` in force (``--camcheck-device``, default auto: cuda, else mps, else cpu; one GPU per
    xdist worker when several are visible)."""
    return camcheck_config.device


@pytest.fixture(scope="session")
def camcheck_model(camcheck_config: CamcheckConfig) -> Callable[..., nn.Module]:
    """Factory ``camcheck_model(name, *, weights="DEFAULT") -> nn.Module``: a model in eval mode on the session's
    device, with its categories and preprocessing attached, built once per session (per xdist worker) and shared:
    deep-copy it before changing it.

    ``name``: a torchvision classification model ("resnet18"), a bundled model ("camcheck-shapes") or one
    registered with ``pytest_camcheck.register_model``. ``weights`` (torchvision only): "DEFAULT", a name
    such as "IMAGENET1K_V1", or None for a random initialisation with a fixed seed. Missing weights that cannot
    be downloaded (``--camcheck-offline``, no network) skip the test, naming the file and where to put it.

    Example: ``compute_cam(camcheck_model("resnet18"), image, target="golden retriever")``
    """
    cache = ModelCache(device=camcheck_config.device, weights_dir=camcheck_config.weights_dir,
                       offline=camcheck_config.offline)

    def model(name: str, *, weights: Any = "DEFAULT") -> nn.Module:
        __tracebackhide__ = True
        try:
            return cache.get(name, weights=weights)
        except WeightsUnavailable as err:
            pytest.skip(str(err))

    return model


@pytest.fixture(scope="session")
def camcheck_image(camcheck_config: CamcheckConfig) -> Callable[[str], SampleImage]:
    """Factory ``camcheck_image(name) -> SampleImage``: a sample image (``.image``, a PIL image) with named regions
    (``.regions["helmet"]``, a ``Box`` in its pixels), from the built-in catalogue or ``<name>.json`` in
    ``--camcheck-images-dir`` folders and ``<rootdir>/fixtures``.

    Example: ``camcheck_image("astronaut").regions["helmet"]``
    """

    def image(name: str) -> SampleImage:
        return sample_image(name, search_dirs=camcheck_config.images_dirs)

    return image


@pytest.fixture(scope="session")
def camcheck(camcheck_config: CamcheckConfig) -> CamCheck:
    """The attention assertions bound to the session: ``camcheck.attends_to(model, image, target, region)``,
    ``camcheck.not_attends_to(...)``, ``camcheck.attends_more_to(..., region, other_region)`` and
    ``camcheck.compute(...)``, with the device of ``--camcheck-device`` and the method and thresholds of
    ``--camcheck-method``, ``--camcheck-min-lift`` and ``--camcheck-tolerance``.

    Example: ``camcheck.attends_to(camcheck_model("camcheck-shapes"), scene.image, "circle", scene.box)``
    """
    return CamCheck(device=camcheck_config.device, method=camcheck_config.method, rule=camcheck_config.rule)


def _property(rec: context.CheckRecord) -> tuple[str, str]:
    data = {"passed": rec.passed, "method": rec.method, "layer": rec.layer, "target": rec.target,
            "label": rec.label, **rec.metrics, **{f"threshold.{k}": v for k, v in rec.thresholds.items()}}
    if rec.overlay is not None:
        data["overlay"] = str(rec.overlay)
    return f"camcheck.{rec.check}", json.dumps(data, default=str)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    records = item.stash.setdefault(RECORDS_KEY, [])

    def listen(rec: context.CheckRecord) -> None:
        records.append(rec)
        item.user_properties.append(_property(rec))
        item.config.stash[REPORT_KEY].add_record(rec)

    context.add_listener(listen)
    try:
        return (yield)
    finally:
        context.remove_listener(listen)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    report = yield
    item.config.stash[REPORT_KEY].add_test_report(report, camcheck=bool(item.stash.get(RECORDS_KEY, [])) or
                                                  "cam_regression" in getattr(item, "fixturenames", ()))
    if call.when == "call" and item.config.pluginmanager.hasplugin("html"):
        import pytest_html

        pictures = [r.overlay for r in item.stash.get(RECORDS_KEY, []) if r.overlay is not None]
        extras = getattr(report, "extras", [])
        for path in pictures:
            if Path(path).is_file():
                extras.append(pytest_html.extras.png(base64.b64encode(Path(path).read_bytes()).decode(), name=path.name))
        report.extras = extras
    return report


@pytest.fixture
def cam_benchmark(request: pytest.FixtureRequest) -> CamBenchmark:
    """Time ``compute_cam`` with pytest-benchmark: ``cam_benchmark(model, image, target, method=..., rounds=10)``
    returns the map(s) and records method, layer, batch, device, dtype, the median of a bare no-grad forward of
    the same model measured in the same test, and ``ratio_to_forward`` in ``extra_info`` (``--benchmark-json``).
    Under pytest-xdist, where pytest-benchmark turns itself off, it computes the map once and warns.

    Example: ``cam_benchmark(camcheck_model("camcheck-shapes"), scene.image, "circle", method="gradcam")``
    """
    xdist = request.config.pluginmanager.hasplugin("xdist") and getattr(request.config.option, "dist", "no") != "no"
    return CamBenchmark(request.getfixturevalue("benchmark"), xdist=xdist or bool(os.environ.get("PYTEST_XDIST_WORKER")))


def _option_or_ini(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name)
    return value if value is not None else config.getini(name)


@pytest.fixture
def cam_regression(request: pytest.FixtureRequest, camcheck_config: CamcheckConfig) -> Iterator[CamRegression]:
    """Map regression checks against baselines next to the test module (pytest-regressions style):
    ``cam_regression.check(model, image, target, **compute_cam keywords, ssim_min=..., spearman_min=...)``.

    The first run writes ``<module dir>/<module name>/<test>-<method>-<layer>-<target>.npz`` (+ a PNG preview) and
    fails so that you review and commit it; later runs compare with SSIM and rank correlation;
    ``--camcheck-update`` rewrites baselines and passes. Nothing existing is changed otherwise.

    Example: ``cam_regression.check(camcheck_model("camcheck-shapes"), scene.image, "circle")``
    """
    config = request.config
    folder, name = baseline_location(request.path, request.node.name)
    reg = CamRegression(folder, name, update=bool(_option_or_ini(config, "camcheck_update")),
                        ssim_min=check_threshold("camcheck_ssim_min", _option_or_ini(config, "camcheck_ssim_min")),
                        spearman_min=check_threshold("camcheck_spearman_min",
                                                     _option_or_ini(config, "camcheck_spearman_min")),
                        device=camcheck_config.device, method=camcheck_config.method,
                        pass_pictures=bool(_option_or_ini(config, "camcheck_report")))
    yield reg
    config.stash[REPORT_KEY].add_written(reg.written)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if REPORT_KEY not in config.stash:
        return
    report = config.stash[REPORT_KEY]
    if hasattr(config, "workeroutput"):
        send_to_controller(report, config.workeroutput)
        return
    for name, write in (("camcheck_report", report.write_html), ("camcheck_report_json", report.write_json)):
        given = config.getoption(name)
        if given:
            write(config.invocation_params.dir / given)
        elif config.getini(name):
            write(config.rootpath / config.getini(name))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    receive_from_worker(node.config.stash[REPORT_KEY], getattr(node, "workeroutput", {}))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if REPORT_KEY not in config.stash:
        return
    written = config.stash[REPORT_KEY].written
    if written:
        terminalreporter.write_sep("-", f"camcheck: {len(written)} baseline files written")
        for path in written:
            terminalreporter.write_line(str(path))
