"""Every setting of the pytest plugin, declared once: its command-line option, ini value, environment variable,
parser (with its validation), default and help. The plugin registers options and ini values from
:data:`SETTINGS`, resolves them with :func:`resolve`, and the README's options table is :func:`markdown_table`
(a test checks that they agree).

A setting is read from the command line, else its environment variable, else the ini file, else its default.
Paths on the command line or in the environment are relative to the invocation directory, ini paths to the
rootdir. ``images_dir`` is the one setting that adds up: every folder named anywhere is searched, plus
``<rootdir>/fixtures`` when it exists.

This module imports neither torch nor numpy: the plugin costs nothing until a test uses it.

Example:
    >>> SETTINGS["min_lift"].option, SETTINGS["min_lift"].ini, SETTINGS["min_lift"].env
    ('--camcheck-min-lift', 'camcheck_min_lift', 'CAMCHECK_MIN_LIFT')
    >>> SETTINGS["min_lift"].parse("2", "CAMCHECK_MIN_LIFT")
    2.0
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ._values import parse_threshold
from .devices import DEVICE_CHOICES, parse_device
from .errors import CamCheckError
from .rule import DEFAULT_RULE

__all__ = ["DEFAULT_SPEARMAN_MIN", "DEFAULT_SSIM_MIN", "SETTINGS", "Resolved", "Setting", "markdown_table",
           "parse_yes_no", "resolve"]

DEFAULT_SSIM_MIN = 0.95
DEFAULT_SPEARMAN_MIN = 0.9
DEFAULT_METHOD = "gradcam"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def parse_yes_no(text: str, asked_by: str) -> bool:
    """A yes/no setting: 1/0, true/false, yes/no, on/off (any case); anything else is refused.

    Example:
        >>> parse_yes_no("Yes", "CAMCHECK_OFFLINE"), parse_yes_no("0", "CAMCHECK_OFFLINE")
        (True, False)
    """
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise CamCheckError(f"{asked_by}={text} is not a yes/no value; use 1 or 0 (true/false, yes/no)")
    return value in _TRUE


def _method(text: str, asked_by: str) -> str:
    if text.strip() == DEFAULT_METHOD:
        return DEFAULT_METHOD
    from .engine.methods import get_method  # only a method other than the default needs the registry (and torch)

    try:
        return get_method(text).name
    except CamCheckError as err:
        raise CamCheckError(f"{asked_by}={text}: {err}") from None


def _threshold(low: float, high: float | None, default: float) -> Callable[[str, str], float]:
    return lambda text, asked_by: parse_threshold(asked_by, text, low=low, high=high, default=default)


def _text(text: str, asked_by: str) -> str:
    return text


@dataclass(frozen=True)
class Setting:
    """One setting. ``kind``: ``"value"`` (text parsed by ``parse``), ``"flag"`` (an option without value; yes/no
    in the environment and ini), ``"path"`` (a folder, never a file; ``must_exist`` ones are checked), ``"file"``
    (a file written at the end of the run, checked at start-up: not a folder or a link, in a writable folder, and
    no existing file but an earlier report) or ``"paths"`` (a repeatable option, ``os.pathsep``-separated in the
    environment, one per line in the ini file; they add up).
    ``default`` is the parsed default; ``default_text`` how help and README show it.

    Example:
        >>> SETTINGS["device"].help_text()[:40]
        'torch device for models and maps: auto, '
    """

    name: str
    kind: str
    default: Any
    default_text: str
    help: str
    metavar: str | None = None
    parse: Callable[[str, str], Any] = _text
    must_exist: bool = False
    env_name: str | None = None

    @property
    def option(self) -> str:
        """``--camcheck-<name>``, with dashes."""
        return "--camcheck-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        """``camcheck_<name>``: the ini value, also the option's ``dest``."""
        return "camcheck_" + self.name

    @property
    def env(self) -> str:
        """``CAMCHECK_<NAME>`` unless the setting names another variable."""
        return self.env_name or "CAMCHECK_" + self.name.upper()

    def help_text(self) -> str:
        """The ``--help`` line: what it does, where else it can be set, its default."""
        return f"{self.help} (env {self.env}, ini {self.ini}, default {self.default_text})"


SETTINGS: Mapping[str, Setting] = {s.name: s for s in (
    Setting("device", "value", "auto", "auto: cuda, else mps, else cpu",
            f"torch device for models and maps: {DEVICE_CHOICES}; a device named but not present stops the run; "
            "under xdist with several GPUs workers spread over them; tests marked camcheck_cuda skip without CUDA",
            metavar="DEVICE", parse=lambda text, asked_by: parse_device(text, asked_by=asked_by)),
    Setting("weights_dir", "path", None, "none",
            "folder searched first for weights files (resnet50-11ad3fa6.pth), before the torch hub cache; hashes "
            "are checked, files loaded with weights_only=True", metavar="DIR", must_exist=True),
    Setting("offline", "flag", False, "off",
            "never download weights: tests whose weights are missing are skipped, saying which file to provide"),
    Setting("images_dir", "paths", (), "<rootdir>/fixtures when it exists",
            "folders of annotated images (<name>.json) for camcheck_image; may be repeated, all are searched",
            metavar="DIR", must_exist=True),
    Setting("artifacts", "path", None, "<basetemp>/camcheck", "folder for overlay pictures of checks",
            metavar="DIR"),
    Setting("method", "value", DEFAULT_METHOD, DEFAULT_METHOD,
            "CAM method of the camcheck fixture's checks and of cam_regression (any name in pytest_camcheck.METHODS)",
            metavar="METHOD", parse=_method),
    Setting("min_lift", "value", DEFAULT_RULE.min_lift, f"{DEFAULT_RULE.min_lift:g}",
            "default min_lift of camcheck.attends_to", metavar="X", parse=_threshold(0.0, None, DEFAULT_RULE.min_lift)),
    Setting("tolerance", "value", DEFAULT_RULE.tolerance, f"{DEFAULT_RULE.tolerance:g}",
            "default pointing-game tolerance of camcheck.attends_to, in px", metavar="PX",
            parse=_threshold(0.0, None, DEFAULT_RULE.tolerance)),
    Setting("update", "flag", False, "off",
            "write the current maps as the new cam_regression baselines (missing or failing ones) and pass, "
            "listing every file written"),
    Setting("ssim_min", "value", DEFAULT_SSIM_MIN, f"{DEFAULT_SSIM_MIN:g}",
            "cam_regression: least SSIM with the baseline", metavar="X",
            parse=_threshold(-1.0, 1.0, DEFAULT_SSIM_MIN)),
    Setting("spearman_min", "value", DEFAULT_SPEARMAN_MIN, f"{DEFAULT_SPEARMAN_MIN:g}",
            "cam_regression: least rank correlation with the baseline", metavar="X",
            parse=_threshold(-1.0, 1.0, DEFAULT_SPEARMAN_MIN)),
    Setting("report", "file", None, "off", "write one self-contained HTML page with every camcheck check of the run",
            metavar="PATH.html"),
    Setting("report_json", "file", None, "off", "write every camcheck check of the run as JSON", metavar="PATH"),
)}


@dataclass(frozen=True)
class Resolved:
    """A setting's value and the place it came from (``--camcheck-device``, ``CAMCHECK_DEVICE``,
    ``ini camcheck_device`` or ``default``), as error messages and the report header name it.

    Example:
        >>> Resolved(2.0, "--camcheck-min-lift").asked_by
        '--camcheck-min-lift'
    """

    value: Any
    asked_by: str


def _folder(text: str, asked_by: str, base: Path, must_exist: bool) -> Path:
    folder = (base / Path(text).expanduser()).resolve()
    if must_exist and not folder.is_dir() and not folder.exists():
        raise CamCheckError(f"{asked_by}={text}: folder {folder} does not exist; create it or fix the path")
    above = folder
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        where = "it is a file" if above == folder else f"{above} is a file"
        raise CamCheckError(f"{asked_by}={text}: {where}, not a folder; give a folder (missing ones are created) "
                            "or fix the path")
    return folder


def _parse(setting: Setting, text: Any, asked_by: str, base: Path) -> Any:
    if setting.kind == "flag":
        return text if isinstance(text, bool) else parse_yes_no(str(text), asked_by)
    if setting.kind == "path":
        return _folder(str(text), asked_by, base, setting.must_exist)
    if setting.kind == "file":
        from .report import check_report_path

        return check_report_path(Path(os.path.abspath(base / Path(str(text)).expanduser())), asked_by)
    return setting.parse(str(text).strip() if setting.kind == "value" else str(text), asked_by)


def resolve(setting: Setting, *, option: Any, environ: Mapping[str, str], ini: Any, invocation_dir: Path,
            rootdir: Path) -> Resolved:
    """The value of ``setting`` from what was given on the command line (``option``: None or ``[]`` when not
    given), in the environment and in the ini file (``""`` or ``[]`` when not set), parsed and checked;
    :class:`CamCheckError` naming the place and the fix otherwise.

    Example:
        >>> here = Path(".")
        >>> resolve(SETTINGS["min_lift"], option=None, environ={"CAMCHECK_MIN_LIFT": "3"}, ini="2",
        ...         invocation_dir=here, rootdir=here)
        Resolved(value=3.0, asked_by='CAMCHECK_MIN_LIFT')
        >>> resolve(SETTINGS["offline"], option=None, environ={}, ini="", invocation_dir=here, rootdir=here)
        Resolved(value=False, asked_by='default')
    """
    if setting.kind == "paths":
        found = [_folder(d, setting.option, invocation_dir, setting.must_exist) for d in option or ()]
        found += [_folder(d, setting.env, invocation_dir, setting.must_exist)
                  for d in environ.get(setting.env, "").split(os.pathsep) if d]
        found += [_folder(d, f"ini {setting.ini}", rootdir, setting.must_exist) for d in ini or ()]
        return Resolved(tuple(dict.fromkeys(found)), "merged")
    if option is not None and option is not False:
        return Resolved(_parse(setting, option, setting.option, invocation_dir), setting.option)
    if environ.get(setting.env, "") != "":
        return Resolved(_parse(setting, environ[setting.env], setting.env, invocation_dir), setting.env)
    if ini not in ("", None, False):
        return Resolved(_parse(setting, ini, f"ini {setting.ini}", rootdir), f"ini {setting.ini}")
    return Resolved(setting.default, "default")


def _code(text: str) -> str:
    """Placeholders such as ``<rootdir>/fixtures`` as inline code, so that Markdown does not read them as tags."""
    return re.sub(r"(<[a-z]+>[^\s,;)]*)", r"`\1`", text)


def markdown_table() -> str:
    """The README's options table, one row per setting.

    Example:
        >>> markdown_table().splitlines()[0]
        '| option | env | ini | default | what it does |'
    """
    rows = ["| option | env | ini | default | what it does |", "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS.values():
        option = f"`{s.option}={s.metavar}`" if s.metavar else f"`{s.option}`"
        rows.append(f"| {option} | `{s.env}` | `{s.ini}` | {_code(s.default_text)} | {_code(s.help)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
