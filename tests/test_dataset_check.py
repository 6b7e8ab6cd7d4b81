"""assert_dataset_attends_to on held-out scenes: the clean model passes, the shortcut model and swapped labels
fail; the rate's interval, the centre baseline, classes, difficult objects, streaming and the failure message."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_camcheck import CamCheckError, assert_dataset_attends_to, context, load_dataset, load_model
from pytest_camcheck import dataset_check
from pytest_camcheck.dataset_check import run_dataset, wilson_interval
from pytest_camcheck.datasets.synthetic import write_scenes_coco
from pytest_camcheck.report import CheckReport
from pytest_camcheck.scenes import CLASSES

FIXTURE = Path(__file__).parent.parent / "fixtures" / "shapes-coco" / "instances.json"


@pytest.fixture(scope="module")
def model():
    return load_model("camcheck-shapes")


@pytest.fixture(scope="module")
def cheat():
    return load_model("camcheck-shapes-shortcut")


@pytest.fixture(scope="module")
def singles(tmp_path_factory):
    return write_scenes_coco(tmp_path_factory.mktemp("singles"),
                             [(s, "single") for s in range(1_001_000, 1_001_016)]) / "instances.json"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_scenes_coco(tmp_path_factory.mktemp("pairs"),
                             [(s, "pair") for s in range(1_001_100, 1_001_108)]) / "instances.json"


@pytest.fixture(scope="module")
def watermarked(tmp_path_factory):
    return write_scenes_coco(tmp_path_factory.mktemp("shortcut"),
                             [(s, "shortcut") for s in range(1_001_200, 1_001_212)]) / "instances.json"


@pytest.fixture
def artifacts(tmp_path):
    before = context.artifacts_dir()
    context.set_artifacts_dir(tmp_path / "art")
    yield tmp_path / "art"
    context.set_artifacts_dir(before)


@pytest.fixture(scope="module")
def honest(model, singles, pairs):
    return {"singles": assert_dataset_attends_to(model, singles), "pairs": assert_dataset_attends_to(model, pairs)}


def test_the_bundled_model_passes_on_held_out_scenes(honest):
    for result in honest.values():
        assert result.pass_rate >= 0.9 and result.pass_rate > result.center_baseline + 0.4
        assert result.interval[0] <= result.pass_rate <= result.interval[1]
        assert sum(t for _, t in result.per_class.values()) == len(result.checks)
    assert len(honest["pairs"].checks) == 16  # one check per (image, class): two per pair scene


def test_the_shortcut_model_fails_on_watermarked_scenes_with_a_full_message(cheat, watermarked, artifacts):
    records = []
    context.add_listener(records.append)
    try:
        with pytest.raises(AssertionError) as err:
            assert_dataset_attends_to(cheat, watermarked)
    finally:
        context.remove_listener(records.append)
    message, (rec,) = str(err.value), records
    rate, centre = rec.metrics["pass_rate"], rec.metrics["center_baseline"]
    assert rate < 0.5 and not rec.passed and rec.message == message
    assert rec.image == f"coco dataset {watermarked}"  # the report row names the dataset
    assert f"{rate:.1%} of 12 checks passed (95% interval {rec.metrics['interval_low']:.1%}-" in message
    assert f"centre baseline (a centred Gaussian map, same rule): {centre:.1%}" in message
    worst = sorted(rec.details["per_class"].items(), key=lambda kv: kv[1][0] / kv[1][1])[0]
    assert f"{worst[0]} {worst[1][0]}/{worst[1][1]}" in message.split("worst classes: ")[1].split("\n")[0]
    lines = [line for line in message.splitlines() if "overlay:" in line]
    assert len(lines) == 5 and [line.split()[0] for line in lines] == [g["image"] for g in rec.details["worst"]]
    written = sorted(artifacts.glob("*.png"))
    assert len(written) == 5 and all(str(p) in message for p in written)  # only the worst five pictures

    report = CheckReport()
    report.add_record(rec)
    page = CheckReport.from_json(report.to_json()).write_html(artifacts / "r.html").read_text()  # as from a worker
    section = page.split('<div class="dataset">')[1]
    for label, (passed, total) in rec.details["per_class"].items():
        assert f"<tr><td>{label}</td><td>{passed}/{total}</td>" in section
    assert f"centre baseline</span>" in section and f"{centre:.1%}" in section and f"{rate:.1%}" in section
    assert section.count("<figure><img src=\"data:image/png;base64,") == 5


def test_swapping_each_objects_label_with_the_other_objects_drops_below_the_centre_baseline(model, pairs, honest,
                                                                                            tmp_path):
    doc = json.loads(pairs.read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for first, second in by_image.values():
        first["category_id"], second["category_id"] = second["category_id"], first["category_id"]
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps(doc))
    result = run_dataset(model, load_dataset(swapped, images=pairs.parent / "images"), overlays=False)
    assert result.pass_rate < result.center_baseline < honest["pairs"].pass_rate
    assert result.center_baseline == honest["pairs"].center_baseline  # the same regions, other labels


def test_the_centre_baseline_is_the_rule_applied_to_a_centred_map(model, tmp_path):
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, centred in enumerate([True] * 6 + [False] * 2):
        Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 120, "height": 80})
        box = [45, 28, 30, 24] if centred else [0, 0, 20, 16]
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": box})
    (tmp_path / "d.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                 "categories": [{"id": 1, "name": "circle"}]}))
    assert run_dataset(model, tmp_path / "d.json", min_pass_rate=0).center_baseline == 0.75


def test_wilson_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 10), (3, 10), (18, 20), (200, 200), (171, 300)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_classes_maps_labels_and_skips_the_rest(model, singles, tmp_path):
    doc = json.loads(singles.read_text())
    doc["categories"].append({"id": 99, "name": "zebra"})
    doc["annotations"][0]["category_id"] = 99
    path = tmp_path / "z.json"
    path.write_text(json.dumps(doc))
    ds = load_dataset(path, images=singles.parent / "images")[:6]
    default = run_dataset(model, ds, min_pass_rate=0)
    assert default.skipped == {"zebra": "not a class of the model"} and len(default.checks) == 5
    as_index = run_dataset(model, ds, classes={name: i for i, name in enumerate(CLASSES)}, min_pass_rate=0)
    assert [c.passed for c in as_index.checks] == [c.passed for c in default.checks]
    assert {c.target for c in as_index.checks} <= set(range(6)) and as_index.skipped == {"zebra": "not in classes"}
    first = default.checks[0].label
    fewer = run_dataset(model, ds, classes=lambda label: None if label in (first, "zebra") else label,
                        min_pass_rate=0)
    assert first not in fewer.per_class and fewer.skipped[first] == "classes(label) is None"
    with pytest.raises(CamCheckError, match=r"no label of the dataset can be checked: .*zebra"):
        run_dataset(model, ds, classes={"unicorn": 1})
    with pytest.raises(CamCheckError, match=r"maps 'zebra' to 'zebra', which is not a class name of the model"):
        run_dataset(model, ds, classes=lambda label: label)
    with pytest.raises(CamCheckError, match=rf"maps '{first}' to 1.5"):
        run_dataset(model, ds, classes={first: 1.5})


def test_classes_whose_objects_are_all_difficult_are_checked_only_when_asked(model, singles, tmp_path):
    doc = json.loads(singles.read_text())
    for ann in doc["annotations"][:4]:
        ann["iscrowd"] = 1
    path = tmp_path / "d.json"
    path.write_text(json.dumps(doc))
    ds = load_dataset(path, images=singles.parent / "images")[:6]
    default = run_dataset(model, ds, min_pass_rate=0)
    assert len(default.checks) == 2 and default.difficult_only == 4
    assert {c.image for c in default.checks} == {e.name for e in ds.entries[4:]}
    assert len(run_dataset(model, ds, min_pass_rate=0, difficult=True).checks) == 6


def test_batches_stream_and_decoding_runs_beside_the_model(model, singles, monkeypatch):
    calls, threads = [], set()
    real_maps, real_sample = dataset_check._maps, dataset_check.Dataset.sample

    def maps(m, pictures, targets, kw):
        calls.append(len(pictures))
        return real_maps(m, pictures, targets, kw)

    def sample(entry):
        threads.add(threading.current_thread().name)
        return real_sample(entry)

    monkeypatch.setattr(dataset_check, "_maps", maps)
    monkeypatch.setattr(dataset_check.Dataset, "sample", staticmethod(sample))
    ds = load_dataset(singles)[:10]
    small = run_dataset(model, ds, batch_size=4, overlays=False)
    assert calls == [4, 4, 2] and threads and all(name.startswith("camcheck-decode") for name in threads)
    whole = run_dataset(model, ds, batch_size=64, overlays=False)
    assert calls[3:] == [10]
    assert [(c.image, c.passed) for c in small.checks] == [(c.image, c.passed) for c in whole.checks]
    assert [c.metrics["lift"] for c in small.checks] == pytest.approx([c.metrics["lift"] for c in whole.checks],
                                                                      rel=1e-4)


def test_the_model_is_left_as_it_was():
    net = load_model("camcheck-shapes")
    net.train()
    net.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run_dataset(net, FIXTURE, overlays=False)
    assert net.training and not net.fc.weight.requires_grad and net.features.stem[0].weight.grad is None
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("bad, words", [
    ({"min_pass_rate": 1.5}, "min_pass_rate=1.5 is not a valid threshold; pass a finite number between 0 and 1"),
    ({"min_pass_rate": -0.1}, "min_pass_rate=-0.1 is not a valid threshold"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"classes": ["circle"]}, "classes is a list"),
    ({"min_lift": float("nan")}, "min_lift=nan"),
])
def test_bad_arguments_are_refused(model, singles, bad, words):
    with pytest.raises(CamCheckError, match=words):
        run_dataset(model, singles, **bad)


def test_fixture_form_and_progress_through_the_terminal_reporter(pytester):
    pytester.makepyfile(f"""
        import pytest
        from pytest_camcheck import dataset_check

        @pytest.fixture(autouse=True)
        def often(monkeypatch):
            monkeypatch.setattr(dataset_check, "PROGRESS_AFTER_S", 0)
            monkeypatch.setattr(dataset_check, "PROGRESS_EVERY_S", 0)

        def test_rate(camcheck, camcheck_model):
            res = camcheck.dataset_attends_to(camcheck_model("camcheck-shapes"), {str(FIXTURE)!r}, batch_size=2)
            assert res.pass_rate >= 0.9 and res.method == "gradcam"
    """)
    loud = pytester.runpytest("-p", "no:cacheprovider", "--camcheck-device=cpu")
    loud.assert_outcomes(passed=1)
    assert "camcheck dataset: 2/6 images, 2 checks, 100.0% passed so far" in loud.stdout.str()
    quiet = pytester.runpytest("-q", "-p", "no:cacheprovider", "--camcheck-device=cpu")
    quiet.assert_outcomes(passed=1)
    assert "camcheck dataset:" not in quiet.stdout.str()


def _two_circles(folder: Path) -> tuple[Path, list[int], list[int]]:
    """Two single-circle scenes side by side (245x149 px); under Resize(112) + CenterCrop(112) the model sees
    columns 48-196 only: most of the left circle, none of the right one."""
    from pytest_camcheck.scenes import make_scene

    scenes, seed = [], 1_000_900
    while len(scenes) < 2:
        scene = make_scene(seed, "single")
        if scene.objects[0].name == "circle":
            scenes.append(scene)
        seed += 1
    a, b = scenes
    canvas = np.zeros((max(a.image.shape[0], b.image.shape[0]), a.image.shape[1] + b.image.shape[1], 3), np.uint8)
    canvas[:a.image.shape[0], :a.image.shape[1]] = a.image
    canvas[:b.image.shape[0], a.image.shape[1]:] = b.image
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(folder / "two.png")
    left, right = list(a.objects[0].box), list(b.objects[0].box)
    right[0] += a.image.shape[1]
    right[2] += a.image.shape[1]
    return folder / "two.png", left, right


def _coco(folder: Path, images: dict[str, list[tuple[str, list[int]]]]) -> Path:
    """A COCO file: image file -> [(label, box x0 y0 x1 y1)]."""
    labels = sorted({label for objects in images.values() for label, _ in objects})
    spec: dict = {"images": [], "annotations": [],
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(labels)]}
    for i, (name, objects) in enumerate(images.items(), start=1):
        with Image.open(folder / name) as img:
            spec["images"].append({"id": i, "file_name": name, "width": img.width, "height": img.height})
        for label, (x0, y0, x1, y1) in objects:
            spec["annotations"].append({"id": len(spec["annotations"]) + 1, "image_id": i,
                                        "category_id": labels.index(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]})
    path = folder / "instances.json"
    path.write_text(json.dumps(spec))
    return path


CROP = dict(preprocess=__import__("torchvision").transforms.Compose([
    __import__("torchvision").transforms.Resize(112), __import__("torchvision").transforms.CenterCrop(112),
    __import__("torchvision").transforms.ToTensor(),
    __import__("torchvision").transforms.Normalize((0.5,) * 3, (0.25,) * 3)]))


def test_an_object_the_preprocessing_crops_away_is_skipped_with_the_reason_not_failed(model, tmp_path):
    picture, left, right = _two_circles(tmp_path)
    (tmp_path / "hidden.png").write_bytes(picture.read_bytes())
    path = _coco(tmp_path, {"two.png": [("circle", left)], "hidden.png": [("circle", right)]})
    result = run_dataset(model, path, min_pass_rate=0.5, overlays=False, **CROP)
    assert [(c.image, c.label, c.passed) for c in result.checks] == [("two.png", "circle", True)]
    assert result.skipped == {"hidden.png [circle]": "never seen by the model: the preprocessing crops it away"}
    assert "skipped: hidden.png [circle] (never seen by the model" in result.summary()
    # the left circle's box starts at column 46, the crop at 48: it is judged on its seen part, and its chance
    # is that part's share of the 149 x 149 seen pixels (not of the whole 245 x 149 image)
    (x0, y0, x1, y1) = left
    assert x0 < 48 < x1 <= 197
    assert result.checks[0].metrics["chance"] == pytest.approx((x1 - 48) * (y1 - y0) / (149 * 149))
    only_hidden = _coco(tmp_path, {"hidden.png": [("circle", right)]})
    with pytest.raises(CamCheckError, match=r"no \(image, class\) pair to check: .*the model did not see it: "
                                            r"hidden.png \[circle\] .*Fix: .*preprocessing that keeps the objects"):
        run_dataset(model, only_hidden, overlays=False, **CROP)


def test_an_object_covering_the_whole_image_is_skipped_with_the_reason(model, tmp_path):
    picture, left, _ = _two_circles(tmp_path)
    (tmp_path / "whole.png").write_bytes(picture.read_bytes())
    with Image.open(picture) as img:
        everything = [0, 0, img.width, img.height]
    path = _coco(tmp_path, {"two.png": [("circle", left)], "whole.png": [("circle", everything)]})
    result = run_dataset(model, path, min_pass_rate=0.0, overlays=False)  # the run goes on past it
    assert [(c.image, c.label) for c in result.checks] == [("two.png", "circle")]
    assert result.skipped == {"whole.png [circle]": "covers the whole image"}


def test_without_a_crop_every_number_is_unchanged(model, singles):
    from pytest_camcheck import compute_cam
    from pytest_camcheck.metrics import measure
    from pytest_camcheck.regions import to_mask

    result = run_dataset(model, singles, overlays=False)
    ds = load_dataset(singles)
    for check, sample in zip(result.checks, ds):
        cam = compute_cam(model, sample.image, check.target)
        plain = measure(cam.heatmap, to_mask(sample.regions[check.label], cam.image_size), 15).as_dict()
        assert check.metrics == pytest.approx(plain, rel=1e-5, abs=1e-6)  # batched vs one image: rounding


def test_labels_mapped_to_one_class_are_judged_against_the_union_of_their_objects(model, tmp_path):
    _, left, right = _two_circles(tmp_path)
    union = run_dataset(model, _coco(tmp_path, {"two.png": [("circle", left), ("circle", right)]}), overlays=False)
    split = _coco(tmp_path, {"two.png": [("cat", left), ("kitten", right)]})
    for classes in ({"cat": "circle", "kitten": "circle"}, {"cat": "circle", "kitten": 0}):
        result = run_dataset(model, split, classes=classes, overlays=False)
        assert [(c.label, c.target, c.passed) for c in result.checks] == [("cat+kitten", 0, True)]
        assert result.per_class == {"cat+kitten": (1, 1)} and result.pass_rate == 1.0
        assert result.checks[0].metrics == union.checks[0].metrics  # one label's two objects: the same union
    apart = run_dataset(model, split, classes={"cat": "circle", "kitten": "square"}, overlays=False)
    assert [c.label for c in apart.checks] == ["cat", "kitten"]  # a label mapped alone keeps its name


def test_a_dataset_baseline_keys_merged_labels_by_their_joined_name(model, tmp_path):
    from pytest_camcheck.regression import CamRegression

    _, left, right = _two_circles(tmp_path)
    split = _coco(tmp_path, {"two.png": [("cat", left), ("kitten", right)]})
    classes = {"cat": "circle", "kitten": "circle"}
    CamRegression(tmp_path, "t", update=True).check_dataset(model, split, classes=classes)
    [baseline] = tmp_path.glob("t-dataset-*.json")
    assert json.loads(baseline.read_text())["checks"] == [["two.png", "cat+kitten", True]]
    assert CamRegression(tmp_path, "t").check_dataset(model, split, classes=classes).pass_rate == 1.0


def test_categories_given_empty_means_no_names_as_in_compute_cam(model, singles):
    import copy

    # a head replaced by one of 3 outputs keeps the model's 6 registered names: they are refused, and
    # categories=[] (no names) with classes= mapping labels to indices is the documented way through
    net = copy.deepcopy(model)
    net.fc = torch.nn.Linear(net.fc.in_features, 3)
    with pytest.raises(CamCheckError, match=r"6 class names are known but the model has 3 outputs"):
        run_dataset(net, singles, overlays=False, classes={label: 0 for label in CLASSES})
    result = run_dataset(net, singles, overlays=False, min_pass_rate=0.0, categories=[],
                         classes={label: 0 for label in CLASSES})
    assert result.checks and {c.target for c in result.checks} == {0}
