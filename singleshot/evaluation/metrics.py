"""COCO bbox metrics with faster-coco-eval (pycocotools' algorithm in C++, the same 12 numbers ~10x faster).

Detections travel as a NumPy ``float64[N, 7]`` array, one row per box: ``(image_id, x, y, w, h, score,
category_id)`` with the box in **COCO xywh, original-image pixels**: the row format of pycocotools'
``loadNumpyAnnotations``, cheap to gather across ranks and to turn into the results JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

# The 12 numbers in pycocotools' order (``COCOeval.stats``).
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class CocoMetrics:
    """Result of one COCO bbox evaluation.

    Attributes:
        stats: the 12 numbers under :data:`STAT_NAMES` (pycocotools' -1.0 where a range has no ground truth).
        per_class: ``{category name: AP@[.5:.95]}``, -1.0 for a category with no ground truth.
        summary: the 12 lines exactly as pycocotools prints them.
        num_images, num_detections: what was evaluated.
        precision50, recall50, confidence50: precision and recall at IoU 0.5 at the score threshold that maximizes
            their F1 (:func:`precision_recall_at_best_f1`), and that threshold.
    """

    stats: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    num_images: int = 0
    num_detections: int = 0
    precision50: float = -1.0  # at IoU 0.5 and the best-F1 confidence (precision_recall_at_best_f1); -1: no GT
    recall50: float = -1.0
    confidence50: float = -1.0


def as_coco(ground_truth: dict[str, Any] | str | os.PathLike[str] | COCO) -> COCO:
    """A faster-coco-eval ``COCO`` from a GT dict, a JSON file or an existing object (returned as is)."""
    if isinstance(ground_truth, COCO):
        return ground_truth
    if isinstance(ground_truth, (str, os.PathLike)):
        with open(ground_truth, encoding="utf-8") as f:
            ground_truth = json.load(f)
    return COCO(ground_truth)


def detections_to_annotations(detections: np.ndarray) -> list[dict[str, Any]]:
    """``float64[N, 7]`` rows -> COCO result annotations (ids from 1, ``area`` = box area, ``iscrowd`` 0).

    Hand-built rather than ``COCO.loadRes``: loadRes also makes a polygon per box, which bbox evaluation never uses
    and which doubles the conversion time for 500k detections.
    """
    rows = np.asarray(detections, dtype=np.float64).reshape(-1, 7)
    image_ids = rows[:, 0].astype(np.int64).tolist()
    boxes = rows[:, 1:5].tolist()
    scores = rows[:, 5].tolist()
    categories = rows[:, 6].astype(np.int64).tolist()
    areas = (rows[:, 3] * rows[:, 4]).tolist()
    return [
        {"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "score": s, "area": a, "iscrowd": 0}
        for i, (im, c, b, s, a) in enumerate(zip(image_ids, categories, boxes, scores, areas))
    ]


def results_json(detections: np.ndarray) -> list[dict[str, Any]]:
    """The COCO results file content: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.

    Coordinates are rounded to 0.01 px and scores to 1e-5, as published result files are, to keep the file small.
    """
    rows = np.asarray(detections, dtype=np.float64).reshape(-1, 7)
    image_ids = rows[:, 0].astype(np.int64).tolist()
    boxes = np.round(rows[:, 1:5], 2).tolist()
    scores = np.round(rows[:, 5], 5).tolist()
    categories = rows[:, 6].astype(np.int64).tolist()
    return [
        {"image_id": im, "category_id": c, "bbox": b, "score": s}
        for im, c, b, s in zip(image_ids, categories, boxes, scores)
    ]


def write_results_json(detections: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write :func:`results_json` to ``path`` (parent folders are created)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results_json(detections), f, separators=(",", ":"))


def coco_bbox_metrics(
    ground_truth: dict[str, Any] | str | os.PathLike[str] | COCO,
    detections: np.ndarray,
    image_ids: Sequence[int] | None = None,
) -> CocoMetrics:
    """Evaluate detections against COCO ground truth (bbox, IoU .50:.05:.95, 100 detections per image).

    Args:
        ground_truth: COCO instances dict/JSON file/``COCO``; crowd annotations are honoured as pycocotools does.
        detections: ``float64[N, 7]`` rows ``(image_id, x, y, w, h, score, category_id)``, xywh original pixels.
        image_ids: the images that were evaluated (default: every image of the ground truth). Restricting it
            matters when only part of the dataset was run: unseen images would otherwise count as misses.
    Returns:
        :class:`CocoMetrics`.
    """
    gt = as_coco(ground_truth)
    rows = np.asarray(detections, dtype=np.float64).reshape(-1, 7)
    dt = COCO()
    dt.dataset = {
        "images": gt.dataset.get("images", []),
        "categories": gt.dataset.get("categories", []),
        "annotations": detections_to_annotations(rows),
    }
    dt.createIndex()
    lines: list[str] = []
    coco_eval = COCOeval_faster(gt, dt, iouType="bbox", print_function=lambda *_: None)
    if image_ids is not None:
        coco_eval.params.imgIds = sorted({int(i) for i in image_ids})
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.print_function = lines.append
    coco_eval.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats[: len(STAT_NAMES)])}
    t50 = int(np.argmin(np.abs(np.asarray(coco_eval.params.iouThrs) - 0.5)))
    at50 = (t50, slice(None), slice(None), 0, -1)  # IoU 0.5, every recall point and class, area all, 100 dets
    p50, r50, c50 = precision_recall_at_best_f1(
        np.asarray(coco_eval.eval["precision"])[at50], np.asarray(coco_eval.eval["scores"])[at50],
        np.asarray(coco_eval.params.recThrs, dtype=np.float64),
    )
    return CocoMetrics(
        stats=stats,
        per_class=per_class_ap(coco_eval, gt),
        summary="\n".join(lines[: len(STAT_NAMES)]),
        num_images=len(coco_eval.params.imgIds),
        num_detections=len(rows),
        precision50=p50,
        recall50=r50,
        confidence50=c50,
    )


def precision_recall_at_best_f1(
    precision: np.ndarray, scores: np.ndarray, recall_points: np.ndarray, steps: int = 1001
) -> tuple[float, float, float]:
    """``(precision, recall, confidence)`` of a detector at one IoU threshold, the way Ultralytics reports P and R.

    For each score threshold ``c`` in ``steps`` points over [0, 1] and each class with ground truth: its recall is
    the highest COCO recall point reached by detections scoring >= ``c``, its precision the (interpolated) precision
    there; a class with no detection at >= ``c`` has recall 0 and precision 1 (nothing kept, nothing wrong). P(c) and
    R(c) are the means over those classes; the threshold that maximizes 2PR / (P + R) (the lowest on ties) is chosen.

    Args:
        precision: ``float[R, K]`` COCO's accumulated precision at one IoU, area "all", 100 detections (-1 for a
            class without ground truth; 0 past the recall a class reaches).
        scores: ``float[R, K]`` the detection score at which each recall point is reached (same layout).
        recall_points: ``float[R]`` the recall thresholds (COCO: 0, 0.01, ..., 1).
    Returns:
        Fractions in [0, 1]; ``(-1, -1, -1)`` when no class has ground truth.
    """
    thresholds = np.linspace(0.0, 1.0, steps)
    per_class_p, per_class_r = [], []
    for k in range(precision.shape[1]):
        p_k, s_k = precision[:, k], scores[:, k]
        if not (p_k > -1).any():  # no ground truth
            continue
        reached = (p_k > 0) & (s_k > 0)
        # recall points are reached in order of falling score: the points at >= c form a prefix of `reached`
        s_reached = np.where(reached, s_k, -np.inf)
        count = (s_reached[None, :] >= thresholds[:, None]).sum(axis=1)  # (steps,) points reached at >= c
        last = np.maximum(count - 1, 0)
        per_class_r.append(np.where(count > 0, recall_points[np.flatnonzero(reached)[last]]
                                    if reached.any() else 0.0, 0.0))
        per_class_p.append(np.where(count > 0, p_k[np.flatnonzero(reached)[last]] if reached.any() else 1.0, 1.0))
    if not per_class_p:
        return -1.0, -1.0, -1.0
    p, r = np.mean(per_class_p, axis=0), np.mean(per_class_r, axis=0)
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)
    best = int(np.argmax(f1))
    return float(p[best]), float(r[best]), float(thresholds[best])


def per_class_ap(coco_eval: COCOeval_faster, gt: COCO) -> dict[str, float]:
    """AP@[.5:.95] per category (area "all", 100 detections) from an accumulated evaluation."""
    precision = np.asarray(coco_eval.eval["precision"])  # (T IoUs, R recalls, K categories, A areas, M maxDets)
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt.dataset.get("categories", [])}
    area = list(coco_eval.params.areaRngLbl).index("all")
    max_det = len(coco_eval.params.maxDets) - 1
    out: dict[str, float] = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, area, max_det]
        valid = p[p > -1]
        out[names.get(cat_id, str(cat_id))] = float(valid.mean()) if valid.size else -1.0
    return out


def format_per_class(per_class: dict[str, float], columns: int = 3) -> str:
    """A fixed-width ``category | AP`` table, ``columns`` pairs per row, as detectron2 prints it."""
    if not per_class:
        return ""
    width = max(8, *(len(n) for n in per_class))
    cells = [f"{name:<{width}} | {'  n/a' if ap < 0 else f'{100 * ap:5.1f}'}" for name, ap in per_class.items()]
    header = " || ".join([f"{'category':<{width}} |    AP"] * min(columns, len(cells)))
    rows = [" || ".join(cells[i : i + columns]) for i in range(0, len(cells), columns)]
    return "\n".join([header, "-" * len(header), *rows])
