"""Dataset readers: COCO, Pascal VOC, YOLO and camcheck JSON give the same objects; polygons, RLE, EXIF
orientations; malformed files are refused naming the file, the entry and the fix."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_camcheck import Box, load_dataset
from pytest_camcheck.datasets import AnnotatedObject, Dataset
from pytest_camcheck.errors import AnnotationError, CamCheckError
from pytest_camcheck.regions import to_mask

# (file name, (width, height), [(label, (x0, y0, x1, y1)), ...]) in displayed pixels, x1/y1 exclusive
SPEC = [
    ("a.png", (64, 48), [("cat", (3, 4, 20, 30)), ("dog", (30, 10, 64, 48))]),
    ("b.png", (40, 56), [("dog", (0, 0, 10, 12)), ("dog", (20, 30, 35, 50)), ("bird", (12, 5, 39, 25))]),
    ("c.png", (50, 50), [("bird", (10, 10, 15, 15))]),
]
LABELS = ["bird", "cat", "dog"]


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_images(folder: Path, spec=SPEC) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (w, h), _) in enumerate(spec):
        picture(w, h, i).save(folder / name)


def write_coco(root: Path, spec=SPEC, images_sub="images") -> Path:
    write_images(root / images_sub, spec)
    cats = {name: i + 10 for i, name in enumerate(LABELS)}
    doc = {"images": [], "annotations": [], "categories": [{"id": v, "name": k} for k, v in cats.items()]}
    for i, (name, (w, h), objects) in enumerate(spec):
        doc["images"].append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for label, (x0, y0, x1, y1) in objects:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i + 1,
                                       "category_id": cats[label], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                       "iscrowd": 0, "area": (x1 - x0) * (y1 - y0)})
    path = root / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def voc_xml(name: str, w: int, h: int, objects, difficult=()) -> str:
    parts = [f"<annotation><folder>x</folder><filename>{name}</filename>"
             f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for i, (label, (x0, y0, x1, y1)) in enumerate(objects):
        parts.append(f"<object><name>{label}</name><difficult>{int(i in difficult)}</difficult><bndbox>"
                     f"<xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc(root: Path, spec=SPEC) -> Path:
    write_images(root / "JPEGImages", spec)
    (root / "Annotations").mkdir(parents=True)
    for name, (w, h), objects in spec:
        (root / "Annotations" / f"{Path(name).stem}.xml").write_text(voc_xml(name, w, h, objects))
    return root


def write_yolo(root: Path, spec=SPEC, names_file="classes.txt") -> Path:
    write_images(root / "images", spec)
    (root / "labels").mkdir(parents=True)
    if names_file == "classes.txt":
        (root / "classes.txt").write_text("\n".join(LABELS) + "\n")
    else:
        (root / "data.yaml").write_text(names_file)
    for name, (w, h), objects in spec:
        lines = [f"{LABELS.index(label)} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}"
                 for label, (x0, y0, x1, y1) in objects]
        (root / "labels" / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_camcheck(root: Path, spec=SPEC) -> Path:
    write_images(root / "deep" / "er", spec)
    for name, _, objects in spec:
        regions: dict = {}
        for label, box in objects:
            regions.setdefault(label, []).append(list(box))
        (root / "deep" / "er" / f"{Path(name).stem}.json").write_text(json.dumps({"image": name, "regions": regions}))
    return root


def by_file(ds: Dataset) -> dict[str, list[AnnotatedObject]]:
    return {Path(s.name).name: list(s.objects) for s in ds}


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_the_four_formats_load_to_identical_objects(tmp_path):
    loaded = {
        "coco": load_dataset(write_coco(tmp_path / "coco")),
        "voc": load_dataset(write_voc(tmp_path / "voc")),
        "yolo": load_dataset(write_yolo(tmp_path / "yolo")),
        "camcheck": load_dataset(write_camcheck(tmp_path / "cc")),
    }
    expected = {name: [AnnotatedObject(label, Box(*box)) for label, box in objects] for name, _, objects in SPEC}
    for fmt, ds in loaded.items():
        assert ds.format == fmt and len(ds) == 3 and ds.labels == LABELS
        assert by_file(ds) == expected, fmt
        for sample in ds:
            w, h = next(size for name, size, _ in SPEC if name == Path(sample.name).name)
            assert sample.size == (h, w) and sample.image.mode == "RGB"


def test_voc_coordinates_are_one_based_inclusive_and_difficult_is_kept(tmp_path):
    write_images(tmp_path, [("x.png", (20, 10), [])])
    (tmp_path / "x.xml").write_text(voc_xml("x.png", 20, 10, [("a", (0, 0, 10, 5)), ("b", (10, 5, 20, 10))],
                                            difficult=(1,)))
    objects = load_dataset(tmp_path / "x.xml")[0].objects
    assert objects[0] == AnnotatedObject("a", Box(0, 0, 10, 5)) and not objects[0].difficult
    assert objects[1].difficult and objects[1].region == Box(10, 5, 20, 10)
    assert to_mask(objects[0].region, (10, 20))[:5, :10].all() and to_mask(objects[0].region, (10, 20)).sum() == 50


def test_union_of_a_class_is_its_region(tmp_path):
    sample = load_dataset(write_coco(tmp_path))[1]
    dog = sample.regions["dog"]
    assert isinstance(dog, np.ndarray)
    assert np.array_equal(dog, to_mask(Box(0, 0, 10, 12), (56, 40)) | to_mask(Box(20, 30, 35, 50), (56, 40)))
    assert sample.regions["bird"] == Box(12, 5, 39, 25)


def test_polygons_in_every_format_rasterise_alike(tmp_path):
    tri = [(5, 5), (40, 8), (12, 30)]
    rect = [(3, 4), (20, 4), (20, 30), (3, 30)]
    write_images(tmp_path / "coco" / "images", [("p.png", (64, 48), [])])
    doc = {"images": [{"id": 1, "file_name": "p.png", "width": 64, "height": 48}],
           "categories": [{"id": 1, "name": "tri"}, {"id": 2, "name": "rect"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 35, 25],
                            "segmentation": [[v for p in tri for v in p]]},
                           {"id": 2, "image_id": 1, "category_id": 2, "bbox": [3, 4, 17, 26],
                            "segmentation": [[v for p in rect for v in p]]}]}
    (tmp_path / "coco" / "instances.json").write_text(json.dumps(doc))
    coco = load_dataset(tmp_path / "coco" / "instances.json")[0].objects
    # a polygon tracing a box covers exactly the box's pixels
    assert np.array_equal(coco[1].region, to_mask(Box(3, 4, 20, 30), (48, 64)))
    from skimage.draw import polygon

    expected = np.zeros((48, 64), bool)
    rr, cc = polygon([y - 0.5 for _, y in tri], [x - 0.5 for x, _ in tri], (48, 64))
    expected[rr, cc] = True
    assert np.array_equal(coco[0].region, expected) and 300 < expected.sum() < 450

    write_images(tmp_path / "cc", [("p.png", (64, 48), [])])
    (tmp_path / "cc" / "p.json").write_text(json.dumps({"image": "p.png", "regions": {
        "tri": {"polygon": [list(p) for p in tri]}, "rect": {"polygon": [v for p in rect for v in p]}}}))
    camcheck = list(load_dataset(tmp_path / "cc")[0].objects)
    assert camcheck == [coco[0], coco[1]]

    write_images(tmp_path / "yolo" / "images", [("p.png", (64, 48), [])])
    (tmp_path / "yolo" / "labels").mkdir()
    (tmp_path / "yolo" / "classes.txt").write_text("tri\nrect\n")
    norm = " ".join(f"{x / 64} {y / 48}" for x, y in tri)
    (tmp_path / "yolo" / "labels" / "p.txt").write_text(f"0 {norm}\n")
    assert list(load_dataset(tmp_path / "yolo")[0].objects) == [coco[0]]


def test_rle_masks_decode_through_pycocotools(tmp_path):
    mask_util = pytest.importorskip("pycocotools.mask")
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 5:30] = 1
    mask[30:40, 40:44] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    path = write_coco(tmp_path, SPEC[:1])
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segmentation"] = rle
    doc["annotations"][0]["iscrowd"] = 1
    doc["annotations"][0]["bbox"] = [float(v) for v in mask_util.toBbox(rle)]  # as COCO files give it
    path.write_text(json.dumps(doc))
    obj = load_dataset(path)[0].objects[0]
    assert np.array_equal(obj.region, mask.astype(bool)) and obj.difficult
    # uncompressed counts (as COCO's crowd annotations give them) decode to the same mask
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    doc["annotations"][0]["segmentation"] = {"size": [48, 64], "counts": np.diff(np.concatenate([[0], edges])).tolist()}
    path.write_text(json.dumps(doc))
    assert np.array_equal(load_dataset(path)[0].objects[0].region, mask.astype(bool))


def test_rle_without_pycocotools_names_the_extra(tmp_path, monkeypatch):
    path = write_coco(tmp_path, SPEC[:1])
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segmentation"] = {"size": [48, 64], "counts": "abc"}
    path.write_text(json.dumps(doc))
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(AnnotationError, match=r"annotation 0.*RLE.*pycocotools.*pytest-camcheck\[coco\]"):
        load_dataset(path)


# what each EXIF orientation does to the stored pixels, undone by Pillow's exif_transpose
_INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
            7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_coordinates_are_in_the_displayed_image_for_every_exif_orientation(tmp_path, orientation):
    shown = np.zeros((30, 50, 3), np.uint8)
    shown[4:12, 30:45] = 255  # the object, where a viewer shows it
    displayed = Image.fromarray(shown)
    stored = displayed if _INVERSE[orientation] is None else displayed.transpose(_INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "photo.png", exif=exif)
    box = [30, 4, 45, 12]
    (tmp_path / "photo.json").write_text(json.dumps({"image": "photo.png", "regions": {"thing": box}}))
    doc = {"images": [{"id": 1, "file_name": "photo.png", "width": 50, "height": 30}],
           "categories": [{"id": 1, "name": "thing"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 4, 15, 8]}]}
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    for ds in (load_dataset(tmp_path / "photo.json"), load_dataset(tmp_path / "coco.json")):
        sample = ds[0]
        assert sample.size == (30, 50)
        assert np.array_equal(np.asarray(sample.image), shown)
        assert np.asarray(sample.image)[to_mask(sample.objects[0].region, sample.size)].min() == 255
    if orientation >= 5:  # an annotation of the stored (un-rotated) pixels is refused
        doc["images"][0].update(width=30, height=50)
        (tmp_path / "coco.json").write_text(json.dumps(doc))
        with pytest.raises(AnnotationError, match=r"stored pixels.*EXIF orientation \(" + str(orientation)):
            load_dataset(tmp_path / "coco.json")


def test_camcheck_json_keeps_several_objects_difficult_flags_and_extra_fields(tmp_path):
    write_images(tmp_path / "a" / "b", [("s.png", (60, 40), [])])
    (tmp_path / "a" / "b" / "s.json").write_text(json.dumps({
        "image": "s.png", "camera": "front", "source": "street survey",
        "regions": {"car": [[1, 2, 10, 12], {"box": [20, 5, 30, 15], "difficult": True, "occluded": 0.5}],
                    "sign": [40, 10, 50, 30]}}))
    (tmp_path / "notes.json").write_text(json.dumps({"not": "an annotation"}))
    ds = load_dataset(tmp_path)
    sample = ds[0]
    assert ds.format == "camcheck" and sample.name == "a/b/s.png" and sample.extra == {"camera": "front"}
    assert sample.source == "street survey"
    assert [o.label for o in sample.objects] == ["car", "car", "sign"]
    assert sample.objects[1] == AnnotatedObject("car", Box(20, 5, 30, 15), True, {"occluded": 0.5})


@pytest.mark.parametrize("names", [
    "path: .\nnames: [bird, cat, dog]\n",
    "names:\n  - bird\n  - 'cat'\n  - dog\nnc: 3\n",
    "nc: 3\nnames:\n  0: bird\n  1: cat\n  2: \"dog\"\n",
])
@pytest.mark.parametrize("with_pyyaml", [True, False])
def test_yolo_class_names_from_data_yaml(tmp_path, monkeypatch, names, with_pyyaml):
    if not with_pyyaml:
        monkeypatch.setitem(sys.modules, "yaml", None)
    elif "yaml" not in sys.modules:
        pytest.importorskip("yaml")
    ds = load_dataset(write_yolo(tmp_path, SPEC[:1], names_file=names))
    assert [o.label for o in ds[0].objects] == ["cat", "dog"]


def test_loading_and_reading_write_nothing_next_to_the_data(tmp_path):
    roots = [write_coco(tmp_path / "coco").parent, write_voc(tmp_path / "voc"), write_yolo(tmp_path / "yolo"),
             write_camcheck(tmp_path / "cc")]
    before = [listing(r) for r in roots]
    for root in roots:
        target = root / "instances.json" if (root / "instances.json").exists() else root
        for sample in load_dataset(target):
            assert sample.objects
    assert [listing(r) for r in roots] == before


def test_images_folder_can_be_given(tmp_path):
    path = write_coco(tmp_path / "ann", images_sub="elsewhere")
    with pytest.raises(AnnotationError, match=r"'a.png' was not found.*Fix: pass images="):
        load_dataset(path)
    ds = load_dataset(path, images=tmp_path / "ann" / "elsewhere")
    assert len(ds) == 3 and ds[2].objects[0].label == "bird"


def test_a_slice_is_a_dataset_and_reading_is_lazy(tmp_path):
    ds = load_dataset(write_coco(tmp_path))
    part = ds[1:]
    assert isinstance(part, Dataset) and len(part) == 2 and part.entries[0].labels == ["dog", "bird"]
    (tmp_path / "images" / "c.png").unlink()  # headers were read at load time; pixels only when taken
    assert part[0].objects
    with pytest.raises(AnnotationError, match="c.png"):
        part[1]


# ---- malformed files: (what to break, the error's expected words) --------------------------------------------

def _coco_doc(tmp_path):
    path = write_coco(tmp_path, SPEC[:2])
    return path, json.loads(path.read_text())


def _edit(fn):
    def make(tmp_path):
        path, doc = _coco_doc(tmp_path)
        fn(doc, tmp_path)
        path.write_text(json.dumps(doc))
        return path
    return make


def _text(rel, text):
    def make(tmp_path):
        (tmp_path / rel).write_text(text)
        return tmp_path / rel
    return make


def _voc(edit):
    def make(tmp_path):
        root = write_voc(tmp_path, SPEC[:1])
        xml = root / "Annotations" / "a.xml"
        xml.write_text(edit(xml.read_text()))
        return root
    return make


def _yolo(edit, rel="labels/a.txt"):
    def make(tmp_path):
        root = write_yolo(tmp_path, SPEC[:1])
        edit(root, root / rel)
        return root
    return make


def _cc(regions):
    def make(tmp_path):
        write_images(tmp_path, SPEC[:1])
        (tmp_path / "a.json").write_text(json.dumps({"image": "a.png", "regions": regions}))
        return tmp_path
    return make


MALFORMED = {
    "missing path": (lambda p: p / "nope.json", r"nope.json: no such file"),
    "unknown suffix": (_text("data.csv", "a,b\n"), r"data.csv: .csv is not an annotation format"),
    "empty folder": (lambda p: p, r"no annotations found in this folder. Fix: pass a COCO"),
    "broken json": (_text("x.json", '{"images": [1, 2,'), r"x.json, line 1, column \d+: is not valid JSON"),
    "json of no format": (_text("x.json", '{"info": 1}'), r"neither COCO instances .* it has: info"),
    "coco images not a list": (_edit(lambda d, p: d.update(images={})), r'"images": is dict, not a list'),
    "coco unknown image id": (_edit(lambda d, p: d["annotations"][1].update(image_id=99)),
                              r"annotation 1 \(id 2\): image_id 99 is not in \"images\""),
    "coco unknown category": (_edit(lambda d, p: d["annotations"][0].update(category_id=7)),
                              r"annotation 0 \(id 1\): category_id 7 is not in \"categories\" \(ids: 10, 11, 12\)"),
    "coco bbox of 3 values": (_edit(lambda d, p: d["annotations"][2].update(bbox=[1, 2, 3])),
                              r"annotation 2 .*bbox is \[1, 2, 3\]. Fix: give bbox as \[x, y, width, height\]"),
    "coco bbox not numbers": (_edit(lambda d, p: d["annotations"][0].update(bbox=[1, "2", 3, 4])),
                              r"bbox y is '2', not a finite number"),
    "coco box outside the image": (_edit(lambda d, p: d["annotations"][0].update(bbox=[50, 10, 30, 10])),
                                   r"annotation 0 .*\(50, 10\)-\(80, 20\) reaches outside the 64x48 px image"),
    "coco negative width": (_edit(lambda d, p: d["annotations"][0].update(bbox=[10, 10, -3, 10])),
                            r"annotation 0 .*is empty or inverted"),
    "coco image file missing": (_edit(lambda d, p: (p / "images" / "b.png").unlink()),
                                r"image id 2 \(b.png\): the image 'b.png' was not found"),
    "coco image not an image": (_edit(lambda d, p: (p / "images" / "b.png").write_text("text")),
                                r"b.png is not an image Pillow can read"),
    "coco size mismatch": (_edit(lambda d, p: d["images"][0].update(width=65)),
                           r"image id 1 \(a.png\): the annotation is for a 65x48 px image but .*a.png is 64x48"),
    "coco duplicate image id": (_edit(lambda d, p: d["images"][1].update(id=1)), r"this image id appears twice"),
    "coco odd polygon": (_edit(lambda d, p: d["annotations"][0].update(segmentation=[[1, 2, 3, 4, 5, 6, 7]])),
                         r"annotation 0 .*a polygon has 7 coordinates"),
    "coco polygon outside": (_edit(lambda d, p: d["annotations"][0].update(segmentation=[[1, 2, 300, 4, 5, 6]])),
                             r"a polygon reaches outside the 64x48 px image"),
    "voc broken xml": (_voc(lambda t: t.replace("</annotation>", "")), r"a.xml, line 1, column \d+: is not well-formed"),
    "voc no bndbox": (_voc(lambda t: t.replace("<bndbox>", "<box>").replace("</bndbox>", "</box>")),
                      r"a.xml, <object> 1 \(cat\): has no <bndbox>"),
    "voc inverted box": (_voc(lambda t: t.replace("<xmax>20</xmax>", "<xmax>2</xmax>")),
                         r"<object> 1 \(cat\): the box .* is empty or inverted"),
    "voc no name": (_voc(lambda t: t.replace("<name>dog</name>", "<name></name>")),
                    r"<object> 2: <name> is missing or empty"),
    "voc bad number": (_voc(lambda t: t.replace("<ymin>5</ymin>", "<ymin>five</ymin>")),
                       r"<ymin> is 'five', not a number"),
    "voc difficult flag": (_voc(lambda t: t.replace("<difficult>0</difficult>", "<difficult>yes</difficult>", 1)),
                           r"<difficult> is 'yes'. Fix: write 0 or 1"),
    "voc not voc": (_voc(lambda t: t.replace("annotation>", "doc>")), r"is not a Pascal VOC annotation"),
    "yolo class out of range": (_yolo(lambda r, f: f.write_text("3 0.5 0.5 0.1 0.1\n")),
                                r"a.txt, line 1: class 3 is not among the 3 class names"),
    "yolo field count": (_yolo(lambda r, f: f.write_text("\n0 0.5 0.5 0.1\n")), r"a.txt, line 2: has 4 fields"),
    "yolo not normalised": (_yolo(lambda r, f: f.write_text("0 32 24 10 10\n")), r"has values outside \[0, 1\]"),
    "yolo not numbers": (_yolo(lambda r, f: f.write_text("cat 0.5 0.5 0.1 0.1\n")), r"is not numbers"),
    "yolo no class names": (_yolo(lambda r, f: f.unlink(), "classes.txt"), r"without class names"),
    "yolo label without image": (_yolo(lambda r, f: f.write_text("0 0.5 0.5 0.1 0.1\n"), "labels/zzz.txt"),
                                 r"zzz.txt: has no image zzz\.\* in"),
    "yolo yaml without names": (_yolo(lambda r, f: (f.unlink(), (r / "data.yaml").write_text("nc: 3\n")),
                                      "classes.txt"), r"data.yaml, names: is missing or empty"),
    "coco duplicate category id": (_edit(lambda d, p: d["categories"][1].update(id=10)),
                                   r"category 1: id 10 is given twice \('bird' and 'cat'\)"),
    "coco duplicate category name": (_edit(lambda d, p: d["categories"][1].update(name="bird")),
                                     r"category 1: the name 'bird' is given to ids 10 and 11"),
    "coco list as image id": (_edit(lambda d, p: d["images"][0].update(id=[1])), r"image 0: id is '\[1\]', not an id"),
    "coco bool image_id": (_edit(lambda d, p: d["annotations"][0].update(image_id=True)),
                           r"annotation 0 \(id 1\): image_id is 'True', not an id"),
    "coco list category_id": (_edit(lambda d, p: d["annotations"][0].update(category_id=[10])),
                              r"category_id is '\[10\]', not an id"),
    "coco iscrowd text": (_edit(lambda d, p: d["annotations"][0].update(iscrowd="0")), r"iscrowd is '0'. Fix: write 0"),
    "coco segmentation text": (_edit(lambda d, p: d["annotations"][0].update(segmentation="garbage")),
                               r"segmentation is 'garbage'. Fix: give polygons"),
    "coco fractional width": (_edit(lambda d, p: d["images"][0].update(width=64.9)),
                              r"the image size is given as width=64.9, height=48"),
    "coco rle short counts": (_edit(lambda d, p: d["annotations"][0].update(
        segmentation={"size": [48, 64], "counts": [10, 5]})), r"the RLE's counts covers 15 pixels, but the image has"),
    "coco rle negative run": (_edit(lambda d, p: d["annotations"][0].update(
        segmentation={"size": [48, 64], "counts": [3082, -5, 5]})), r"the RLE's counts has a negative run"),
    "coco rle corrupt string": (_edit(lambda d, p: d["annotations"][0].update(
        segmentation={"size": [48, 64], "counts": "ooo"})), r"the RLE's counts string ends inside a number"),
    "coco rle bad characters": (_edit(lambda d, p: d["annotations"][0].update(
        segmentation={"size": [48, 64], "counts": "ab~"})), r"characters outside COCO's encoding"),
    "coco rle counts a number": (_edit(lambda d, p: d["annotations"][0].update(
        segmentation={"size": [48, 64], "counts": 5})), r"the RLE's counts are int"),
    "coco rle size a number": (_edit(lambda d, p: d["annotations"][0].update(segmentation={"size": 5, "counts": [3072]})),
                               r"the RLE segmentation has size 5"),
    "coco segmentation off its bbox": (_edit(lambda d, p: d["annotations"][0].update(
        segmentation=[[40, 30, 60, 30, 60, 45, 40, 45]])), r"the segmentation spans \(40, 30\)-\(60, 45\) but the bbox"),
    "coco one file twice": (_edit(lambda d, p: (d["images"][1].update(file_name="a.png", width=64, height=48),
                                                d.update(annotations=d["annotations"][:2]))),
                            r"image id 2 \(a.png\): annotates .*a.png, which .*image id 1 \(a.png\) annotates too"),
    "coco box in fractions": (_edit(lambda d, p: d["annotations"][0].update(bbox=[0.1, 0.1, 0.4, 0.4])),
                              r"the box \(0.1, 0.1, 0.5, 0.5\) lies within the first pixel: these look like fractions"),
    "coco polygon on a line": (_edit(lambda d, p: d["annotations"][0].update(segmentation=[[3, 4, 10, 11, 20, 21]])),
                               r"the polygon's points lie on one line"),
    "coco not utf-8": (lambda p: (p / "x.json").write_bytes(b'{"images": "\xff"}') and p / "x.json",
                       r"x.json: is not UTF-8 text"),
    "voc two boxes": (_voc(lambda t: t.replace("</bndbox>", "</bndbox><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax>"
                                                "<ymax>3</ymax></bndbox>", 1)), r"<object> 1 \(cat\): has 2 <bndbox>"),
    "voc polygon": (_voc(lambda t: t.replace("</bndbox>", "</bndbox><polygon><x1>1</x1></polygon>", 1)),
                    r"<object> 1 \(cat\): has a <polygon>, which camcheck does not read"),
    "voc size without width": (_voc(lambda t: t.replace("<width>64</width>", "")),
                               r"<size>: the image size is given as width=None, height='48'"),
    "yolo blank class line": (_yolo(lambda r, f: f.write_text("bird\n\ncat\ndog\n"), "classes.txt"),
                              r"classes.txt, line 2: is blank, so every later line would name a class one index off"),
    "yolo repeated class name": (_yolo(lambda r, f: f.write_text("bird\ncat\ncat\n"), "classes.txt"),
                                 r"classes 1 and 2 are both named 'cat'"),
    "yolo yaml repeated name": (_yolo(lambda r, f: (f.unlink(), (r / "data.yaml").write_text("names: [a, b, a]\n")),
                                      "classes.txt"), r"data.yaml, names: classes 0 and 2 are both named 'a'"),
    "yolo yaml names alike but for spaces": (
        _yolo(lambda r, f: (f.unlink(), (r / "data.yaml").write_text('names: ["cat", "cat "]\n')), "classes.txt"),
        r"data.yaml, names: classes 0 and 1 are both named 'cat'"),
    "yolo yaml null name": (_yolo(lambda r, f: (f.unlink(), (r / "data.yaml").write_text("names: [a, null]\n")),
                                  "classes.txt"), r"data.yaml, names: class 1 is named None"),
    "yolo yaml nc": (_yolo(lambda r, f: (f.unlink(), (r / "data.yaml").write_text("nc: 3\nnames: [a, b]\n")),
                           "classes.txt"), r"data.yaml, nc: is 3 but names lists 2 classes"),
    "yolo yaml text keys": (_yolo(lambda r, f: (f.unlink(), (r / "data.yaml").write_text("names: {0: a, b: c}\n")),
                                  "classes.txt"), r"names: has the indices \[0, 'b'\]"),
    "yolo files disagree": (_yolo(lambda r, f: (r / "data.yaml").write_text("names: [cat, bird, dog]\n"), "classes.txt"),
                            r"data.yaml, names: is \['cat', 'bird', 'dog'\] but .*classes.txt says \['bird', 'cat'"),
    "yolo pose labels": (_yolo(lambda r, f: (r / "data.yaml").write_text("kpt_shape: [2, 2]\nnames: [a]\n"),
                               "classes.txt"), r"data.yaml, kpt_shape: says the labels are poses"),
    "yolo label not utf-8": (_yolo(lambda r, f: f.write_bytes(b"0 0.5 0.5 0.1 0.1 \xff\n")), r"a.txt: is not UTF-8"),
    "yolo two images one label": (_yolo(lambda r, f: picture(64, 48).save(r / "images" / "a.jpg")),
                                  r"a.txt: would be the labels of both a.jpg and a.png"),
    "camcheck bad region": (_cc({"cat": [1, 2, 3]}), r'a.json, region "cat": is \[1, 2, 3\]'),
    "camcheck declared size": (lambda p: (_cc({"cat": [1, 2, 3, 4]})(p), (p / "a.json").write_text(json.dumps(
        {"image": "a.png", "width": 640, "height": 480, "regions": {}})), p)[-1],
        r'a.json, "width", "height": the annotation is for a 640x480 px image but .*a.png is 64x48'),
    "camcheck box in fractions": (_cc({"cat": [0.1, 0.2, 0.5, 0.6]}), r"look like fractions of the image size"),
    "camcheck polygon in fractions": (_cc({"cat": {"polygon": [0.1, 0.2, 0.5, 0.6, 0.1, 0.6]}}),
                                      r"the polygon .* lies within the first pixel"),
    "image too large": (lambda p: (_cc({"cat": [1, 2, 3, 4]})(p), setattr(Image, "MAX_IMAGE_PIXELS", 100), p)[-1],
                        r"a.png is larger than Pillow opens by default"),
    "camcheck box outside": (_cc({"cat": [1, 2, 300, 30]}), r'region "cat": the box .* reaches outside'),
    "camcheck both box and polygon": (_cc({"cat": {"box": [1, 2, 3, 4], "polygon": [1, 2, 3, 4, 5, 6]}}),
                                      r'region "cat": is .* Fix: give each object as'),
    "camcheck difficult not bool": (_cc({"cat": {"box": [1, 2, 3, 4], "difficult": "no"}}),
                                    r'"difficult" is \'no\'. Fix: write true or false'),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_refused_with_the_file_the_entry_and_the_fix(tmp_path, case, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # a case may lower it
    make, words = MALFORMED[case]
    target = make(tmp_path)
    with pytest.raises(CamCheckError, match=words) as err:
        load_dataset(target)
    assert "Fix:" in str(err.value) and "\n" not in str(err.value)


def test_yolo_label_files_replace_only_the_last_suffix(tmp_path):
    # Roboflow names its exports x_jpg.rf.<hash>.jpg: a dotted stem must find its own label file, not x_jpg.rf.txt
    spec = [("frame.png", (64, 48), [("cat", (3, 4, 20, 30))]),
            ("frame.001.png", (64, 48), [("dog", (30, 10, 64, 48))]),
            ("x_jpg.rf.3f2a.png", (64, 48), [("bird", (10, 10, 15, 15))])]
    root = write_yolo(tmp_path, spec)
    for name, _, _ in spec:  # write_yolo names the label files by Path.stem, which is the right key here
        assert (root / "labels" / f"{Path(name).stem}.txt").is_file()
    objects = {Path(e.name).name: [o.label for o in e.objects] for e in load_dataset(root).entries}
    assert objects == {"frame.png": ["cat"], "frame.001.png": ["dog"], "x_jpg.rf.3f2a.png": ["bird"]}


def test_yolo_class_files_that_agree_are_both_accepted(tmp_path):
    root = write_yolo(tmp_path, SPEC[:1])
    (root / "data.yaml").write_text(f"nc: 3\nnames: [{', '.join(LABELS)}]\n")
    assert load_dataset(root)[0].objects[0].label == "cat"
    (root / "data.yaml").write_text("train: images\nval: images\n")  # paths only: the names are in classes.txt
    assert load_dataset(root)[0].objects[0].label == "cat"


def test_compressed_rle_counts_are_checked_as_pycocotools_writes_them(tmp_path):
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(3)
    path = write_coco(tmp_path, SPEC[:1])
    doc = json.loads(path.read_text())
    del doc["annotations"][0]["bbox"]  # the segmentation alone (no bbox to agree with)
    for trial in range(30):
        mask = (rng.random((48, 64)) < rng.random()).astype(np.uint8)
        if trial == 0:
            mask[:] = 0
        rle = mask_util.encode(np.asfortranarray(mask))
        counts = rle["counts"].decode()
        doc["annotations"][0]["segmentation"] = {"size": [48, 64], "counts": counts}
        path.write_text(json.dumps(doc))
        assert np.array_equal(load_dataset(path)[0].objects[0].region, mask.astype(bool))
        # the same string cut short covers fewer pixels (pycocotools would fill the rest from memory)
        doc["annotations"][0]["segmentation"]["counts"] = counts[:-1]
        path.write_text(json.dumps(doc))
        with pytest.raises(AnnotationError, match=r"RLE's counts (covers \d+ pixels|string ends inside)"):
            load_dataset(path)


def test_two_images_of_one_name_are_refused_until_their_folder_is_given(tmp_path):
    for part in ("train", "val"):
        write_images(tmp_path / part, SPEC[:1])
    doc = {"images": [{"id": i, "file_name": str(tmp_path / part / "a.png")} for i, part in ((1, "train"), (2, "val"))],
           "categories": [{"id": 1, "name": "cat"}],
           "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [3, 4, 17, 26]}]}
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances.json"  # the images lie outside its folder, named by absolute paths
    path.write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match=r"would both be named 'a.png' .* Fix: pass images="):
        load_dataset(path)
    ds = load_dataset(path, images=tmp_path)
    assert [s.name for s in ds] == ["train/a.png", "val/a.png"] and [len(s.objects) for s in ds] == [0, 1]
