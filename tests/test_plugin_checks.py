"""The camcheck fixture and what checks leave behind in real pytest sessions: JUnit properties, pytest-html
pictures, settings from options and ini."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

# a model whose gradient map is known, a scene for it, and the layer and method (shared by the test files)
SETUP = """
import torch
from tests_models import KnownGradient

H, W = 40, 60

def model():
    m = torch.zeros(2, 3, H, W)
    m[0, 0] = 1.0
    return KnownGradient(m, torch.zeros(2, 3, H, W))

def scene():
    x = torch.zeros(3, H, W)
    x[0, 5:15, 40:55] = 1.0
    return x

KW = dict(layer="features", method="hirescam")
"""

TEST_FILE = SETUP + """
def test_pass(camcheck):
    r = camcheck.attends_to(model(), scene(), 0, (38, 3, 57, 17), **KW)
    assert r.method == "hirescam"

def test_fail(camcheck):
    camcheck.attends_to(model(), scene(), 0, (0, 20, 20, 40), **KW)

def test_bound_defaults(camcheck):
    assert camcheck.method == "{method}" and camcheck.rule.min_lift == {min_lift}
    assert str(camcheck.device) == "cpu"
"""


@pytest.fixture
def session(project: pytest.Pytester) -> pytest.Pytester:
    return project


def test_records_go_to_junit_xml_and_failures_explain(session: pytest.Pytester) -> None:
    session.makepyfile(test_checks=TEST_FILE.format(method="gradcam", min_lift=1.5))
    result = session.runpytest("--junitxml=out.xml", "-p", "no:cacheprovider", "--camcheck-device=cpu")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*camcheck attends_to failed*", "*pointing game: MISS*", "*overlay: *.png*"])
    root = ET.parse(session.path / "out.xml").getroot()
    props = {case.get("name"): {p.get("name"): json.loads(p.get("value")) for p in case.iter("property")}
             for case in root.iter("testcase")}
    assert props["test_pass"]["camcheck.attends_to"]["passed"] is True
    failed = props["test_fail"]["camcheck.attends_to"]
    assert failed["passed"] is False and failed["region.hit"] is False and failed["threshold.min_lift"] == 1.5
    assert failed["overlay"].endswith(".png")


def test_settings_come_from_options_and_ini(session: pytest.Pytester) -> None:
    session.makepyfile(test_checks=TEST_FILE.format(method="layercam", min_lift=2.5))
    session.makeini("[pytest]\ncamcheck_method = layercam\ncamcheck_min_lift = 0.5\n")
    result = session.runpytest("-k", "bound", "--camcheck-min-lift=2.5", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("args,message", [
    (["--camcheck-method=gradcam+++"], "--camcheck-method=gradcam+++: unknown method"),
    (["--camcheck-min-lift=-1"], "--camcheck-min-lift='-1' is not a valid threshold; pass a finite number >= 0 "
                                 "(default 1.5)"),
    (["--camcheck-tolerance=wide"], "--camcheck-tolerance='wide' is not a valid threshold; pass a finite number >= 0 "
                                    "(default 15)"),
])
def test_bad_settings_are_usage_errors(session: pytest.Pytester, args: list, message: str) -> None:
    session.makepyfile(test_checks="def test_x():\n    pass\n")
    result = session.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_pytest_html_embeds_the_overlay_of_a_failing_check(session: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html")
    session.makepyfile(test_checks=TEST_FILE.format(method="gradcam", min_lift=1.5))
    result = session.runpytest("-k", "fail", "--html=report.html", "--self-contained-html", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    html = (session.path / "report.html").read_text()
    assert "data:image/png;base64," in html


FIXTURE_CHECKS = "import pytest\n" + SETUP + """
@pytest.fixture
def checked(camcheck):
    camcheck.attends_to(model(), scene(), 0, (38, 3, 57, 17), **KW)
    yield
    camcheck.not_attends_to(model(), scene(), 0, (0, 20, 20, 40), **KW)

def test_uses(checked):
    pass
"""


def test_checks_made_in_fixture_setup_and_teardown_are_recorded(session: pytest.Pytester) -> None:
    session.makepyfile(test_fixture=FIXTURE_CHECKS)
    result = session.runpytest("--junitxml=out.xml", "--camcheck-report-json=r.json", "-p", "no:cacheprovider",
                               "--camcheck-device=cpu")
    result.assert_outcomes(passed=1)
    root = ET.parse(session.path / "out.xml").getroot()
    names = [p.get("name") for p in root.iter("property")]
    assert names == ["camcheck.attends_to", "camcheck.not_attends_to"]
    report = json.loads((session.path / "r.json").read_text())
    assert [(c["check"], c["test_id"]) for c in report["checks"]] == [
        ("attends_to", "test_fixture.py::test_uses"), ("not_attends_to", "test_fixture.py::test_uses")]


CRASHING = TEST_FILE.format(method="gradcam", min_lift=1.5) + """

def test_zcrash():
    import os
    os._exit(1)
"""


def test_a_crashed_xdist_worker_loses_none_of_its_earlier_tests_in_the_report(session: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    session.makepyfile(test_checks=CRASHING)
    result = session.runpytest_subprocess("-n", "1", "-p", "xdist", "-p", "no:cacheprovider", "--camcheck-device=cpu",
                                          "--max-worker-restart=0",  # no new worker (and torch import) for nothing
                                          "--camcheck-report-json=r.json", "--camcheck-report=r.html")
    result.assert_outcomes(passed=2, failed=2)
    report = json.loads((session.path / "r.json").read_text())
    outcomes = {k.split("::")[1]: v["outcome"] for k, v in report["tests"].items()}
    assert outcomes == {"test_pass": "passed", "test_fail": "failed", "test_bound_defaults": "passed",
                        "test_zcrash": "failed"}
    assert "crashed while running" in report["tests"]["test_checks.py::test_zcrash"]["message"]
    assert sorted((c["test_id"].split("::")[1], c["passed"]) for c in report["checks"]) == [
        ("test_fail", False), ("test_pass", True)]
    assert "test_checks.py::test_zcrash" in (session.path / "r.html").read_text()


def test_junit_properties_are_strict_json_even_for_an_infinite_metric() -> None:
    from pytest_camcheck import plugin
    from pytest_camcheck.context import CheckRecord

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))

    rec = CheckRecord("stable", False, "gradcam", "features", 0, None, None,
                      {"sensitivity": float("inf"), "ssim": [1.0, float("nan")]}, {"min_similarity": 0.95},
                      test_id="t")
    name, value = plugin._property(rec)
    assert name == "camcheck.stable"
    data = strict(value)
    assert data["sensitivity"] is None and data["ssim"] == [1.0, None] and data["threshold.min_similarity"] == 0.95
