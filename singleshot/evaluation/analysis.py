"""Beyond the 12 numbers: per-class AP table, precision-recall curves and a confusion matrix of one evaluation.

All three take the COCO ground truth and the detections as :func:`singleshot.evaluation.evaluate` produces them
(``float64[N, 7]`` rows ``(image_id, x, y, w, h, score, category_id)``, xywh original-image pixels, or the COCO
results JSON written from them). Numbers are fractions in [0, 1] throughout (-1 where a class has no ground truth).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from torchvision.ops import box_iou

from singleshot.evaluation.metrics import as_coco, detections_to_annotations


def rows_from_results_json(path: str | os.PathLike[str]) -> np.ndarray:
    """A COCO results JSON (``[{"image_id", "category_id", "bbox", "score"}]``) -> ``float64[N, 7]`` rows."""
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if not results:
        return np.zeros((0, 7))
    return np.array([[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in results], dtype=np.float64)


@dataclass
class ClassAnalysis:
    """Per-class results of one evaluation, classes in the ground truth's category order.

    Attributes:
        names, category_ids: the K categories.
        num_gt: non-crowd ground-truth boxes per class.
        ap, ap50, ap75: AP@[.5:.95], AP@.5, AP@.75 per class (area all, 100 detections), -1 without ground truth.
        recall: ``float[R]`` the 101 recall points of the COCO precision curve.
        precision50: ``float[K, R]`` interpolated precision at IoU 0.5 per class (-1 where undefined).
    """

    names: list[str]
    category_ids: list[int]
    num_gt: list[int]
    ap: list[float]
    ap50: list[float]
    ap75: list[float]
    recall: np.ndarray
    precision50: np.ndarray

    def table_rows(self) -> list[dict[str, Any]]:
        return [
            {"class": n, "category_id": c, "num_gt": g, "AP": a, "AP50": a50, "AP75": a75}
            for n, c, g, a, a50, a75 in zip(self.names, self.category_ids, self.num_gt, self.ap, self.ap50, self.ap75)
        ]

    def text(self) -> str:
        """A named fixed-width table (fractions, 3 decimals; "n/a" without ground truth)."""
        width = max([5, *(len(n) for n in self.names)])
        lines = [f"{'class':<{width}}  {'gt':>6}  {'AP':>6}  {'AP50':>6}  {'AP75':>6}"]
        lines.append("-" * len(lines[0]))
        for r in self.table_rows():
            cells = ["   n/a" if v < 0 else f"{v:6.3f}" for v in (r["AP"], r["AP50"], r["AP75"])]
            lines.append(f"{r['class']:<{width}}  {r['num_gt']:>6}  " + "  ".join(cells))
        return "\n".join(lines)


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else -1.0


def analyze_classes(ground_truth: dict[str, Any] | str | COCO, rows: np.ndarray,
                    image_ids: list[int] | None = None) -> ClassAnalysis:
    """Per-class AP / AP50 / AP75 and the IoU-0.5 precision-recall curves (pycocotools' accumulation)."""
    gt = as_coco(ground_truth)
    dt = COCO()
    dt.dataset = {"images": gt.dataset.get("images", []), "categories": gt.dataset.get("categories", []),
                  "annotations": detections_to_annotations(np.asarray(rows, dtype=np.float64).reshape(-1, 7))}
    dt.createIndex()
    ev = COCOeval_faster(gt, dt, iouType="bbox", print_function=lambda *_: None)
    if image_ids is not None:
        ev.params.imgIds = sorted({int(i) for i in image_ids})
    ev.evaluate()
    ev.accumulate()
    precision = np.asarray(ev.eval["precision"])  # (T IoUs, R recalls, K categories, A areas, M maxDets)
    area, max_det = list(ev.params.areaRngLbl).index("all"), len(ev.params.maxDets) - 1
    ious = np.asarray(ev.params.iouThrs)
    t50, t75 = int(np.argmin(np.abs(ious - 0.5))), int(np.argmin(np.abs(ious - 0.75)))
    cats = {c["id"]: c.get("name", str(c["id"])) for c in gt.dataset.get("categories", [])}
    counts: dict[int, int] = {}
    wanted = set(ev.params.imgIds)
    for a in gt.dataset.get("annotations", []):
        if not a.get("iscrowd", 0) and a["image_id"] in wanted:
            counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    cat_ids = [int(c) for c in ev.params.catIds]
    return ClassAnalysis(
        names=[cats.get(c, str(c)) for c in cat_ids],
        category_ids=cat_ids,
        num_gt=[counts.get(c, 0) for c in cat_ids],
        ap=[_mean_valid(precision[:, :, k, area, max_det]) for k in range(len(cat_ids))],
        ap50=[_mean_valid(precision[t50, :, k, area, max_det]) for k in range(len(cat_ids))],
        ap75=[_mean_valid(precision[t75, :, k, area, max_det]) for k in range(len(cat_ids))],
        recall=np.asarray(ev.params.recThrs, dtype=np.float64),
        precision50=precision[t50, :, :, area, max_det].T.copy(),  # (R, K) -> (K, R)
    )


@dataclass
class ConfusionMatrix:
    """Detections vs ground truth at one IoU and score threshold.

    ``counts[p, t]``: int64 ``[K + 1, K + 1]``, predicted class ``p`` against true class ``t`` (index K =
    background). Row K holds missed ground truth, column K detections that matched nothing, so
    ``counts.sum() == num_gt + false_positives``.
    """

    names: list[str]
    counts: np.ndarray
    iou_threshold: float
    score_threshold: float

    @property
    def num_gt(self) -> int:
        return int(self.counts[:, :-1].sum())

    @property
    def false_positives(self) -> int:
        """Detections (score >= threshold) that match no ground-truth box of any class."""
        return int(self.counts[:-1, -1].sum())


def confusion_matrix(ground_truth: dict[str, Any] | str | COCO, rows: np.ndarray, *, iou_threshold: float = 0.5,
                     score_threshold: float = 0.3, image_ids: list[int] | None = None) -> ConfusionMatrix:
    """Match each image's detections (score >= ``score_threshold``, best score first) to the unmatched non-crowd
    ground-truth box of highest IoU >= ``iou_threshold`` regardless of class, then count (predicted, true) pairs.

    Greedy by score like COCO's matching, but class-agnostic, which is what makes confusions between classes
    visible. Crowd boxes are left out of both sides' counting (COCO ignores detections on them).
    """
    gt = as_coco(ground_truth)
    cats = [c for c in gt.dataset.get("categories", [])]
    index = {int(c["id"]): i for i, c in enumerate(cats)}
    k = len(cats)
    counts = np.zeros((k + 1, k + 1), dtype=np.int64)
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    rows = rows[rows[:, 5] >= score_threshold]
    ids = sorted({int(i["id"]) for i in gt.dataset.get("images", [])}) if image_ids is None else sorted(set(image_ids))
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in gt.dataset.get("annotations", []):
        by_image.setdefault(int(a["image_id"]), []).append(a)
    det_image = rows[:, 0].astype(np.int64)
    for image_id in ids:
        anns = by_image.get(image_id, [])
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        anns = [a for a in anns if not a.get("iscrowd", 0)]
        dets = rows[det_image == image_id]
        dets = dets[np.argsort(-dets[:, 5], kind="stable")]
        t_cls = [index[int(a["category_id"])] for a in anns]
        p_cls = [index.get(int(c), -1) for c in dets[:, 6]]
        matched = np.zeros(len(anns), dtype=bool)
        if len(anns) and len(dets):
            iou = box_iou(_xyxy(dets[:, 1:5]), _xyxy(np.array([a["bbox"] for a in anns]))).numpy()  # (D, G)
        for d in range(len(dets)):
            if p_cls[d] < 0:
                continue
            best = -1
            if len(anns):
                cand = np.where(~matched & (iou[d] >= iou_threshold))[0]
                if cand.size:
                    best = int(cand[np.argmax(iou[d, cand])])
            if best >= 0:
                matched[best] = True
                counts[p_cls[d], t_cls[best]] += 1
            elif not (crowd and _on_crowd(dets[d, 1:5], crowd, iou_threshold)):
                counts[p_cls[d], k] += 1
        for g in np.where(~matched)[0]:
            counts[k, t_cls[g]] += 1
    return ConfusionMatrix([c.get("name", str(c["id"])) for c in cats], counts, iou_threshold, score_threshold)


def _xyxy(xywh: np.ndarray) -> torch.Tensor:
    """``[N, 4]`` xywh pixels -> ``Tensor[N, 4]`` xyxy pixels (float64)."""
    b = torch.as_tensor(np.asarray(xywh, dtype=np.float64).reshape(-1, 4))
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)


def _on_crowd(box_xywh: np.ndarray, crowd: list[dict[str, Any]], iou_threshold: float) -> bool:
    """Whether a detection lies on a crowd region (COCO's crowd IoU: intersection over the detection's area)."""
    d = _xyxy(box_xywh[None])[0]
    area = float((d[2] - d[0]) * (d[3] - d[1]))
    for a in crowd:
        c = _xyxy(np.array(a["bbox"])[None])[0]
        w = float((torch.minimum(d[2], c[2]) - torch.maximum(d[0], c[0])).clamp(min=0))
        h = float((torch.minimum(d[3], c[3]) - torch.maximum(d[1], c[1])).clamp(min=0))
        if area > 0 and w * h / area >= iou_threshold:
            return True
    return False
