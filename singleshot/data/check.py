"""``singleshot data check``: validate a dataset of any supported format and summarize it.

Every split found is parsed leniently (``strict=False``, empty images kept) so that all problems are collected
rather than the first one raised; each image is then opened (fully decoded by default, which is what catches
truncated JPEGs) and its size compared with what the annotations state.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from singleshot.data.base import DetectionDataset, read_image
from singleshot.data.errors import BadImageError, DataError, Problem, SplitNotFoundError
from singleshot.data.formats import detect_format, load_dataset

# COCO's area buckets (pixels^2) and side-relative-to-image buckets for the size histogram
_COCO_AREAS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, float("inf")))
_REL_EDGES = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, float("inf"))


@dataclass
class SplitReport:
    """What was found in one split."""

    split: str
    images: int = 0
    images_without_boxes: int = 0
    boxes_per_class: Counter[str] = field(default_factory=Counter)
    coco_sizes: Counter[str] = field(default_factory=Counter)
    relative_sizes: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    # every box as (cx, cy, w, h) normalized by its image's size, and its label: for the histograms of labels.png
    boxes_cxcywh: list[np.ndarray] = field(default_factory=list, repr=False)
    labels: list[np.ndarray] = field(default_factory=list, repr=False)

    def add_image(self, boxes: np.ndarray, labels: np.ndarray, classes: list[str], h: int, w: int) -> None:
        """Count one image: ``boxes`` float ``[N, 4]`` xyxy pixels of an ``h`` x ``w`` image, ``labels`` ``[N]``
        in 1..K (``classes[label - 1]``)."""
        self.images += 1
        self.images_without_boxes += int(len(labels) == 0)
        for lb in labels:
            self.boxes_per_class[classes[lb - 1]] += 1
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        area = bw * bh
        for name, lo, hi in _COCO_AREAS:
            self.coco_sizes[name] += int(((area >= lo) & (area < hi)).sum())
        rel_names = [lb for lb, _ in _rel_labels(Counter())]
        for k in np.digitize(np.sqrt(area / float(h * w)), _REL_EDGES[1:-1]):
            self.relative_sizes[rel_names[k]] += 1
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / (2 * w), (boxes[:, 1] + boxes[:, 3]) / (2 * h)
        self.boxes_cxcywh.append(np.stack([cx, cy, bw / w, bh / h], axis=1).astype(np.float32).reshape(-1, 4))
        self.labels.append(np.asarray(labels, dtype=np.int64).reshape(-1))

    def relative_size_counts(self) -> list[tuple[str, int]]:
        """(bucket, count) of box side / image side, the buckets ``data check`` prints."""
        return _rel_labels(self.relative_sizes)


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: per-split summaries and every problem found."""

    path: str
    format: str
    classes: list[str] = field(default_factory=list)
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when nothing is unusable (warnings, i.e. repaired boxes, are allowed)."""
        return not self.errors

    def text(self, max_problems: int | None = None) -> str:
        """The human-readable summary printed by ``singleshot data check``."""
        lines = [f"dataset {self.path} (format: {self.format}), {len(self.classes)} classes"]
        for s in self.splits:
            total = sum(s.boxes_per_class.values())
            lines.append(f"\n[{s.split}] {s.images} images ({s.images_without_boxes} without boxes), {total} boxes")
            width = max([len(c) for c in self.classes] + [5])
            for name in self.classes:
                lines.append(f"  {name:<{width}} {s.boxes_per_class.get(name, 0):8d}")
            lines.append("  box area (COCO): " + ", ".join(f"{k} {s.coco_sizes.get(k, 0)}" for k, _, _ in _COCO_AREAS))
            lines.append("  box side / image side: " + ", ".join(f"{k}: {v}" for k, v in _rel_labels(s.relative_sizes)))
            extras = {k: v for k, v in s.stats.items() if k not in ("images", "boxes") and v}
            if extras:
                lines.append("  repaired/excluded: " + ", ".join(f"{k}={v}" for k, v in sorted(extras.items())))
        n_err, n_warn = len(self.errors), len(self.problems) - len(self.errors)
        lines.append(f"\n{n_err} errors, {n_warn} warnings")
        shown = self.problems if max_problems is None else self.problems[:max_problems]
        lines.extend(f"  {p}" for p in shown)
        if len(shown) < len(self.problems):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)


def _rel_labels(counts: Counter[str]) -> list[tuple[str, int]]:
    labels = [f"{lo:g}-{hi:g}" if hi != float("inf") else f">{lo:g}" for lo, hi in itertools.pairwise(_REL_EDGES)]
    return [(lb, counts.get(lb, 0)) for lb in labels]


def _image_size(path: str, decode: bool) -> tuple[int, int]:
    """(H, W) of an image: decoded fully (catches truncation) or from the header only."""
    if decode:
        img = read_image(path)
        return int(img.shape[-2]), int(img.shape[-1])
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"cannot open image {path}: {e}") from None


def _exif_orientation(path: str) -> int:
    """The EXIF orientation tag (1 = upright, as stored; 2-8 = flipped/rotated views), 1 when absent/unreadable."""
    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is no reason to stop a check; the decode reports a broken file
        return 1
    return value if isinstance(value, int) else 1


def _check_split(ds: DetectionDataset, split: str, decode: bool, report: CheckReport) -> SplitReport:
    sr = SplitReport(split=split, stats=Counter(ds.stats))
    for i in range(len(ds)):
        path = ds.image_path(i)
        try:
            h, w = _image_size(path, decode)
        except BadImageError as e:
            report.problems.append(Problem("error", path, str(e).split(": ", 1)[-1], f"image_id={ds.image_id(i)}"))
            continue
        stated = ds.image_size(i)
        orientation = _exif_orientation(path)
        if orientation != 1:
            msg = (f"EXIF orientation {orientation}: singleshot uses the pixels as stored and ignores it; if the boxes "
                   "were drawn on the rotated view, save the image upright")
            report.problems.append(Problem("warning", path, msg, f"image_id={ds.image_id(i)}", "EXIF Orientation"))
        if stated[0] > 0 and stated != (h, w):
            msg = f"annotations state {stated[1]}x{stated[0]} but the image is {w}x{h}"
            report.problems.append(Problem("error", path, msg, f"image_id={ds.image_id(i)}", "width/height"))
        boxes, labels = ds.annotation(i)
        if ds.normalized_boxes:
            boxes = boxes * np.array([w, h, w, h], dtype=np.float32)
        sr.add_image(boxes, labels, ds.classes, h, w)
    return sr


def label_summary(ds: DetectionDataset, split: str = "train") -> SplitReport:
    """:func:`check_dataset`'s per-split summary from the annotations (sizes as stated, else read from the image
    file's header, as for YOLO labels; nothing decoded): what ``labels.png`` of a training run plots."""
    sr = SplitReport(split=split, stats=Counter(ds.stats))
    for i in range(len(ds)):
        h, w = ds.image_size(i)
        boxes, labels = ds.annotation(i)
        if h <= 0 or w <= 0:  # not stated (YOLO labels): the image file's header says it, nothing is decoded
            try:
                with Image.open(ds.image_path(i)) as im:
                    w, h = im.size
            except (OSError, ValueError):  # unreadable: data check names it; the statistics skip the image
                continue
        if ds.normalized_boxes:
            boxes = boxes * np.array([w, h, w, h], dtype=np.float32)
        sr.add_image(boxes, labels, ds.classes, h, w)
    return sr


def check_dataset(
    path: str | os.PathLike[str],
    *,
    splits: list[str] | None = None,
    decode: bool = True,
    format: str | None = None,
    image_dir: str | os.PathLike[str] | None = None,
) -> CheckReport:
    """Validate a dataset folder (COCO JSON file, Ultralytics data.yaml) and summarize it.

    Args:
        splits: splits to check; default every one of train/val/test that exists.
        decode: fully decode every image (default; finds truncated files) rather than reading headers only.
        image_dir: image folder of a COCO JSON whose images live elsewhere (``--images``).
    """
    fmt = format or detect_format(path)
    report = CheckReport(path=str(path), format=fmt)
    lone_json = Path(path).is_file() and Path(path).suffix.lower() == ".json"
    candidates = splits or (["train"] if lone_json else ["train", "val", "test"])
    for split in candidates:
        try:
            ds = load_dataset(path, split, format=fmt, keep_empty=True, strict=False, image_dir=image_dir,
                              image_dir_key="--images")
        except SplitNotFoundError as e:
            if splits is not None:
                report.problems.append(Problem("error", str(path), str(e).split(": ", 1)[-1], f"split {split}"))
            continue
        except DataError as e:  # unreadable annotation file: named in the message
            if split == "test" and splits is None:  # exports list a test: folder they may not ship; nothing uses it
                msg = f"{e}; the test split is left out (training and validation do not read it)"
                report.problems.append(Problem("warning", str(path), msg, "split test", "test"))
                continue
            report.problems.append(Problem("error", str(path), str(e), f"split {split}"))
            continue
        if not report.classes:
            report.classes = list(ds.classes)
        report.problems.extend(ds.problems)
        report.splits.append(_check_split(ds, split, decode, report))
    if not report.splits and not report.problems:
        report.problems.append(Problem("error", str(path), "no split found"))
    found = [s.split for s in report.splits]
    if splits is None and not lone_json and found and "train" not in found:
        msg = f"no 'train' split found (found {', '.join(found)}); to check those alone, name them with --split"
        report.problems.append(Problem("error", str(path), msg, "split train"))
    for s in report.splits:
        if s.images == 0:
            report.problems.append(Problem("error", str(path), "no usable images", f"split {s.split}"))
        elif not sum(s.boxes_per_class.values()) and (lone_json or s.split in ("train", "val")):
            msg = "no usable annotations (every image is without boxes): nothing to train or evaluate on"
            report.problems.append(Problem("error", str(path), msg, f"split {s.split}"))
    return report
