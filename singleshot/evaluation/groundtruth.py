"""COCO-format ground truth for any singleshot dataset (COCO, VOC, YOLO, synthetic).

The data layer parses annotations into its own index; COCOeval needs an instances dict. For COCO-format datasets
the original JSON is used as is (it keeps the ``iscrowd`` regions, which COCOeval ignores rather than counts as
misses, so the numbers are the official ones); for the other formats the dict is built from the parsed index.
"""

from __future__ import annotations

import json
import os
from typing import Any

from PIL import Image

from singleshot.data.base import DetectionDataset
from singleshot.data.classes import label_map_by_name


def find_dataset(obj: Any) -> DetectionDataset | None:
    """The :class:`DetectionDataset` under a loader/wrapper chain (``.loader``, ``.dataset`` attributes), or None."""
    for _ in range(6):
        if isinstance(obj, DetectionDataset):
            return obj
        nxt = getattr(obj, "loader", None) or getattr(obj, "dataset", None)
        if nxt is None:
            return None
        obj = nxt
    return None


def category_ids_by_name(
    classes: list[str], dataset: DetectionDataset, what: str = "the model", data_what: str = "dataset"
) -> dict[int, int]:
    """``{model label: dataset category id}`` matching the model's class names to the dataset's by name.

    ``classes`` are the model's K names (label ``k`` is ``classes[k - 1]``); the dataset may list the same names in
    any order. Raises :class:`~singleshot.data.classes.ClassMismatchError` (printing both lists) when the sets
    differ; ``what`` and ``data_what`` name the two sides in that message (e.g. "checkpoint best.pt", "dataset").
    """
    to_data = label_map_by_name(classes, dataset.classes, source_what=what, target_what=f"{data_what} {dataset.root}")
    return {label: int(dataset.label_to_category_id[d]) for label, d in to_data.items()}


def coco_ground_truth(dataset: DetectionDataset) -> dict[str, Any] | str:
    """The COCO ground truth of ``dataset``: its instances JSON path (COCO datasets) or a built dict.

    The built dict has one image per record (``width``/``height`` from the annotations, or read from the image
    header where unknown), one annotation per parsed box (``bbox`` xywh pixels, ``area`` = box area, ``iscrowd``
    0), category ids from ``dataset.label_to_category_id`` and names from ``dataset.classes``.
    """
    ann_file = getattr(dataset, "ann_file", None)
    if isinstance(ann_file, (str, os.PathLike)) and os.path.isfile(ann_file):
        if getattr(dataset, "dropped_category", None) is None:
            return os.fspath(ann_file)
        # a category the reader dropped (Roboflow's project category 0: no boxes, not a class) is left out of
        # the evaluation too, so that no table gets a row for it
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
        kept = {int(v) for v in dataset.label_to_category_id.values()}
        return {**data, "categories": [c for c in data.get("categories", []) if int(c["id"]) in kept]}
    return build_ground_truth(dataset)


def _image_size(dataset: DetectionDataset, index: int) -> tuple[int, int]:
    """(H, W) of record ``index``: as annotated, else from the image file's header (no decoding)."""
    h, w = dataset.image_size(index)
    if h > 0 and w > 0:
        return h, w
    path = dataset.image_path(index)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as e:
        raise ValueError(f"cannot read the size of image {path} (record {index}) for the ground truth: {e}") from e
    return h, w


def build_ground_truth(dataset: DetectionDataset) -> dict[str, Any]:
    """COCO instances dict from the dataset's parsed index (see :func:`coco_ground_truth`)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    label_to_cat = {int(k): int(v) for k, v in dataset.label_to_category_id.items()}
    for i in range(len(dataset)):
        h, w = _image_size(dataset, i)
        image_id = dataset.image_id(i)
        images.append({"id": image_id, "width": w, "height": h, "file_name": os.path.basename(dataset.image_path(i))})
        boxes, labels = dataset.annotation(i)  # (n, 4) xyxy, pixels or normalized
        if dataset.normalized_boxes:
            boxes = boxes * [w, h, w, h]
        for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist()):
            bw, bh = x1 - x0, y1 - y0
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label_to_cat[int(label)],
                "bbox": [x0, y0, bw, bh], "area": bw * bh, "iscrowd": 0,
            })
    categories = [
        {"id": label_to_cat[label], "name": name} for label, name in enumerate(dataset.classes, start=1)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}
