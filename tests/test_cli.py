"""The camcheck command line through a subprocess: show, --write-json, dataset, bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pytest_camcheck import cli

ROOT = Path(__file__).parent.parent
FIXTURE = ROOT / "fixtures" / "shapes-coco"


def camcheck(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pytest_camcheck", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_show_prints_the_classes_a_box_a_test_and_the_annotation_and_writes_json_beside_the_image(tmp_path):
    image = tmp_path / "scene.png"
    image.write_bytes((FIXTURE / "images" / "single-1000900.png").read_bytes())
    run = camcheck("show", "camcheck-shapes", "scene.png", "--write-json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "layer features" in out and out.count("|") == 4 and "target: class 3 'star'" in out
    box = json.loads(out.split("suggested box: ")[1].split(" (")[0])
    spec = json.loads((tmp_path / "scene.json").read_text())
    assert spec["regions"] == {"star": box} and spec["image"] == "scene.png"
    assert (tmp_path / "scene-camcheck.png").is_file()
    truth = json.loads((FIXTURE / "instances.json").read_text())["annotations"][0]["bbox"]
    inter_w = min(box[2], truth[0] + truth[2]) - max(box[0], truth[0])
    inter_h = min(box[3], truth[1] + truth[3]) - max(box[1], truth[1])
    assert inter_w > 0 and inter_h > 0  # the suggested box overlaps the star
    code = out.split("# a test to paste:\n")[1].split("# the annotation")[0]
    namespace: dict = {}
    exec(compile(code, "pasted", "exec"), namespace)  # the pasted test runs and passes
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace["test_scene_star_is_explained_by_the_object"]()
    finally:
        os.chdir(cwd)


BLIND_TO_CIRCLES = """
import torch
from pytest_camcheck.bundled import load_bundled

def make():
    model = load_bundled("camcheck-shapes")
    with torch.no_grad():
        model.fc.weight[0] = 0.0
    return model
"""


def test_write_json_never_replaces_a_file_without_force(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scene.png").write_bytes((FIXTURE / "images" / "single-1000900.png").read_bytes())
    (tmp_path / "scene.json").write_text("mine")
    assert cli.main(["show", "camcheck-shapes", "scene.png", "--target", "3", "--write-json"]) == 2
    assert capsys.readouterr().err == "camcheck: error: scene.json exists; pass --force to replace it\n"
    assert (tmp_path / "scene.json").read_text() == "mine"
    assert cli.main(["show", "camcheck-shapes", "scene.png", "--write-json", "--force"]) == 0
    assert json.loads((tmp_path / "scene.json").read_text())["regions"].keys() == {"star"}
    # a model with no evidence for "circle" at all (its weights for the class are zero), so its map is empty
    (tmp_path / "blind.py").write_text(BLIND_TO_CIRCLES)
    assert cli.main(["show", "blind.py:make", "scene.png", "--target", "circle", "--write-json", "--force"]) == 2
    assert "is empty, so there is no box to write" in capsys.readouterr().err


def test_show_never_writes_the_overlay_over_an_input_or_a_file_that_is_not_an_overlay(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "img.png"
    image.write_bytes((FIXTURE / "images" / "single-1000900.png").read_bytes())
    original = image.read_bytes()
    (tmp_path / "net.py").write_text("from pytest_camcheck import load_model\ndef make():\n"
                                     "    return load_model('camcheck-shapes')\n")
    (tmp_path / "link.png").symlink_to(image)
    for model, out, what in (("camcheck-shapes", "img.png", "the input image"),
                             ("camcheck-shapes", "sub/../img.png", "the input image"),
                             ("camcheck-shapes", "link.png", "the input image"),
                             ("net.py:make", "net.py", "the model file")):
        assert cli.main(["show", model, "img.png", "--out", out, "--force"]) == 2
        assert f"--out {out} is {what}" in capsys.readouterr().err
    assert cli.main(["show", "camcheck-shapes", "img.png", "--write-json", "--out", "img.json"]) == 2
    assert "is the annotation JSON --write-json writes" in capsys.readouterr().err
    (tmp_path / "notes.png").write_bytes(b"the user's file")
    assert cli.main(["show", "camcheck-shapes", "img.png", "--out", "notes.png"]) == 2
    assert "notes.png exists and is not an overlay camcheck show wrote" in capsys.readouterr().err
    assert image.read_bytes() == original and (tmp_path / "notes.png").read_bytes() == b"the user's file"
    assert not (tmp_path / "img.json").exists()
    assert cli.main(["show", "camcheck-shapes", "img.png", "--out", "notes.png", "--force"]) == 0
    assert cli.main(["show", "camcheck-shapes", "img.png", "--out", "notes.png"]) == 0  # an earlier overlay
    assert image.read_bytes() == original


def test_dataset_report_never_replaces_a_file_that_is_not_a_report(tmp_path, capsys):
    (tmp_path / "keep.html").write_text("mine")
    assert cli.main(["dataset", "camcheck-shapes", str(FIXTURE / "instances.json"), "--report",
                     str(tmp_path / "keep.html")]) == 2
    assert "the file exists and is not an earlier camcheck report" in capsys.readouterr().err
    assert (tmp_path / "keep.html").read_text() == "mine"


def test_dataset_exits_0_or_1_and_writes_the_report(tmp_path, capsys):
    bad = camcheck("dataset", "camcheck-shapes-shortcut", str(FIXTURE / "instances.json"), "--min-pass-rate", "0.5",
                   "--report", "r.html", cwd=tmp_path)
    assert bad.returncode == 1 and "failed: 12.5% of 8 checks" in bad.stdout and "overlay: /" in bad.stdout
    assert "6/6 images" in bad.stderr and '<div class="dataset">' in (tmp_path / "r.html").read_text()
    assert cli.main(["dataset", "camcheck-shapes", str(FIXTURE / "instances.json")]) == 0
    assert "passed: 100.0% of 8 checks" in capsys.readouterr().out


def test_bad_arguments_give_one_line_and_exit_code_2(tmp_path):
    run = camcheck("dataset", "camcheck-shapes", str(tmp_path / "nothing"), cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("camcheck: error: ") and "nothing" in run.stderr


@pytest.mark.parametrize("args, words", [
    ([], "the following arguments are required: command"),
    (["explain"], "invalid choice: 'explain'"),
    (["show", "camcheck-shapes"], "required: image"),
    (["show", "no-such-model", "x.png"], "x.png does not exist"),
    (["show", "no-such-model", "IMAGE"], "unknown model 'no-such-model'"),
    (["show", "nofile.py:make", "IMAGE"], "model file nofile.py does not exist"),
    (["show", "FACTORY:missing", "IMAGE"], "has no function 'missing'"),
    (["show", "camcheck-shapes", "IMAGE", "--method", "magic"], "magic"),
    (["show", "camcheck-shapes", "IMAGE", "--layer", "nope"], "nope"),
    (["dataset", "camcheck-shapes", "DATA", "--min-pass-rate", "2"], "--min-pass-rate 2 is not a share"),
    (["dataset", "camcheck-shapes", "DATA", "--min-pass-rate", "high"], "invalid float value: 'high'"),
    (["dataset", "camcheck-shapes", "nowhere"], "no such file or folder"),
])
def test_every_bad_argument_is_one_line(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    image = FIXTURE / "images" / "single-1000900.png"
    args = [str(image) if a == "IMAGE" else str(FIXTURE / "instances.json") if a == "DATA" else
            a.replace("FACTORY", str(tmp_path / "f.py")) for a in args]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("camcheck: error: ") and words in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "f.py"]  # nothing written


def test_the_console_script_is_the_command_line():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["camcheck"].partition(":")
    assert module == "pytest_camcheck.cli" and getattr(cli, name) is cli.console
