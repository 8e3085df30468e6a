"""Small on-disk datasets for the data-layer tests (COCO, VOC, YOLO, and broken variants)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_image(
    path: Path, width: int = 64, height: int = 48, mode: str = "RGB", fmt: str = "JPEG", seed: int = 0
) -> Path:
    """A random image file; ``mode`` "L", "CMYK", "RGBA", "P" exercise the colour conversions."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path, fmt)
    return path


def coco_dict(num_images: int = 3, width: int = 64, height: int = 48) -> dict[str, Any]:
    """A valid COCO dict: categories 7 ("cat") and 3 ("dog") so that label order (by id) differs from file order."""
    images = [{"id": 10 + i, "file_name": f"img{i}.jpg", "width": width, "height": height} for i in range(num_images)]
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 3, 20, 10], "iscrowd": 0, "area": 200},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [30, 20, 10, 10], "iscrowd": 0, "area": 100},
        {"id": 3, "image_id": 11, "category_id": 3, "bbox": [5, 5, 30, 30], "iscrowd": 1, "area": 900},
    ]
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    }


def make_coco(root: Path, data: dict[str, Any] | None = None, split: str = "train") -> Path:
    """``root/{split}/*.jpg`` + ``root/annotations/instances_{split}.json``; returns root."""
    data = data if data is not None else coco_dict()
    for i, img in enumerate(data["images"]):
        write_image(root / split / img["file_name"], img.get("width", 64), img.get("height", 48), seed=i)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def make_voc(root: Path) -> Path:
    """A two-image VOC folder (train split), one 'difficult' object."""
    objs = {
        "a": [("dog", (1, 1, 20, 20), 0), ("cat", (10, 5, 60, 40), 1)],
        "b": [("cat", (5, 5, 30, 30), 0)],
    }
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, items in objs.items():
        write_image(root / "JPEGImages" / f"{stem}.jpg")
        xml_objs = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in items
        )
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>64</width><height>48</height></size>"
            f"{xml_objs}</annotation>"
        )
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    return root


def make_yolo(root: Path, lines: dict[str, str] | None = None) -> Path:
    """``images/train`` + ``labels/train`` + ``data.yaml`` with names [cat, dog]."""
    lines = lines if lines is not None else {"a": "0 0.5 0.5 0.25 0.5\n1 0.2 0.2 0.1 0.1\n", "b": "1 0.5 0.5 1.0 1.0\n"}
    for stem, text in lines.items():
        write_image(root / "images" / "train" / f"{stem}.jpg")
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cat, dog]\n")
    return root
