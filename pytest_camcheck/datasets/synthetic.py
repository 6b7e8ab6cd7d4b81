"""Datasets of :mod:`pytest_camcheck.scenes` written as COCO instances JSON: the data of the example dataset in
``fixtures/shapes-coco`` and of the dataset benchmarks.

Example:
    >>> import tempfile
    >>> from pytest_camcheck import load_dataset
    >>> folder = write_scenes_coco(tempfile.mkdtemp(), [(1_000_000, "single")])
    >>> load_dataset(folder / "instances.json")[0].objects[0].label in ("circle", "square", "triangle", "star",
    ...                                                                   "cross", "ring")
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from PIL import Image

from ..scenes import CLASSES, make_scene

__all__ = ["write_scenes_coco"]


def write_scenes_coco(folder: str | os.PathLike[str], scenes: Iterable[tuple[int, str]], *,
                      label_of=None) -> Path:
    """Draw each ``(seed, kind)`` scene into ``folder/images/<kind>-<seed>.png`` and write
    ``folder/instances.json`` with one box per object (and the watermark's box as ``extra`` of the image).
    ``label_of(scene, i)``: the category name written for object ``i`` (default: its class). Returns ``folder``.

    Example:
        >>> write_scenes_coco("fixtures/shapes-coco", [(s, "single") for s in range(1_000_000, 1_000_010)])
        ... # doctest: +SKIP
    """
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (seed, kind) in enumerate(scenes, start=1):
        scene = make_scene(seed, kind)
        name = f"{kind}-{seed}.png"
        Image.fromarray(scene.image).save(root / "images" / name, optimize=True)
        h, w = scene.image.shape[:2]
        entry = {"id": image_id, "file_name": name, "width": w, "height": h,
                 "scene": {"seed": seed, "kind": kind}}
        if scene.watermark_box is not None:
            entry["watermark"] = list(scene.watermark_box)
        images.append(entry)
        for i, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = obj.box
            label = label_of(scene, i) if label_of is not None else obj.name
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": CLASSES.index(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": categories}, indent=1) + "\n", encoding="utf-8")
    return root
