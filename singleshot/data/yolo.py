"""YOLO txt reader: one ``labels/*.txt`` per image with lines ``class cx cy w h`` normalized to [0, 1].

Layouts found (``split`` is "train", "val", ...): a ``data.yaml`` with ``names`` and per-split image folders;
``images/{split}/`` + ``labels/{split}/``; or ``{split}/images/`` + ``{split}/labels/``. A label file sits where
the image is with the last ``images`` path component replaced by ``labels`` and the extension by ``.txt``.
Polygon lines (``class x1 y1 x2 y2 ...``) become their bounding box. Class ``k`` becomes label ``k + 1``; names
come from ``data.yaml``, ``classes.txt`` or ``*.names``, else ``class0``, ``class1``, ... Images without a label
file are negatives (kept only with ``keep_empty``). Boxes stay normalized until the image is decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from singleshot.data.base import DetectionDataset, sanitize_boxes
from singleshot.data.errors import DatasetFormatError, ProblemCollector, SplitNotFoundError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "train": ("train",), "test": ("test",)}
NEAR_EDGE = 1e-3  # normalized; box coordinates this close outside the image are rounding, not annotation errors


def _yaml(root: Path) -> dict[str, Any] | None:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (root / name).is_file():
            import yaml

            try:
                data = yaml.safe_load((root / name).read_text())
            except yaml.YAMLError as e:
                raise DatasetFormatError(f"{root / name}: invalid YAML: {e}") from None
            if not isinstance(data, dict):
                raise DatasetFormatError(f"{root / name}: top level must be a mapping")
            data["_file"] = str(root / name)
            return data
    return None


def yolo_image_dir(root: str | os.PathLike[str], split: str) -> Path | None:
    """The image folder of ``split`` in a YOLO dataset, or None if this is not one."""
    r = Path(root)
    data = _yaml(r) if r.is_dir() else None
    aliases = _SPLIT_ALIASES.get(split, (split,))
    if data is not None:
        declared = Path(str(data.get("path") or "."))
        base = declared if declared.is_absolute() else r / declared
        for key in aliases:
            if isinstance(data.get(key), str):
                cand = Path(data[key]) if Path(data[key]).is_absolute() else base / data[key]
                for c in (cand, r / data[key]):
                    if c.is_dir():
                        return c
    for key in aliases:
        for cand in (r / "images" / key, r / key / "images"):
            if cand.is_dir():
                return cand
    return None


def label_path(image: Path) -> Path:
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (the last ``images`` component is replaced)."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _class_names(root: Path, data: dict[str, Any] | None) -> list[str] | None:
    if data is not None and "names" in data:
        names = data["names"]
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
        raise DatasetFormatError(f"{data['_file']}: field 'names' must be a list or a mapping")
    for cand in [root / "classes.txt", *sorted(root.glob("*.names"))]:
        if cand.is_file():
            return [s.strip() for s in cand.read_text().splitlines() if s.strip()]
    return None


MAX_CLASS = 65535  # a larger class index is a broken file (and, without a names file, would name that many classes)
MAX_VALUE = 1e6  # normalized coordinates: beyond this magnitude a value is no overshoot of [0, 1] but garbage


def _parse_label_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(classes int64[n], boxes float32[n, 4] xyxy normalized)``; malformed lines raise naming file and line.

    Out-of-range numbers are malformed: a class outside 0..65535, a coordinate that is not finite or whose
    magnitude exceeds 1e6 (values slightly outside [0, 1] are clipped later and counted).
    """
    classes, boxes = [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot read label file: {e}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        vals = line.split()
        if not vals:
            continue
        try:
            cls, nums = int(vals[0]), [float(v) for v in vals[1:]]
        except ValueError:
            msg = f"{path}: line {lineno}: expected 'class cx cy w h' numbers, got {line[:80]!r}"
            raise DatasetFormatError(msg) from None
        if not 0 <= cls <= MAX_CLASS:
            msg = f"{path}: line {lineno} field 'class': {vals[0][:40]} is out of range 0..{MAX_CLASS}"
            raise DatasetFormatError(msg)
        if not all(abs(v) <= MAX_VALUE for v in nums):  # also NaN
            raise DatasetFormatError(
                f"{path}: line {lineno} field 'box': a coordinate is not finite or out of range (|v| <= {MAX_VALUE:g})"
            )
        if len(nums) == 4:
            cx, cy, w, h = nums
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(nums) >= 6 and len(nums) % 2 == 0:  # polygon
            xs, ys = nums[0::2], nums[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            raise DatasetFormatError(f"{path}: line {lineno}: expected 5 values (class cx cy w h), got {len(vals)}")
        classes.append(cls)
        boxes.append(box)
    return np.asarray(classes, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4)


class YOLODetection(DetectionDataset):
    """A YOLO txt dataset as a :class:`DetectionDataset` (image ids are positions in the sorted image list)."""

    format = "yolo"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        classes: Sequence[str] | None = None,
        keep_empty: bool = False,
        on_bad_image: str = "raise",
        strict: bool = True,
        images: Sequence[Path] | None = None,
    ) -> None:
        """``images``: the split's image files when a ``data.yaml`` lists them (then ``root`` is only a name)."""
        root = Path(root)
        if images is None:
            image_dir = yolo_image_dir(root, split)
            if image_dir is None:
                raise SplitNotFoundError(f"{root}: no YOLO image folder for split '{split}'")
            images = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        names = list(classes) if classes is not None else _class_names(root, _yaml(root))
        col = ProblemCollector(str(root), strict)
        parsed: list[tuple[Path, np.ndarray, np.ndarray]] = []
        for img in images:
            lbl = label_path(img)
            if not lbl.is_file():
                parsed.append((img, np.zeros(0, np.int64), np.zeros((0, 4), np.float32)))
                continue
            try:
                cls, boxes = _parse_label_file(lbl)
            except DatasetFormatError as e:
                if strict:
                    raise
                col.error(str(e).split(": ", 1)[-1], file=str(lbl))
                continue
            parsed.append((img, cls, boxes))
        if names is None:
            top = max((int(c.max()) for _, c, _ in parsed if len(c)), default=-1)
            names = [f"class{k}" for k in range(top + 1)]
        paths, ids, all_boxes, all_labels = [], [], [], []
        for idx, (img, cls, boxes) in enumerate(parsed):
            lbl = str(label_path(img))
            known = (cls >= 0) & (cls < len(names))
            for k in np.flatnonzero(~known):
                col.warn(f"unknown class {cls[k]}; dropped", f"line {k + 1}", "class", "boxes_unknown_category",
                         file=lbl)
            # Coordinates written with 6 decimals overshoot the edge by rounding (1.0000005): snap anything within
            # NEAR_EDGE of [0, 1] onto it silently, so that only real overshoots are reported as clipped.
            boxes = np.where((boxes < 0) & (boxes > -NEAR_EDGE), 0.0, boxes)
            boxes = np.where((boxes > 1) & (boxes < 1 + NEAR_EDGE), 1.0, boxes).astype(np.float32)
            clipped, keep, changed = sanitize_boxes(boxes, 1.0, 1.0)
            # Unknown classes were reported above; record names are built only for the boxes reported.
            col.box_repairs(keep | ~known, changed & known, lambda k: f"line {k + 1}", "box", file=lbl)
            sel = known & keep
            if not sel.any() and not keep_empty:
                col.count("images_skipped_empty")
                continue
            paths.append(str(img))
            ids.append(idx)
            all_boxes.append(clipped[sel])
            all_labels.append(cls[sel] + 1)
        super().__init__(
            root=str(root), paths=paths, image_ids=ids, sizes=np.full((len(paths), 2), -1, np.int64),
            boxes=all_boxes, labels=all_labels, classes=names,
            label_to_category_id={i + 1: i for i in range(len(names))},
            normalized_boxes=True, on_bad_image=on_bad_image, problems=col.problems, stats=col.stats,
        )
