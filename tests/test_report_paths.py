"""The run report in real sessions: bad report paths stop the run at start-up naming the path, a report that
cannot be written at the end costs one warning line (never the exit code or the summary), and the page lists
every failed test with its error text and the image of every check."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pytest

from pytest_camcheck._io import check_output_file
from pytest_camcheck.errors import FileRefused

ARGS = ("-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:unraisableexception", "--camcheck-device=cpu")


@pytest.fixture
def passing(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_one="def test_ok():\n    assert True\n")
    return pytester


def test_an_unwritable_report_path_is_a_usage_error_naming_it(passing: pytest.Pytester) -> None:
    root = passing.path
    (root / "elsewhere.html").write_text("the user's file")
    (root / "link.html").symlink_to(root / "elsewhere.html")
    result = passing.runpytest(*ARGS, "--camcheck-report=link.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--camcheck-report={root / 'link.html'}: the path is a symbolic link*Fix:*"])
    assert (root / "elsewhere.html").read_text() == "the user's file"


def test_an_existing_file_that_is_not_an_earlier_report_is_never_replaced(passing: pytest.Pytester) -> None:
    root = passing.path
    (root / "keep.py").write_text("print('the user's code')\n")
    for option in ("--camcheck-report=keep.py", "--camcheck-report-json=keep.py"):
        result = passing.runpytest(*ARGS, option)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*={root / 'keep.py'}: the file exists and is not an earlier camcheck report, "
                                     "so it is not replaced. Fix: give another path, or delete the file*"])
    assert (root / "keep.py").read_text() == "print('the user's code')\n"
    for _ in range(2):  # an earlier report is replaced
        passing.runpytest(*ARGS, "--camcheck-report=r.html", "--camcheck-report-json=r.json").assert_outcomes(passed=1)
    assert (root / "r.html").is_file() and (root / "r.json").is_file()


@pytest.mark.parametrize("case,pattern", [
    ("a folder", "it is a folder. Fix: give a file name"),
    ("a file as parent", "afile is a file, not a folder"),
    ("a dangling link", "the path is a symbolic link"),
    ("under a dangling folder link", "gone is a dangling symbolic link"),
])
def test_report_paths_that_cannot_be_written_are_refused(tmp_path: Path, case: str, pattern: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "dangling.html").symlink_to(tmp_path / "nowhere" / "x.html")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    path = tmp_path / {"a folder": "folder", "a file as parent": "afile/report.html", "a dangling link": "dangling.html",
                       "under a dangling folder link": "gone/sub/report.json"}[case]
    with pytest.raises(FileRefused, match=f"--camcheck-report-json={path}: .*{pattern}"):
        check_output_file(path, "--camcheck-report-json")


def test_a_read_only_report_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # read-only even for root
    with pytest.raises(FileRefused, match=rf"--camcheck-report={tmp_path}/r.html: folder {tmp_path} is not writable"):
        check_output_file(tmp_path / "r.html", "--camcheck-report")


def test_a_report_that_cannot_be_written_at_the_end_is_one_warning_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="""
        import shutil
        from pathlib import Path

        def test_ok():
            shutil.rmtree("out")
            Path("out").write_text("a file where the report folder was")
    """)
    (pytester.path / "out").mkdir()
    result = pytester.runpytest(*ARGS, "--camcheck-report=out/report.html")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*camcheck: the report was not written: *report.html*out is a file, not a folder*Fix:*",
                                 "*1 passed*"])
    assert len([line for line in result.outlines if "the report was not written" in line]) == 1
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


FAILING = """
import pytest

@pytest.mark.parametrize("i", range(20))
def test_key(i):
    {}[f"missing-{i}"]

def test_assert():
    assert 1 == 2, "plain failure"

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_error(broken):
    pass

@pytest.mark.xfail(strict=True)
def test_xpass():
    pass

def test_fine():
    pass
"""

CHECKS = """
import numpy as np
import torch
from pytest_camcheck import Box
from pytest_camcheck.images import scene_image
from tests_models import SmallCNN

torch.manual_seed(0)
NET = SmallCNN(classes=3).eval()

def test_loop(camcheck):
    for seed in (1000001, 1000002):
        scene = scene_image(seed)
        camcheck.not_attends_to(NET, scene.image, 0, Box(0, 0, 2, 2), layer="features")

def test_path(camcheck, tmp_path):
    from PIL import Image
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)
    camcheck.not_attends_to(NET, str(path), 0, Box(0, 0, 2, 2), layer="features")
"""


def test_the_page_lists_every_failed_test_with_its_error_and_each_checks_image(pytester: pytest.Pytester,
                                                                               request: pytest.FixtureRequest) -> None:
    import shutil

    shutil.copy(Path(request.config.rootpath) / "tests" / "models.py", pytester.path / "tests_models.py")
    pytester.makepyfile(test_failing=FAILING, test_checks=CHECKS)
    result = pytester.runpytest(*ARGS, "--camcheck-report=out/deep/report.html", "--camcheck-report-json=out/r.json")
    result.assert_outcomes(failed=22, passed=3, errors=1)
    assert (pytester.path / "out" / "r.json").is_file()  # missing folders are created
    page = html.unescape((pytester.path / "out" / "deep" / "report.html").read_text())
    for i in range(20):
        assert f"test_key[{i}]" in page and f"KeyError: 'missing-{i}'" in page
    assert "plain failure" in page and "fixture broke" in page and "test_xpass" in page
    assert "test_fine" not in page  # passing tests without checks only count
    assert "shapes-single-1000001" in page and "shapes-single-1000002" in page and "photo.png" in page
    assert ">test failed<" in page and ">test error<" in page and ">test passed<" in page


def test_the_reports_junit_xml_and_pytest_html_must_be_different_files(passing: pytest.Pytester) -> None:
    cases = [("--camcheck-report=out", "--camcheck-report-json=out"), ("--camcheck-report-json=o.xml", "--junitxml=o.xml")]
    if passing.parseconfig().pluginmanager.hasplugin("html"):
        cases.append(("--camcheck-report=p.html", "--html=p.html"))
    for options in cases:
        result = passing.runpytest(*ARGS, *options)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--* and --* are both *, so one file would be written over the other. Fix:*"])


def test_a_file_a_test_makes_at_the_report_path_is_not_replaced(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="from pathlib import Path\n\ndef test_writes():\n"
                                 "    Path('out.json').write_text('precious')\n")
    result = pytester.runpytest(*ARGS, "--camcheck-report-json=out.json")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "out.json").read_text() == "precious"
    result.stdout.fnmatch_lines(["*camcheck: the report was not written: *out.json: the file exists and is not an "
                                 "earlier camcheck report*"])


def test_collect_only_leaves_an_earlier_report_and_collection_errors_are_listed(passing: pytest.Pytester) -> None:
    import json

    root = passing.path
    passing.runpytest(*ARGS, "--camcheck-report-json=r.json").assert_outcomes(passed=1)
    earlier = (root / "r.json").read_text()
    passing.runpytest(*ARGS, "--collect-only", "--camcheck-report-json=r.json")
    assert (root / "r.json").read_text() == earlier
    passing.makepyfile(test_broken="import no_such_module_here\n\ndef test_never():\n    pass\n")
    passing.runpytest(*ARGS, "--continue-on-collection-errors", "--camcheck-report-json=r.json")
    tests = json.loads((root / "r.json").read_text())["tests"]
    assert tests["test_broken.py"]["outcome"] == "error" and "no_such_module_here" in tests["test_broken.py"]["message"]
    assert tests["test_one.py::test_ok"]["outcome"] == "passed"


RERUN_ONCE = '''
import pytest
from _pytest.runner import runtestprotocol


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):  # pytest-rerunfailures' protocol in small: a failed call runs again
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in range(2):
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        failed = attempt == 0 and any(r.failed for r in reports)
        for report in reports:
            if failed and report.failed:
                report.outcome = "rerun"
            item.ihook.pytest_runtest_logreport(report=report)
        if not failed:
            break
        item._initrequest()
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
'''


RERUN_LIKE_THE_PLUGIN = '''
import pytest
from _pytest.runner import runtestprotocol


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):  # as pytest-rerunfailures: after the "rerun" report, break (no teardown)
    for attempt in range(2):
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        rerun = False
        for report in reports:
            if attempt == 0 and report.failed:
                report.outcome = "rerun"
                item.ihook.pytest_runtest_logreport(report=report)
                rerun = True
                break
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        if not rerun:
            break
        item._initrequest()
    return True
'''


@pytest.mark.parametrize("protocol", [RERUN_ONCE, RERUN_LIKE_THE_PLUGIN], ids=["teardown-logged", "plugin-break"])
def test_the_checks_of_an_attempt_that_is_rerun_do_not_stand(pytester: pytest.Pytester, protocol: str) -> None:
    """Only the last attempt's checks stand: those of its call, and those of its setup and teardown (fixtures), a
    test failing in every attempt included; one session for all three tests."""
    import json

    pytester.makeconftest(protocol)
    pytester.makepyfile(test_flaky='''
import pytest

calls, fixtured = [], []


def test_flaky(camcheck, camcheck_model, camcheck_image):
    calls.append(1)
    s = camcheck_image("shapes-pair-1000003")
    region = s.regions["square"] if len(calls) == 1 else s.regions["cross"]  # the first attempt checks the wrong one
    camcheck.attends_to(camcheck_model("camcheck-shapes"), s.image, "cross", region)


def test_always(camcheck, camcheck_model, camcheck_image):  # fails in every attempt: its last one's check stands
    s = camcheck_image("shapes-pair-1000003")
    camcheck.attends_to(camcheck_model("camcheck-shapes"), s.image, "cross", s.regions["square"])


@pytest.fixture
def checked(camcheck, camcheck_model, camcheck_image):
    s = camcheck_image("shapes-pair-1000003")
    model = camcheck_model("camcheck-shapes")
    camcheck.attends_to(model, s.image, "cross", s.regions["cross"])  # setup: passes in both attempts
    yield model, s
    camcheck.not_attends_to(model, s.image, "cross", s.regions["square"])  # teardown: passes in both attempts


def test_fixtured(camcheck, checked):
    model, s = checked
    fixtured.append(1)
    region = s.regions["square"] if len(fixtured) == 1 else s.regions["cross"]
    camcheck.attends_to(model, s.image, "cross", region)
''')
    pytester.runpytest_subprocess(*ARGS, "--camcheck-report-json=r.json")
    report = json.loads((pytester.path / "r.json").read_text())
    outcomes = {t: report["tests"][f"test_flaky.py::{t}"]["outcome"] for t in ("test_flaky", "test_always",
                                                                                 "test_fixtured")}
    assert outcomes == {"test_flaky": "passed", "test_always": "failed", "test_fixtured": "passed"}
    checks = [(c["test_id"].split("::")[1], c["check"], c["passed"]) for c in report["checks"]]
    assert sorted(c for c in checks if c[0] != "test_fixtured") == [
        ("test_always", "attends_to", False), ("test_flaky", "attends_to", True)]
    assert [c for c in checks if c[0] == "test_fixtured"] == [  # the second attempt's, once each, in order
        ("test_fixtured", "attends_to", True), ("test_fixtured", "attends_to", True),
        ("test_fixtured", "not_attends_to", True)]
