"""The camcheck command line at its edges: --write-json onto an input, the pasted test of a model
without class names, the fix for a dataset of such a model (--classes), small messages, a reader leaving early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_camcheck import cli
from tests.test_cli import FIXTURE, ROOT

NET = '''
from collections import OrderedDict

import torch
from torch import nn


def make():
    """Class 0 scores the brightness at the layer `features`, class 1 the darkness; no class names."""
    model = nn.Sequential(OrderedDict(features=nn.Conv2d(3, 2, 1), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
                                      fc=nn.Linear(2, 2)))
    with torch.no_grad():
        model.features.weight.zero_()
        model.features.bias.zero_()
        model.features.weight[0] = 1 / 3
        model.features.weight[1] = -1 / 3
        model.features.bias[1] = 1.0
        model.fc.weight.copy_(torch.eye(2))
        model.fc.bias.zero_()
    return model.eval()


def make_twice():
    """The same model, both of its classes named 'lit' (as ImageNet names two classes 'crane')."""
    from pytest_camcheck.zoo import ModelInfo, attach_info

    model = make()
    attach_info(model, ModelInfo(name="twice", categories=("lit", "lit")))
    return model
'''
PATCH = (40, 5, 55, 15)  # the bright patch of the image, x0, y0, x1, y1


def make_files(folder: Path) -> Path:
    """net.py (the model without class names) and img.png (dark, one bright patch) in ``folder``."""
    (folder / "net.py").write_text(NET)
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[PATCH[1]:PATCH[3], PATCH[0]:PATCH[2]] = 255
    Image.fromarray(pixels).save(folder / "img.png")
    return folder


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of :func:`make_files`, made the current directory."""
    monkeypatch.chdir(tmp_path)
    return make_files(tmp_path)


def one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("camcheck: error: ") and "Traceback" not in err, err
    return err


def test_write_json_never_writes_over_an_input_even_with_force(here, capsys):
    Image.open(here / "img.png").save(here / "photo.json", format="PNG")  # an image whose name ends in .json
    os.link(here / "img.png", here / "hard.png")
    os.link(here / "img.png", here / "hard.json")  # hard.json is the image hard.png under another name
    (here / "soft.png").write_bytes((here / "img.png").read_bytes())
    (here / "soft.json").symlink_to(here / "soft.png")
    (here / "code.json").symlink_to(here / "net.py")
    (here / "code.png").write_bytes((here / "img.png").read_bytes())
    before = {p.name: p.read_bytes() for p in here.iterdir()}
    for image, what, fix in (("photo.json", "the input image", "rename or copy the image"),
                             ("hard.png", "the input image", "move hard.json aside"),
                             ("soft.png", "the input image", "move soft.json aside"),
                             ("code.png", "the model file", "move code.json aside")):
        for force in ([], ["--force"]):
            assert cli.main(["show", "net.py:make", image, "--layer", "features", "--write-json", *force]) == 2
            err = one_error(capsys)
            assert f"writes the annotation to {Path(image).with_suffix('.json')}, which is {what}" in err, err
            assert fix in err and "leave out --write-json" in err
    assert {p.name: p.read_bytes() for p in here.iterdir()} == before  # refused before any work: nothing written
    assert (here / "soft.json").is_symlink() and (here / "code.json").is_symlink()


def test_the_pasted_test_of_a_model_without_class_names_passes(capsys, pytester):
    make_files(pytester.path)  # pytester's folder is the current directory
    assert cli.main(["show", "net.py:make", "img.png", "--layer", "features", "--target", "0"]) == 0
    out = capsys.readouterr().out
    code = out.split("# a test to paste:\n")[1].split("# the annotation")[0]
    assert f"assert_attends_to(model, 'img.png', 0, Box{PATCH}, layer='features')" in code
    assert "target: class 0 (the model has no class names)" in out
    # two classes named alike: the name would not tell which, so the index is pasted
    assert cli.main(["show", "net.py:make_twice", "img.png", "--layer", "features", "--target", "0"]) == 0
    twice = capsys.readouterr().out.split("# a test to paste:\n")[1].split("# the annotation")[0]
    assert f"'img.png', 0, Box{PATCH}" in twice
    for name, pasted in (("test_pasted.py", code), ("test_pasted_twice.py", twice)):
        (pytester.path / name).write_text(pasted)
    pytester.runpytest("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_box_covering_the_whole_image_is_not_suggested_as_a_test(here, capsys):
    # class 1 scores darkness: the dark area, and so the suggested box, spans the whole image
    assert cli.main(["show", "net.py:make", "img.png", "--layer", "features", "--target", "1"]) == 0
    out = capsys.readouterr().out
    assert "suggested box: [0, 0, 60, 40]" in out and "# a test to paste" not in out
    assert "a box covering the whole image says nothing" in out and (here / "img-camcheck.png").is_file()
    assert cli.main(["show", "net.py:make", "img.png", "--layer", "features", "--target", "1", "--write-json",
                     "--force"]) == 2
    assert "the map of class 1 covers the whole image, so there is no box to write" in one_error(capsys)
    assert not (here / "img.json").exists()


def test_dataset_of_a_model_without_class_names_says_how_to_map_the_labels(here, capsys):
    data = str(FIXTURE / "instances.json")
    assert cli.main(["dataset", "net.py:make", data, "--layer", "features"]) == 2
    err = one_error(capsys)
    assert "has no class names" in err and "--classes FILE" in err and "categories=" not in err
    assert '{"circle": 0, "ring": 1, ...}' in err
    (here / "classes.json").write_text(json.dumps({"circle": 0, "square": 1, "star": None}))
    assert cli.main(["dataset", "net.py:make", data, "--layer", "features", "--classes", "classes.json",
                     "--min-pass-rate", "0"]) == 0
    out = capsys.readouterr().out
    assert "passed: " in out and "star (not in classes)" in out


@pytest.mark.parametrize("content, words", [
    (None, "--classes file nothing.json does not exist"),
    ("{'circle': 0}", "is not valid JSON"),
    ('["circle"]', "holds a JSON list, not an object"),
    ('{"circle": 0.5}', "maps 'circle' to 0.5"),
    ('{"circle": true}', "maps 'circle' to true"),
    ('{"circle": 0, "circle": 1}', "maps 'circle' more than once"),
    ('{"cat": 0}', "maps no label of"),
    ('{"circle": "round"}', "to the class name 'round', but the model net.py:make has no class names"),
])
def test_a_bad_classes_file_is_one_line(here, capsys, content, words):
    if content is not None:
        (here / "nothing.json").write_text(content)
    assert cli.main(["dataset", "net.py:make", str(FIXTURE / "instances.json"), "--classes", "nothing.json"]) == 2
    assert words in one_error(capsys)


def test_small_messages(here, capsys):
    assert cli.main([]) == 2
    assert "(camcheck --help shows the usage)" in one_error(capsys)
    assert cli.main(["show", "camcheck-shapes"]) == 2
    assert "(camcheck show --help shows the usage)" in one_error(capsys)
    (here / "adir").mkdir()
    assert cli.main(["show", "net.py:make", "adir"]) == 2
    assert "image adir is a folder, not an image file" in one_error(capsys)


class _GoneReader:
    """A stdout whose reader has left: every write is EPIPE."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_leaves_early_does_not_stop_the_files_being_written(here, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    assert cli.main(["show", "net.py:make", "img.png", "--layer", "features", "--target", "0", "--write-json"]) == 0
    assert (here / "img-camcheck.png").is_file() and json.loads((here / "img.json").read_text())["regions"]
    (here / "classes.json").write_text('{"circle": 0, "square": 1}')
    assert cli.main(["dataset", "net.py:make", str(FIXTURE / "instances.json"), "--layer", "features", "--classes",
                     "classes.json", "--min-pass-rate", "0", "--report", "r.html"]) == 0
    assert '<div class="dataset">' in (here / "r.html").read_text()
    monkeypatch.undo()
    assert "error" not in capsys.readouterr().err


def test_show_into_a_pipe_whose_reader_has_left_writes_the_overlay_and_exits_quietly(here):
    """`camcheck show ... | head -1`, the reader gone before the first line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    run = subprocess.Popen([sys.executable, "-m", "pytest_camcheck", "show", "net.py:make", "img.png", "--layer",
                            "features", "--out", "piped.png"], cwd=here, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    run.stdout.close()
    err = run.stderr.read().decode()
    assert run.wait(timeout=300) == 0 and err == "" and (here / "piped.png").is_file()


def test_a_broken_pipe_in_the_models_code_is_an_error_like_any_other(here, capsys):
    """Only stdout's reader leaving ends quietly; a BrokenPipeError of the user's factory (a model server's
    connection) is said in one line, and stdout is left alone."""
    (here / "fac.py").write_text("def factory():\n    raise BrokenPipeError(32, 'Broken pipe')\n")
    assert cli.main(["show", "fac.py:factory", "img.png"]) == 2
    assert "Broken pipe" in one_error(capsys)
    print("stdout still works")
    assert "stdout still works" in capsys.readouterr().out
