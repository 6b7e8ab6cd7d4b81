"""The settings table: one declaration per setting drives the options, ini values, environment variables,
resolution order, ``camcheck_config`` and the README's table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pytest_camcheck import CamCheckError
from pytest_camcheck.plugin import CamcheckConfig
from pytest_camcheck.settings import SETTINGS, markdown_table, resolve

ROOT = Path(__file__).resolve().parent.parent

# name: (command-line value, environment text, ini text) and what each parses to
SAMPLES = {
    "device": (("cpu", "cuda:1", "mps"), ("cpu", "cuda:1", "mps")),
    "weights_dir": (("a", "b", "c"), None),
    "offline": ((True, "0", "true"), (True, False, True)),
    "images_dir": ((["a"], "b", ["c"]), None),
    "artifacts": (("a", "b", "c"), None),
    "method": (("layercam", "GradCAM++", "eigencam"), ("layercam", "gradcam++", "eigencam")),
    "min_lift": (("2", "3.5", "0"), (2.0, 3.5, 0.0)),
    "tolerance": (("0", "7", "30"), (0.0, 7.0, 30.0)),
    "update": ((True, "no", "1"), (True, False, True)),
    "ssim_min": (("0.5", "-1", "1"), (0.5, -1.0, 1.0)),
    "spearman_min": (("0.1", "0.2", "0.3"), (0.1, 0.2, 0.3)),
    "report": (("one.html", "two.html", "three.html"), None),
    "report_json": (("one.json", "two.json", "three.json"), None),
}


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    here, root = tmp_path / "here", tmp_path / "root"
    for base in (here, root):
        for name in "abc":
            (base / name).mkdir(parents=True)
    return here, root


def test_every_setting_has_samples_and_a_place_in_camcheck_config() -> None:
    assert set(SAMPLES) == set(SETTINGS)
    fields = set(CamcheckConfig.__dataclass_fields__)
    for name in SETTINGS:
        assert {"images_dir": "images_dirs", "artifacts": "artifacts_dir", "weights_dir": "weights_dir",
                "min_lift": "rule", "tolerance": "rule", "device": "device_asked"}.get(name, name) in fields, name


@pytest.mark.parametrize("name", list(SETTINGS))
def test_command_line_beats_environment_beats_ini_beats_default(name: str, places: tuple[Path, Path]) -> None:
    setting = SETTINGS[name]
    here, root = places
    (option, env, ini), parsed = SAMPLES[name]
    ini_value = ini if isinstance(ini, list) or setting.kind != "paths" else [ini]

    def value(**given):
        kwargs = dict(option=None, environ={}, ini=[] if setting.kind == "paths" else "") | given
        return resolve(setting, invocation_dir=here, rootdir=root, **kwargs)

    if setting.kind == "paths":  # the one setting that adds up
        found = value(option=option, environ={setting.env: env}, ini=ini_value)
        assert found.value == (here / "a", here / "b", root / "c")
        assert value().value == ()
        return
    expected = parsed or (here / option, here / env, root / ini)  # paths: relative to where they were given
    assert value(option=option, environ={setting.env: env}, ini=ini).value == expected[0]
    assert value(option=option, environ={setting.env: env}, ini=ini).asked_by == setting.option
    assert value(environ={setting.env: env}, ini=ini).value == expected[1]
    assert value(environ={setting.env: env}, ini=ini).asked_by == setting.env
    assert value(ini=ini).value == expected[2]
    assert value(ini=ini).asked_by == f"ini {setting.ini}"
    assert value(environ={setting.env: ""}) == value()
    assert value().value == setting.default and value().asked_by == "default"


@pytest.mark.parametrize("name", ["min_lift", "tolerance", "ssim_min", "spearman_min"])
@pytest.mark.parametrize("bad", ["nan", "inf", "-5", "true", "wide", "1e400"])
def test_a_bad_threshold_gives_the_same_message_from_every_place(name: str, bad: str, places) -> None:
    here, root = places
    setting = SETTINGS[name]
    messages = []
    for where, given in ((setting.option, dict(option=bad)), (setting.env, dict(environ={setting.env: bad})),
                         (f"ini {setting.ini}", dict(ini=bad))):
        kwargs = dict(option=None, environ={}, ini="") | given
        with pytest.raises(CamCheckError) as err:
            resolve(setting, invocation_dir=here, rootdir=root, **kwargs)
        messages.append(str(err.value).replace(where, "WHERE"))
    assert len(set(messages)) == 1
    assert messages[0].startswith(f"WHERE='{bad}' is not a valid threshold; pass a finite number ")
    assert f"(default {setting.default:g})" in messages[0]


def test_the_thresholds_of_the_api_take_any_real_number_and_refuse_the_rest() -> None:
    from pytest_camcheck.regression import check_threshold
    from pytest_camcheck.rule import Rule

    assert Rule(min_lift=np.float32(1.5), tolerance=np.int64(3)).tolerance == 3.0
    assert check_threshold("ssim_min", np.float16(0.5)) == 0.5
    for bad in (float("nan"), float("inf"), True, "1.5", None, [1.0]):
        with pytest.raises(CamCheckError, match=r"min_lift=.* is not a valid threshold; pass a finite number >= 0"):
            Rule(min_lift=bad)
        with pytest.raises(CamCheckError, match=r"ssim_min=.* is not a valid threshold; pass a finite number "
                                                r"between -1 and 1 \(default 0.95\)"):
            check_threshold("ssim_min", bad)


def test_the_readme_table_is_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README options table is stale: paste `python -m pytest_camcheck.settings`"


def test_help_and_ini_list_every_setting(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:benchmark", "--help")
    text = result.stdout.str()
    for setting in SETTINGS.values():
        assert setting.option in text and f"  {setting.ini} (" in text, setting.name
        assert f"(env {setting.env}, ini {setting.ini}, default" in " ".join(text.split()), setting.name


def test_camcheck_config_holds_every_setting_in_a_session(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CAMCHECK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CAMCHECK_SSIM_MIN", "0.5")
    monkeypatch.setenv("CAMCHECK_UPDATE", "yes")
    monkeypatch.setenv("CAMCHECK_REPORT_JSON", "out/checks.json")
    pytester.makeini("[pytest]\ncamcheck_spearman_min = 0.25\ncamcheck_report = page.html\ncamcheck_method = layercam\n"
                     "camcheck_tolerance = 4\n")
    pytester.makepyfile("""
        def test_config(camcheck_config, pytestconfig):
            c = camcheck_config
            here = pytestconfig.invocation_params.dir
            assert (c.ssim_min, c.spearman_min, c.update, c.method, c.rule.tolerance, c.rule.min_lift) == (
                0.5, 0.25, True, "layercam", 4.0, 1.5)
            assert c.report == pytestconfig.rootpath / "page.html" and c.report_json == here / "out/checks.json"
            assert str(c.device) == "cpu"
    """)
    result = pytester.runpytest("-p", "no:benchmark", "--camcheck-device=cpu")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "out" / "checks.json").is_file() and (pytester.path / "page.html").is_file()
