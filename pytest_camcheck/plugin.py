"""pytest hooks of pytest-camcheck: options and ini values, the ``camcheck_cuda`` marker, the report header and
the fixtures. The settings are declared in :mod:`pytest_camcheck.settings` (command line, else environment, else
ini, else default); the logic lives in :mod:`pytest_camcheck.devices`, :mod:`pytest_camcheck.zoo` and the modules
the fixtures name.

Importing this module imports neither torch nor torchvision nor scikit-image: a session that uses no camcheck
fixture pays nothing for the plugin. The device is chosen (and the accelerators probed, once) when a camcheck
fixture or a ``camcheck_cuda`` test first needs it, or at start when a device is named explicitly, so that a
device asked for but absent stops the run with a usage error.

Every camcheck assertion made during a test (its setup, call or teardown: checks in fixtures count) is recorded in
``item.user_properties`` (JUnit XML) as ``camcheck.<check>`` with its metrics and verdict; with pytest-html, a
failing check's overlay is embedded in the report. For the run report each phase's ``TestReport`` carries the
checks made and the baseline files written in that phase (``camcheck_checks``, ``camcheck_written``: plain data,
which pytest-xdist sends to the controller with the report), and the report is fed from
``pytest_runtest_logreport``: a test of a pytest-xdist worker that crashed is reported as failed, and the
crashed worker's earlier tests keep their checks.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from . import context
from .devices import Accelerators, cuda_skip_reason, header_lines, select_device
from .errors import CamCheckError
from .report import CheckReport, json_value
from .rule import DEFAULT_RULE, Rule
from .settings import DEFAULT_METHOD, DEFAULT_SPEARMAN_MIN, DEFAULT_SSIM_MIN, SETTINGS, resolve

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .assertions import CamCheck
    from .benchmarking import CamBenchmark
    from .images import SampleImage
    from .regression import CamRegression

__all__ = ["CONFIG_KEY", "RECORDS_KEY", "REPORT_KEY", "CamcheckConfig", "session_config"]


@dataclass(frozen=True)
class CamcheckConfig:
    """The session's camcheck settings (every one of :data:`pytest_camcheck.settings.SETTINGS`), resolved and
    checked when pytest starts.

    ``device_asked`` is the device setting as written (``auto``, ``cuda``...) and ``device_asked_by`` the
    setting it came from (``--camcheck-device``, ``CAMCHECK_DEVICE`` or ``ini camcheck_device``). ``device`` is
    the ``torch.device`` in force; in ``config.stash[CONFIG_KEY]`` it is ``None`` while an ``auto`` device has
    not been chosen yet (:func:`session_config` chooses it). ``artifacts_dir`` is ``None`` on the stash when left
    at its default; the ``camcheck_config`` fixture fills in ``<basetemp>/camcheck``. Pytest-xdist workers each
    have their own basetemp, and artifact file names carry the test id, worker id and process id
    (:func:`pytest_camcheck.context.artifact_path`), so files never collide. ``report`` and ``report_json`` are
    the report files to write at the end (``None``: none).

    Example:
        >>> import torch
        >>> CamcheckConfig(torch.device("cpu"), "auto", "ini camcheck_device", False, None, (), None).device
        device(type='cpu')
    """

    device: torch.device | None
    device_asked: str
    device_asked_by: str
    offline: bool
    weights_dir: Path | None
    images_dirs: tuple[Path, ...]
    artifacts_dir: Path | None
    method: str = DEFAULT_METHOD
    rule: Rule = DEFAULT_RULE
    update: bool = False
    ssim_min: float = DEFAULT_SSIM_MIN
    spearman_min: float = DEFAULT_SPEARMAN_MIN
    report: Path | None = None
    report_json: Path | None = None


CONFIG_KEY = pytest.StashKey[CamcheckConfig]()
RECORDS_KEY = pytest.StashKey[list]()
_SHIPPED_KEY = pytest.StashKey[int]()
_REGRESSIONS_KEY = pytest.StashKey[list]()
_WRITTEN_SHIPPED_KEY = pytest.StashKey[int]()
REPORT_KEY = pytest.StashKey[CheckReport]()
_REPORT_PROBLEMS_KEY = pytest.StashKey[list]()
_ACCELERATORS_KEY = pytest.StashKey[Accelerators]()
PROGRESS_KEY = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("camcheck", "camcheck: tests about where a vision model looks")
    for s in SETTINGS.values():
        kwargs: dict[str, Any] = {"dest": s.ini, "help": s.help_text()}
        if s.kind == "flag":
            kwargs.update(action="store_true", default=None)
        else:
            kwargs.update(metavar=s.metavar, **({"action": "append", "default": []} if s.kind == "paths" else {}))
        group.addoption(s.option, **kwargs)
        parser.addini(s.ini, f"{s.help} (default {s.default_text}; paths relative to the rootdir)"
                      if s.kind in ("path", "file", "paths") else f"{s.help} (default {s.default_text})",
                      type="linelist" if s.kind == "paths" else "string", default=[] if s.kind == "paths" else "")


def _resolve(config: pytest.Config) -> CamcheckConfig:
    values = {}
    for name, s in SETTINGS.items():
        values[name] = resolve(s, option=config.getoption(s.ini), environ=os.environ, ini=config.getini(s.ini),
                               invocation_dir=config.invocation_params.dir, rootdir=config.rootpath)
    images = values["images_dir"].value
    if (config.rootpath / "fixtures").is_dir():
        images = tuple(dict.fromkeys((*images, (config.rootpath / "fixtures").resolve())))
    device = values["device"]
    settings = CamcheckConfig(
        device=None,
        device_asked=device.value,
        device_asked_by=SETTINGS["device"].option if device.asked_by == "default" else device.asked_by,
        offline=values["offline"].value,
        weights_dir=values["weights_dir"].value,
        images_dirs=images,
        artifacts_dir=values["artifacts"].value,
        method=values["method"].value,
        rule=Rule(min_lift=values["min_lift"].value, tolerance=values["tolerance"].value),
        update=values["update"].value,
        ssim_min=values["ssim_min"].value,
        spearman_min=values["spearman_min"].value,
        report=values["report"].value,
        report_json=values["report_json"].value,
    )
    _distinct_outputs(config, settings)
    return settings if settings.device_asked == "auto" else _with_device(config, settings)


def _distinct_outputs(config: pytest.Config, settings: CamcheckConfig) -> None:
    """The HTML report, the JSON report, pytest's JUnit XML and pytest-html's page go to different files: one
    written over another would lose it without a word."""
    outputs = {"--camcheck-report": settings.report, "--camcheck-report-json": settings.report_json,
               "--junitxml": getattr(config.option, "xmlpath", None), "--html": getattr(config.option, "htmlpath", None)}
    seen: dict[str, str] = {}
    for setting, path in outputs.items():
        if path:
            where = os.path.abspath(os.path.expanduser(os.path.expandvars(str(path))))
            if where in seen:
                raise pytest.UsageError(f"{seen[where]} and {setting} are both {where}, so one file would be written "
                                        f"over the other. Fix: give {setting} another path")
            seen[where] = setting


def _accelerators(config: pytest.Config) -> Accelerators:
    """What this machine offers, probed once per session (it imports torch)."""
    if _ACCELERATORS_KEY not in config.stash:
        config.stash[_ACCELERATORS_KEY] = Accelerators.probe()
    return config.stash[_ACCELERATORS_KEY]


def _with_device(config: pytest.Config, settings: CamcheckConfig) -> CamcheckConfig:
    device = select_device(settings.device_asked, _accelerators(config), worker=os.environ.get("PYTEST_XDIST_WORKER"),
                           asked_by=settings.device_asked_by)
    return replace(settings, device=device)


def session_config(config: pytest.Config) -> CamcheckConfig:
    """The session's :class:`CamcheckConfig` with its device chosen (probing the accelerators the first time).

    Example:
        >>> session_config(request.config).device  # doctest: +SKIP
        device(type='cpu')
    """
    settings = config.stash[CONFIG_KEY]
    if settings.device is None:
        settings = config.stash[CONFIG_KEY] = _with_device(config, settings)
    return settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "camcheck_cuda: test needs a CUDA device; skipped without one (or when --camcheck-device names another)",
    )
    if config.option.help:
        return
    try:
        config.stash[CONFIG_KEY] = _resolve(config)
    except CamCheckError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[REPORT_KEY] = CheckReport()
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_RunReport(config.stash[REPORT_KEY]), "camcheck-run-report")
    _show_progress(config)


def _show_progress(config: pytest.Config) -> None:
    """Long checks (a dataset) report progress on pytest's terminal, not under ``-q`` and not from pytest-xdist
    workers (whose output nobody sees)."""
    if config.get_verbosity() < 0 or hasattr(config, "workerinput"):
        return

    def line(text: str, done: int, total: int) -> None:
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:
            return
        capture = config.pluginmanager.getplugin("capturemanager")
        if capture is None:
            reporter.write_line(text)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)

    config.stash[PROGRESS_KEY] = context.set_progress(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    if PROGRESS_KEY in config.stash:
        context.set_progress(config.stash[PROGRESS_KEY])


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device_lines(config: pytest.Config, settings: CamcheckConfig) -> list[str]:
    accelerators = _accelerators(config)
    import torch

    return header_lines(
        settings.device, settings.device_asked, accelerators,
        torch_version=_version("torch"), torchvision_version=_version("torchvision"),
        gpu_names=tuple(torch.cuda.get_device_name(i) for i in range(accelerators.device_count)),
        cudnn_version=torch.backends.cudnn.version() if accelerators.cuda_available else None,
        xdist=getattr(config.option, "dist", "no") != "no",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[CONFIG_KEY]
    if settings.device is not None:
        return _device_lines(config, settings)
    return [f"camcheck: torch {_version('torch')}, torchvision {_version('torchvision')}",
            "camcheck: device auto (chosen when a camcheck fixture first needs it: cuda, else mps, else cpu)"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("camcheck_cuda") is not None]
    if not marked:
        return
    settings = session_config(config)
    reason = cuda_skip_reason(settings.device, _accelerators(config), asked_by=settings.device_asked_by)
    if reason is None:
        return
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=reason))


def _artifacts_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = config.stash[CONFIG_KEY].artifacts_dir
    return chosen if chosen is not None else tmp_path_factory.getbasetemp() / "camcheck"


@pytest.fixture(scope="session")
def camcheck_config(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CamcheckConfig:
    """The session's camcheck settings (:class:`pytest_camcheck.plugin.CamcheckConfig`): device, offline,
    weights_dir, images_dirs, artifacts_dir (default ``<basetemp>/camcheck``, per xdist worker), method, rule,
    update, ssim_min, spearman_min, report and report_json."""
    return replace(session_config(request.config), artifacts_dir=_artifacts_dir(request.config, tmp_path_factory))


@pytest.fixture(scope="session", autouse=True)
def _camcheck_artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = context.artifacts_dir()
    context.set_artifacts_dir(_artifacts_dir(request.config, tmp_path_factory))
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

    ``name``: a torchvision classification model ("resnet18"), a bundled model ("camcheck-shapes"), one
    registered with ``pytest_camcheck.register_model``, or "timm:NAME" / "hf:REPO" read from the local Hugging
    Face (and torch hub) caches, hash-checked and never downloaded. ``weights``: "DEFAULT", a torchvision name
    such as "IMAGENET1K_V1", or None for a random initialisation with a fixed seed. Missing weights that cannot
    be downloaded (``--camcheck-offline``, no network, or not in the cache) skip the test, naming the file and
    where to put it.

    Example: ``compute_cam(camcheck_model("resnet18"), image, target="golden retriever")``
    """
    from .zoo import ModelCache, WeightsUnavailable

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

    from .images import sample_image

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
    from .assertions import CamCheck

    return CamCheck(device=camcheck_config.device, method=camcheck_config.method, rule=camcheck_config.rule)


def _property(rec: context.CheckRecord) -> tuple[str, str]:
    data = {"passed": rec.passed, "method": rec.method, "layer": rec.layer, "target": rec.target,
            "label": rec.label, **rec.metrics, **{f"threshold.{k}": v for k, v in rec.thresholds.items()}}
    if rec.overlay is not None:
        data["overlay"] = str(rec.overlay)
    if rec.image:
        data["image"] = rec.image
    return f"camcheck.{rec.check}", json.dumps(json_value(data), allow_nan=False)  # strict JSON: inf is null


def _listening(item: pytest.Item) -> Iterator[None]:
    """Record every check made while one phase of ``item`` runs (setup, call or teardown)."""
    records = item.stash.setdefault(RECORDS_KEY, [])

    def listen(rec: context.CheckRecord) -> None:
        records.append(rec)
        item.user_properties.append(_property(rec))

    context.add_listener(listen)
    try:
        return (yield)
    finally:
        context.remove_listener(listen)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _listening(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _listening(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    return (yield from _listening(item))


def _new(item: pytest.Item, key: pytest.StashKey[int], items: list) -> list:
    """The part of ``items`` not yet attached to an earlier phase's report."""
    start = item.stash.get(key, 0)
    item.stash[key] = len(items)
    return items[start:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    report = yield
    records = item.stash.get(RECORDS_KEY, [])
    written = [str(path) for reg in item.stash.get(_REGRESSIONS_KEY, []) for path in reg.written]
    report.camcheck_checks = [CheckReport.check_row(rec) for rec in _new(item, _SHIPPED_KEY, records)]
    report.camcheck_written = _new(item, _WRITTEN_SHIPPED_KEY, written)
    report.camcheck_used = bool(records) or "cam_regression" in getattr(item, "fixturenames", ())
    if call.when == "call" and item.config.pluginmanager.hasplugin("html"):
        import pytest_html

        pictures = [r.overlay for r in records if r.overlay is not None]
        extras = getattr(report, "extras", [])
        for path in pictures:
            if Path(path).is_file():
                extras.append(pytest_html.extras.png(base64.b64encode(Path(path).read_bytes()).decode(), name=path.name))
        report.extras = extras
    return report


class _RunReport:
    """Folds each phase's test report into the run's :class:`CheckReport`, in the process that writes it: the
    pytest-xdist controller receives every worker's reports here, and the one xdist makes for a test whose worker
    crashed."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        # a test's checks are held until its attempt ends (its teardown report): a rerun plugin marks only the
        # failing phase "rerun", and the checks of that attempt's setup and teardown must not stand either
        self._attempts: dict[str, tuple[list, bool]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rows, rerun = self._attempts.pop(report.nodeid, ([], False))
        if report.when == "setup":  # a new attempt: pytest-rerunfailures logs no teardown after a "rerun" report
            rows, rerun = [], False
        rows = rows + list(getattr(report, "camcheck_checks", ()))
        rerun = rerun or report.outcome == "rerun"
        if report.when in ("setup", "call"):
            self._attempts[report.nodeid] = (rows, rerun)
        elif not rerun:  # a teardown ends the attempt, as does pytest-xdist's report for a crashed worker's test
            for row in rows:
                self.report.add_record(row)
        self.report.add_test_report(report, camcheck=bool(getattr(report, "camcheck_used", False)))
        self.report.add_written(getattr(report, "camcheck_written", ()))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # a module that could not be collected is an error of the run, listed with its text
            self.report.add_outcome(report.nodeid or "(collection)", "error", report.longreprtext)

    def finish(self) -> None:
        """Add the checks of attempts that never reached their teardown (an interrupted run)."""
        for rows, rerun in self._attempts.values():
            if not rerun:
                for row in rows:
                    self.report.add_record(row)
        self._attempts.clear()


@pytest.fixture
def cam_benchmark(request: pytest.FixtureRequest) -> CamBenchmark:
    """Time ``compute_cam`` with pytest-benchmark: ``cam_benchmark(model, image, target, method=..., rounds=10)``
    returns the map(s) and records method, layer, batch, device, dtype, the median of a bare no-grad forward of
    the same model measured in the same test, and ``ratio_to_forward`` in ``extra_info`` (``--benchmark-json``).
    Under pytest-xdist, where pytest-benchmark turns itself off, it computes the map once and warns.

    Example: ``cam_benchmark(camcheck_model("camcheck-shapes"), scene.image, "circle", method="gradcam")``
    """
    from .benchmarking import CamBenchmark

    xdist = request.config.pluginmanager.hasplugin("xdist") and getattr(request.config.option, "dist", "no") != "no"
    return CamBenchmark(request.getfixturevalue("benchmark"), xdist=xdist or bool(os.environ.get("PYTEST_XDIST_WORKER")))


@pytest.fixture
def cam_regression(request: pytest.FixtureRequest, camcheck_config: CamcheckConfig) -> CamRegression:
    """Map regression checks against baselines next to the test module (pytest-regressions style):
    ``cam_regression.check(model, image, target, **compute_cam keywords, ssim_min=..., spearman_min=...)``.

    The first run writes ``<module dir>/<module name>/<test>-<method>-<layer>-<target>.npz`` (+ a PNG preview) and
    fails so that you review and commit it; later runs compare with SSIM and rank correlation;
    ``--camcheck-update`` rewrites baselines and passes. Nothing existing is changed otherwise. ``<test>`` is the
    test's name with its parameters, after its class path inside a class (``TestA::test_map``, file-safe and hashed).

    Example: ``cam_regression.check(camcheck_model("camcheck-shapes"), scene.image, "circle")``
    """
    from .regression import CamRegression, baseline_location

    name = _test_name(request.node)
    folder, _ = baseline_location(request.path, name)
    settings = camcheck_config
    reg = CamRegression(folder, name, update=settings.update, ssim_min=settings.ssim_min,
                        spearman_min=settings.spearman_min, device=settings.device, method=settings.method,
                        pass_pictures=settings.report is not None)
    request.node.stash.setdefault(_REGRESSIONS_KEY, []).append(reg)
    return reg


def _test_name(item: pytest.Item) -> str:
    """What names a test's baselines: its node id after the module, ``test_map[x]`` for a module-level test (as
    always) and ``TestA::test_map[x]`` inside a class, so that same-named tests of two classes never share one."""
    chain = item.listchain()
    modules = [i for i, node in enumerate(chain) if isinstance(node, pytest.Module)]
    return "::".join(node.name for node in chain[modules[-1] + 1:]) if modules else item.name


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if REPORT_KEY not in config.stash:
        return
    report = config.stash[REPORT_KEY]
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its checks went to the controller with each report
        return
    if config.option.collectonly:  # no test ran: an earlier report is left as it is
        return
    run_report = config.pluginmanager.get_plugin("camcheck-run-report")
    if run_report is not None:
        run_report.finish()
    from .report import check_report_path

    settings = config.stash[CONFIG_KEY]
    problems = config.stash.setdefault(_REPORT_PROBLEMS_KEY, [])
    for path, write, setting in ((settings.report, report.write_html, "--camcheck-report"),
                                 (settings.report_json, report.write_json, "--camcheck-report-json")):
        if path is not None:
            try:
                check_report_path(path, setting)  # again: a test may have made a file there since
                write(path)
            except (OSError, CamCheckError) as err:  # the run's outcome and summary matter more than the report
                problems.append(f"camcheck: the report was not written: {err}")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if REPORT_KEY not in config.stash:
        return
    settings = config.stash[CONFIG_KEY]
    if settings.device is not None and settings.device_asked == "auto":  # chosen during the run, not in the header
        for line in _device_lines(config, settings)[1:]:
            terminalreporter.write_line(line)
    for problem in config.stash.get(_REPORT_PROBLEMS_KEY, []):
        terminalreporter.write_line(problem, yellow=True, bold=True)
    written = config.stash[REPORT_KEY].written
    if written:
        terminalreporter.write_sep("-", f"camcheck: {len(written)} baseline files written")
        for path in written:
            terminalreporter.write_line(str(path))
