"""COCO bbox evaluation: the 12 pycocotools numbers (computed by faster-coco-eval), per-class AP, results JSON,
and the evaluation loop used by training and ``singleshot eval``."""

from singleshot.evaluation.groundtruth import build_ground_truth, category_ids_by_name, coco_ground_truth, find_dataset
from singleshot.evaluation.loop import detections_to_rows, evaluate
from singleshot.evaluation.metrics import (
    STAT_NAMES,
    CocoMetrics,
    coco_bbox_metrics,
    format_per_class,
    results_json,
    write_results_json,
)

__all__ = [
    "STAT_NAMES",
    "CocoMetrics",
    "build_ground_truth",
    "category_ids_by_name",
    "coco_bbox_metrics",
    "coco_ground_truth",
    "detections_to_rows",
    "evaluate",
    "find_dataset",
    "format_per_class",
    "results_json",
    "write_results_json",
]
