"""COCO-format reader: an instances JSON plus an image folder.

Works for the standard COCO 2017 layout (``train2017/``, ``annotations/instances_train2017.json``) and any
other image folder + JSON pair (see :func:`singleshot.data.formats.load_dataset` for the layout search).

Conventions:

* category ids, sorted ascending, map to contiguous labels 1..K (0 is background), as the MLPerf reference does;
* ``iscrowd`` annotations: ``crowd="keep"`` makes them ordinary targets, as both SSD300 references' COCO readers do
  (the MLPerf reference and NVIDIA SSD300 v1.1 take every annotation's box, crowd or not, so crowd-only images stay);
  ``crowd="drop"`` (the default) leaves them out of the targets;
* images left with no target (none annotated, only dropped crowd, or only invalid boxes) are skipped unless
  ``keep_empty=True``, which keeps them as negatives (the references skip images without annotations).

The JSON is parsed with :mod:`json` and validated record by record rather than through ``pycocotools.COCO``,
which neither validates nor says which record is broken; evaluation scores against the same file (with
faster-coco-eval, pycocotools' numbers).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import numpy as np

from singleshot.data.base import DetectionDataset, sanitize_boxes
from singleshot.data.errors import DatasetFormatError, ProblemCollector

# Ids are stored as int64 and written back to results files; sizes and coordinates beyond these bounds describe no
# real image (and would overflow the int64/float32 arrays they are parsed into), so they are errors, not clipped.
ID_RANGE = (-(2**63), 2**63 - 1)
MAX_SIDE = 2**31 - 1  # pixels
MAX_COORD = 2.0**31  # pixels, absolute value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_id(v: Any) -> bool:
    return _is_int(v) and ID_RANGE[0] <= v <= ID_RANGE[1]


def _short(v: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: a fuzzed or broken file can hold huge values."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record(kind: str, i: int, rec: Any) -> str:
    rid = rec.get("id") if isinstance(rec, dict) else None
    return f"{kind}[{i}]" + (f" (id={_short(rid, 30)})" if rid is not None else "")


def load_coco_json(path: str) -> dict[str, Any]:
    """Read a COCO JSON file; malformed JSON raises :class:`DatasetFormatError` with the line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot read annotation file: {e}") from None
    except (ValueError, RecursionError) as e:  # an integer of over 4,300 digits; nesting deeper than the stack
        raise DatasetFormatError(f"{path}: invalid JSON: {str(e)[:120]}") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    return data


class CocoDetection(DetectionDataset):
    """A COCO instances JSON + image folder as a :class:`DetectionDataset`.

    Args:
        image_dir: folder the ``file_name`` entries are relative to.
        ann_file: the instances JSON.
        keep_empty: keep images without any training box as negatives (default: skip them, as the reference).
        crowd: "drop" (default) leaves ``iscrowd`` annotations out of the targets; "keep" makes them ordinary
            targets, as the MLPerf and NVIDIA SSD300 references read COCO. Crowd boxes are counted in
            ``stats["boxes_crowd"]`` either way.
        on_bad_image: "raise" or "skip"; see :class:`DetectionDataset`.
        strict: raise :class:`DatasetFormatError` on the first malformed record (default); False records it in
            ``problems`` and skips the record (used by ``singleshot data check``).

    Box handling: COCO ``[x, y, w, h]`` pixels become xyxy pixels, are clipped to the image's stated size, and
    boxes with zero or negative size after clipping are dropped; both are counted in ``stats``
    (``boxes_clipped``, ``boxes_dropped``) and listed in ``problems``. Annotations whose ``category_id`` is not in
    ``categories`` are dropped and counted (``boxes_unknown_category``).
    """

    format = "coco"

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        ann_file: str | os.PathLike[str],
        *,
        keep_empty: bool = False,
        crowd: str = "drop",
        on_bad_image: str = "raise",
        strict: bool = True,
    ) -> None:
        if crowd not in ("drop", "keep"):
            raise ValueError(f"crowd must be 'drop' or 'keep', got {crowd!r}")
        self.crowd = crowd
        image_dir, ann_file = os.fspath(image_dir), os.fspath(ann_file)
        self.image_dir, self.ann_file = image_dir, ann_file
        col = ProblemCollector(ann_file, strict)
        data = load_coco_json(ann_file)
        categories = self._parse_categories(data, col)
        self.dropped_category = _drop_roboflow_project_category(data, categories, col)
        cat_ids = sorted(categories)
        cat_to_label = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        images = self._parse_images(data, col)
        per_image = self._parse_annotations(data, col, images, cat_to_label)

        paths, ids, sizes, boxes, labels = [], [], [], [], []
        for image_id, (file_name, h, w) in images.items():
            img_boxes, img_labels = per_image.get(image_id, ([], []))
            if not img_boxes and not keep_empty:
                col.count("images_skipped_empty")
                continue
            paths.append(os.path.join(image_dir, file_name))
            ids.append(image_id)
            sizes.append((h, w))
            boxes.append(np.asarray(img_boxes, np.float32).reshape(-1, 4))
            labels.append(np.asarray(img_labels, np.int64))
        super().__init__(
            root=ann_file,
            paths=paths,
            image_ids=ids,
            sizes=np.asarray(sizes, np.int64).reshape(-1, 2),
            boxes=boxes,
            labels=labels,
            classes=[categories[c] for c in cat_ids],
            label_to_category_id={label: cid for cid, label in cat_to_label.items()},
            on_bad_image=on_bad_image,
            problems=col.problems,
            stats=col.stats,
        )
        self.category_id_to_label = cat_to_label

    @staticmethod
    def _list(data: dict[str, Any], key: str, col: ProblemCollector, required: bool = True) -> list[Any]:
        value = data.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            got = "missing" if value is None else f"a {type(value).__name__}"
            raise DatasetFormatError(f"{col.file}: top-level field '{key}' must be a list, got {got}")
        return value

    def _parse_categories(self, data: dict[str, Any], col: ProblemCollector) -> dict[int, str]:
        categories: dict[int, str] = {}
        for i, cat in enumerate(self._list(data, "categories", col)):
            rec = _record("categories", i, cat)
            if not isinstance(cat, dict) or not _is_id(cat.get("id")):
                col.error("category needs an integer 'id' (64-bit)", rec, "id")
                continue
            name = cat.get("name")
            if not isinstance(name, str):
                col.error("category needs a string 'name'", rec, "name")
                name = str(cat["id"])
            if cat["id"] in categories:
                col.error(f"duplicate category id {cat['id']}", rec, "id")
                continue
            categories[cat["id"]] = name
        if not categories:
            raise DatasetFormatError(f"{col.file}: no valid categories")
        return categories

    def _parse_images(self, data: dict[str, Any], col: ProblemCollector) -> dict[int, tuple[str, int, int]]:
        images: dict[int, tuple[str, int, int]] = {}
        for i, img in enumerate(self._list(data, "images", col)):
            rec = _record("images", i, img)
            if not isinstance(img, dict) or not _is_id(img.get("id")):
                col.error("image needs an integer 'id' (64-bit)", rec, "id")
                continue
            if not isinstance(img.get("file_name"), str) or not img["file_name"] or "\0" in img["file_name"]:
                col.error("image needs a non-empty string 'file_name' (without NUL bytes)", rec, "file_name")
                continue
            if img["id"] in images:
                col.error(f"duplicate image id {img['id']}", rec, "id")
                continue
            h, w = img.get("height", -1), img.get("width", -1)
            for field, v in (("height", h), ("width", w)):
                if not (_is_int(v) and 0 < v <= MAX_SIDE) and v != -1:
                    col.error(f"'{field}' must be a positive integer up to {MAX_SIDE}, got {_short(v)}", rec, field)
            h = h if _is_int(h) and 0 < h <= MAX_SIDE else -1
            w = w if _is_int(w) and 0 < w <= MAX_SIDE else -1
            images[img["id"]] = (img["file_name"], h, w)
        return images

    def _parse_annotations(
        self,
        data: dict[str, Any],
        col: ProblemCollector,
        images: dict[int, tuple[str, int, int]],
        cat_to_label: dict[int, int],
    ) -> dict[int, tuple[list[list[float]], list[int]]]:
        """Group valid annotations (crowd ones only with ``crowd="keep"``) by image: ``{image_id: (boxes xyxy
        pixels, labels)}``."""
        per_image: dict[int, tuple[list[list[float]], list[int]]] = {}
        for i, ann in enumerate(self._list(data, "annotations", col, required=False)):
            rec = _record("annotations", i, ann)
            if not isinstance(ann, dict):
                col.error("annotation must be an object", rec)
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
                col.error(f"'bbox' must be 4 numbers [x, y, w, h] of magnitude up to 2**31, got {_short(bbox)}",
                          rec, "bbox")
                continue
            if not _is_id(ann.get("image_id")):
                col.error("annotation needs an integer 'image_id' (64-bit)", rec, "image_id")
                continue
            if not _is_id(ann.get("category_id")):
                col.error("annotation needs an integer 'category_id' (64-bit)", rec, "category_id")
                continue
            if ann["image_id"] not in images:
                col.warn(f"unknown image_id {ann['image_id']}; dropped", rec, "image_id", "boxes_unknown_image")
                continue
            if ann["category_id"] not in cat_to_label:
                msg = f"unknown category_id {ann['category_id']}; dropped"
                col.warn(msg, rec, "category_id", "boxes_unknown_category")
                continue
            if ann.get("iscrowd", 0) not in (0, 1, False, True):
                col.error(f"'iscrowd' must be 0 or 1, got {_short(ann.get('iscrowd'))}", rec, "iscrowd")
                continue
            if ann.get("iscrowd", 0):
                col.count("boxes_crowd")
                if self.crowd == "drop":
                    continue
            _, h, w = images[ann["image_id"]]
            x, y, bw, bh = (float(v) for v in bbox)
            xyxy = np.array([[x, y, x + bw, y + bh]], np.float32)
            clipped, keep, changed = sanitize_boxes(xyxy, w if w > 0 else math.inf, h if h > 0 else math.inf)
            if not keep[0]:
                col.warn(f"box {_short(bbox)} has no area inside the {w}x{h} image; dropped", rec, "bbox",
                         "boxes_dropped")
                continue
            if changed[0]:
                col.warn(f"box {_short(bbox)} extends outside the {w}x{h} image; clipped", rec, "bbox",
                         "boxes_clipped")
            boxes, labels = per_image.setdefault(ann["image_id"], ([], []))
            boxes.append(clipped[0].tolist())
            labels.append(cat_to_label[ann["category_id"]])
        return per_image


def _drop_roboflow_project_category(
    data: dict[str, Any], categories: dict[int, str], col: ProblemCollector
) -> str | None:
    """Remove Roboflow's category 0 from ``categories`` (in place); return its name, or None if there is none.

    Roboflow's COCO exports list the project itself as category 0 (the supercategory of every real class) with no
    annotations; kept, it would become a class the model must learn and never sees. Dropped only when it is id 0,
    has no annotation and other categories exist, and noted in one line.
    """
    if 0 not in categories or len(categories) < 2:
        return None
    anns = data.get("annotations") if isinstance(data.get("annotations"), list) else []
    if any(isinstance(a, dict) and a.get("category_id") == 0 for a in anns):
        return None
    name = categories.pop(0)
    note = f"category 0 {name!r} has no annotations (Roboflow's project category); dropped, not a class"
    col.warn(note, "categories", "id", "categories_dropped")
    if col.strict:
        print(f"note: {col.file}: {note}", file=sys.stderr)
    return name


def _is_num(v: Any) -> bool:
    """A JSON number usable as a pixel coordinate: finite, magnitude up to :data:`MAX_COORD`."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_COORD
