"""Files the user owns survive hostile paths: nothing is written through a symbolic link, two test ids never
share a baseline, dangling links and unwritable folders are clear errors, and a zip-bomb baseline is refused
from its header before anything is decompressed."""

from __future__ import annotations

import errno
import io
import os
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_camcheck import CamCheckError
from pytest_camcheck._io import atomic_write
from pytest_camcheck.errors import FileRefused
from pytest_camcheck.regression import CamRegression, read_baseline
from pytest_camcheck.render import save_png
from pytest_camcheck.scenes import HELD_OUT, make_scene

from PIL import Image

from .models import SmallCNN

torch.manual_seed(0)
NET = SmallCNN(classes=3).eval()
IMAGE = make_scene(HELD_OUT + 3).image[:32, :32]


def first(folder: Path, name: str = "test_map", **kw) -> CamRegression:
    reg = CamRegression(folder, name, update=True, **kw)
    reg.check(NET, IMAGE, 0, layer="features")
    return reg


# --- symbolic links ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["npz", "png"])
def test_a_planted_link_at_a_baseline_path_is_refused_and_its_target_untouched(tmp_path: Path, planted: str) -> None:
    folder = tmp_path / "baselines"
    names = {p.suffix[1:]: p.name for p in first(tmp_path / "probe").written}
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"the user's file")
    folder.mkdir()
    (folder / names[planted]).symlink_to(outside)
    for update in (False, True):
        with pytest.raises(CamCheckError, match=r"is a link to .*outside.txt.*never writes through symbolic links"):
            CamRegression(folder, "test_map", update=update).check(NET, IMAGE, 0, layer="features")
        assert outside.read_bytes() == b"the user's file"
        assert (folder / names[planted]).is_symlink()


@pytest.mark.parametrize("write", ["atomic_write", "save_png"])
def test_the_writers_refuse_a_symlinked_target(tmp_path: Path, write: str) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    link = tmp_path / "out.png"
    link.symlink_to(outside)
    with pytest.raises(FileRefused, match=f"{link}.*rm "):
        atomic_write(link, b"x") if write == "atomic_write" else save_png(Image.new("RGB", (2, 2)), link)
    assert outside.read_bytes() == b"keep" and link.is_symlink()


def test_a_dangling_link_is_a_clear_error_and_update_replaces_it(tmp_path: Path) -> None:
    names = [p.name for p in first(tmp_path / "probe").written]
    folder = tmp_path / "baselines"
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(tmp_path / "nowhere" / name)
    with pytest.raises(CamCheckError, match=r"is a dangling symbolic link.*Fix: remove the link.*--camcheck-update"):
        CamRegression(folder, "test_map").check(NET, IMAGE, 0, layer="features")
    reg = CamRegression(folder, "test_map", update=True)
    reg.check(NET, IMAGE, 0, layer="features")
    assert sorted(reg.removed) == sorted(folder / n for n in names)
    for name in names:
        assert not (folder / name).is_symlink() and (folder / name).stat().st_size > 0
    assert not (tmp_path / "nowhere").exists()
    CamRegression(folder, "test_map").check(NET, IMAGE, 0, layer="features")  # passes against the new baseline


def test_an_unwritable_baseline_folder_names_the_path_and_the_fix(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "tests" / "test_mod"
    blocker.parent.mkdir()
    blocker.write_text("a file where the baseline folder should be")
    with pytest.raises(CamCheckError, match=r"cannot write .*test_mod.*is not a folder.*Fix: remove or rename"):
        CamRegression(blocker, "test_map").check(NET, IMAGE, 0, layer="features")

    folder = tmp_path / "readonly"
    folder.mkdir()
    real_open = os.open

    def denied(path, *args, **kwargs):  # a read-only folder, also when the tests run as root
        if Path(path).parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(CamCheckError, match=rf"cannot write {folder}/.*folder {folder} is not writable.*chmod u\+w"):
        CamRegression(folder, "test_map").check(NET, IMAGE, 0, layer="features")


# --- one file per test id ------------------------------------------------------------------------------------

HOSTILE_IDS = [
    "test_map[a b]", "test_map[a_b]", "test_map[a-b]", "test_map[a.b]", "test_map[a/b]", "test_map[a\\b]",
    "test_map[a:b]", "test_map[a|b]", "test_map[a*b]", "test_map[a?b]", "test_map[a\"b]", "test_map[a<b>]",
    "test_map[A b]", "test_map[A_B]", "test_map[ab]", "test_map[AB]", "test_Map[ab]", "test_map", "test_Map",
    "test_map_", "_test_map", "test_map.", "test_map[]", "test_map[[]]", "test_map[a][b]", "test_map[a]-[b]",
    "test_map[é]", "test_map[e\u0301]", "test_map[ü]", "test_map[日本]", "test_map[🐕]", "test_map[🐈]",
    "test_map[\t]", "test_map[ ]", "test_map[  ]", "test_map[\n]", "test_map[..]", "test_map[../../etc]",
    "test_map[0]", "test_map[00]", "test_map[1]", "test_map[-1]", "test_map[1.0]", "test_map[1_0]",
    "test_map[" + "x" * 300 + "]", "test_map[" + "x" * 299 + "y]", "test_map[" + "x" * 301 + "]",
    "test_map[" + "a b" * 100 + "]", "test_map[" + "a_b" * 100 + "]", "test_map-gradcam",
]


def test_fifty_hostile_test_ids_never_share_a_baseline_file(tmp_path: Path) -> None:
    assert len(set(HOSTILE_IDS)) == 50
    paths = {}
    for test_id in HOSTILE_IDS:
        reg = CamRegression(tmp_path / "b", test_id)
        paths[test_id] = reg._paths(_FakeResult(), None)[0]
    files = list(paths.values())
    assert len({str(p).lower() for p in files}) == 50  # distinct even on a case-insensitive file system
    for path in files:
        assert path.parent == tmp_path / "b" and len(path.name) <= 130
        assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in path.name), path.name


class _FakeResult:
    method, layer, target = "gradcam", "features", 0


def test_ids_that_differ_only_by_space_or_underscore_keep_their_own_baselines(tmp_path: Path) -> None:
    one, other = make_scene(HELD_OUT + 4).image[:32, :32], make_scene(HELD_OUT + 5).image[:32, :32]
    CamRegression(tmp_path, "test_map[a b]", update=True).check(NET, one, 0, layer="features")
    CamRegression(tmp_path, "test_map[a_b]", update=True).check(NET, other, 0, layer="features")
    for _ in range(2):
        CamRegression(tmp_path, "test_map[a b]").check(NET, one, 0, layer="features")
        CamRegression(tmp_path, "test_map[a_b]").check(NET, other, 0, layer="features")
    assert len(list(tmp_path.glob("*.npz"))) == 2


# --- bounded reading -----------------------------------------------------------------------------------------


def _zip_bomb(path: Path, side: int = 12000) -> None:
    """A baseline whose map member claims (and holds) side x side float32 zeros, about 550 MB, in under 1 MB:
    the deflate stream of one MiB of zeros is repeated (a full flush makes each block independent)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (side, side)})
    head, size = header.getvalue(), side * side * 4
    mib = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)]
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(size, len(mib))
    crc = zlib.crc32(head)
    for _ in range(whole):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(bytes(rest), crc)
    parts += [block] * (whole - 1)
    parts.append(deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH))
    parts.append(deflate.compress(bytes(rest)) + deflate.flush())
    data, name = b"".join(parts), b"heatmap.npy"
    usize = len(head) + size
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), usize, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), usize,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    with zipfile.ZipFile(path, "a") as archive:  # the metadata of a real baseline
        for key, value in {"format_version": np.int64(1), "method": np.str_("gradcam"), "layer": np.str_("features"),
                           "target": np.int64(0), "label": np.str_(""), "device": np.str_("cpu"),
                           "image_size": np.array([side, side]), "torch_version": np.str_("2"),
                           "camcheck_version": np.str_("0")}.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(value))
            archive.writestr(f"{key}.npy", member.getvalue())


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "test_map-gradcam-features-t0.npz"
    _zip_bomb(path)
    assert path.stat().st_size < 2_000_000
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("heatmap.npy").file_size > 500_000_000
    return path


@pytest.mark.parametrize("expected", [None, (32, 32)], ids=["any size", "the image's size"])
def test_a_zip_bomb_baseline_is_refused_from_its_header(bomb: Path, expected) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(CamCheckError, match=str(bomb)):
            read_baseline(bomb, expected)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB allocated while refusing the bomb"


def test_a_zip_bomb_in_the_baseline_folder_fails_the_check_cheaply(bomb: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(CamCheckError, match=r"holds a map of 12000x12000 px but the image is now 32x32 px"):
            CamRegression(bomb.parent, "test_map").check(NET, IMAGE, 0, layer="features")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak / 2**20:.1f} MiB allocated"


def test_a_pickled_member_is_refused_without_loading_it(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, heatmap=np.array([object()], dtype=object))
    with pytest.raises(CamCheckError, match="Python objects"):
        read_baseline(path)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="a system without user ids has one default folder name")
def test_the_default_picture_folder_is_this_users_and_never_a_link(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside pytest the pictures go to the system's temporary folder, which every user may write to: the folder
    is this user's own, and a link or another user's folder planted at its name is refused, not written into."""
    import tempfile

    from pytest_camcheck import assert_attends_to, context
    from pytest_camcheck.regions import Box

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setitem(context._state, "artifacts_dir", None)  # as outside pytest
    uid = os.getuid()
    folder = tmp_path / f"camcheck-artifacts-{uid}"
    assert context.artifact_path("attends_to").parent == folder
    assert folder.stat().st_mode & 0o777 == 0o700  # made private to this user
    folder.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(FileRefused, match="is a symbolic link"):
        context.artifact_path("attends_to")
    torch.manual_seed(0)
    with pytest.raises(AssertionError, match=r"overlay: not written \(.*is a symbolic link"):
        assert_attends_to(SmallCNN().eval(), torch.rand(3, 32, 32), 0, Box(0, 0, 2, 2), min_lift=100.0)
    assert list(elsewhere.iterdir()) == []
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)  # the folder now is another user's
    other = tmp_path / f"camcheck-artifacts-{uid + 1}"
    other.mkdir()
    with pytest.raises(FileRefused, match="belongs to another user"):
        context.artifact_path("attends_to")
