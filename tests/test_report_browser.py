"""The HTML report as a browser shows it: headless Chromium renders the page, the screenshot must show the
failing check's picture, pixel for pixel, at the top, and the outcome filter must hide rows."""

from __future__ import annotations

import base64
import copy
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_camcheck import context
from pytest_camcheck.regression import CamRegression
from pytest_camcheck.report import CheckReport
from pytest_camcheck.scenes import HELD_OUT, make_scene
from tests.models import SmallCNN

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (/usr/bin/chromium; on Debian: apt-get install chromium)",
)


def chromium(page: Path, tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
         *args, page.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return done.stdout


def screenshot(page: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / "screenshot.png"
    chromium(page, tmp_path, f"--screenshot={out}")
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def _saturated(rgb: np.ndarray) -> np.ndarray:
    return (rgb.max(axis=2) - rgb.min(axis=2)) > 60


def _first_block(saturated: np.ndarray, width: int, height: int = 30) -> int | None:
    """First row of ``height`` consecutive rows with more than ``width / 4`` saturated pixels each (taller than a
    line of coloured text)."""
    rich = np.convolve((saturated.sum(axis=1) > width // 4).astype(int), np.ones(height, int), mode="valid")
    hits = np.nonzero(rich == height)[0]
    return int(hits[0]) if hits.size else None


def find(shot: np.ndarray, picture: np.ndarray) -> tuple[int, int, float]:
    """(top, left, mean absolute difference) of the best placement of ``picture`` in ``shot``: the first blocks of
    rows rich in saturated (colour-map) pixels of both are lined up, then refined by +-3 px."""
    h, w = picture.shape[:2]
    top0, own_top = _first_block(_saturated(shot), w), _first_block(_saturated(picture), w)
    assert top0 is not None and own_top is not None, "no block of coloured pixels: the page shows no picture"
    left0 = np.nonzero(_saturated(shot)[top0:top0 + 30].any(axis=0))[0][0]
    own_left = np.nonzero(_saturated(picture)[own_top:own_top + 30].any(axis=0))[0][0]
    best = (0, 0, np.inf)
    for top in range(max(top0 - own_top - 3, 0), top0 - own_top + 4):
        for left in range(max(left0 - own_left - 3, 0), left0 - own_left + 4):
            window = shot[top:top + h, left:left + w]
            if window.shape == picture.shape:
                best = min(best, (top, left, float(np.abs(window - picture).mean())), key=lambda b: b[2])
    return best


def test_browser_shows_the_failing_check_picture_first(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net, image = SmallCNN().eval(), make_scene(HELD_OUT + 11).image
    CamRegression(tmp_path, "test_browser", update=True).check(net, image, 0)
    report = CheckReport()
    context.add_listener(report.add_record)
    before = context.artifacts_dir()
    context.set_artifacts_dir(tmp_path / "artifacts")
    try:
        CamRegression(tmp_path, "test_browser", pass_pictures=True).check(net, image, 0)
        moved = copy.deepcopy(net)
        torch.manual_seed(5)
        moved.features[3].reset_parameters()
        with pytest.raises(AssertionError):
            CamRegression(tmp_path, "test_browser").check(moved, image, 0)
    finally:
        context.remove_listener(report.add_record)
        context.set_artifacts_dir(before)
    for rec, outcome in zip(report.checks, ["passed", "failed"]):
        rec["test_id"] = f"tests/test_maps.py::test_{outcome}_{len(report.tests)}"
        report.add_outcome(rec["test_id"], outcome)
    page = report.write_html(tmp_path / "report.html")

    first = re.search(r'src="data:image/png;base64,([^"]+)"', page.read_text()).group(1)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(first))).convert("RGB")).astype(int)
    assert report.rows()[0]["passed"] is False and report.rows()[0]["overlay"].endswith(".png")

    shot = screenshot(page, tmp_path)
    top, left, diff = find(shot, picture)
    assert diff < 4, f"the first picture is not shown as encoded (mean difference {diff:.1f} at {left},{top})"
    assert top < 400, "the failing check is not at the top of the page"
    region = shot[top:top + picture.shape[0], left:left + picture.shape[1]]
    assert len(np.unique(region.reshape(-1, 3), axis=0)) > 200, "the picture region is flat: no heatmap colours"


def test_browser_filter_hides_rows_by_outcome(tmp_path: Path) -> None:
    report = CheckReport()
    for outcome in ("failed", "passed", "skipped"):
        report.add_outcome(f"t.py::test_{outcome}", outcome, camcheck=True)
    page = report.write_html(tmp_path / "report.html")
    click = "<script>document.querySelector('#filter input[value=passed]').click();</script></body>"
    page.write_text(page.read_text().replace("</body>", click))
    dom = chromium(page, tmp_path, "--dump-dom")
    rows = re.finditer(r'<section class="row" data-outcome="(\w+)"( style="display: none;")?', dom)
    shown = {m[1]: m[2] for m in rows}
    assert shown == {"failed": None, "passed": ' style="display: none;"', "skipped": None}
