"""COCO metrics: faster-coco-eval against pycocotools on the same detections, per-class AP, results JSON,
ground truth built from a dataset."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from singleshot.data.base import DetectionDataset
from singleshot.evaluation import (
    STAT_NAMES,
    build_ground_truth,
    coco_bbox_metrics,
    detections_to_rows,
    format_per_class,
    write_results_json,
)
from singleshot.evaluation.loop import label_lookup

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}]


def make_case(seed: int = 0, num_images: int = 40) -> tuple[dict, np.ndarray]:
    """GT with small/medium/large and crowd boxes; detections = jittered GT + false positives + misses."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, num_images + 1):
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 480))
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id}.jpg"})
        for _ in range(int(rng.integers(0, 6))):
            side = float(rng.choice([12.0, 50.0, 150.0])) * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, w - side), rng.uniform(0, h - side * 0.8)
            box = [x, y, side, side * 0.8]
            cat = int(rng.choice([3, 7, 12]))
            crowd = int(rng.random() < 0.08)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3] * 0.9, "iscrowd": crowd})
            if rng.random() < 0.85:  # detected, with some localisation noise
                jitter = rng.normal(0, side * 0.08, 4)
                dets.append([img_id, x + jitter[0], y + jitter[1], box[2] + jitter[2], box[3] + jitter[3],
                             rng.uniform(0.3, 1.0), cat])
        for _ in range(int(rng.integers(0, 4))):  # false positives
            dets.append([img_id, rng.uniform(0, w - 40), rng.uniform(0, h - 40), rng.uniform(5, 40),
                         rng.uniform(5, 40), rng.uniform(0.05, 0.7), int(rng.choice([3, 7, 12]))])
    gt = {"images": images, "annotations": anns, "categories": CATEGORIES}
    return gt, np.asarray(dets, dtype=np.float64)


def pycocotools_stats(gt: dict, dets: np.ndarray, img_ids: list[int] | None = None) -> tuple[np.ndarray, str]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets.copy())
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
    with contextlib.redirect_stdout(out := io.StringIO()):
        ev.summarize()
    return np.asarray(ev.stats), out.getvalue().rstrip("\n")


@pytest.mark.parametrize("seed", [0, 1])
def test_all_twelve_numbers_match_pycocotools(seed: int) -> None:
    gt, dets = make_case(seed)
    ref, ref_text = pycocotools_stats(gt, dets)
    ours = coco_bbox_metrics(json.loads(json.dumps(gt)), dets)
    got = np.array([ours.stats[n] for n in STAT_NAMES])
    assert 0.2 < got[0] < 0.95  # a meaningful, non-degenerate case
    np.testing.assert_allclose(got, ref, atol=1e-9)
    assert ours.summary == ref_text  # printed exactly as pycocotools prints them


def test_image_subset_matches_pycocotools() -> None:
    gt, dets = make_case(2)
    subset = list(range(1, 21))
    ref, _ = pycocotools_stats(gt, dets[dets[:, 0] <= 20], subset)
    ours = coco_bbox_metrics(gt, dets[dets[:, 0] <= 20], image_ids=subset)
    np.testing.assert_allclose([ours.stats[n] for n in STAT_NAMES], ref, atol=1e-9)
    assert ours.num_images == 20


def test_per_class_ap() -> None:
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [20, 20, 50, 30], "area": 1500, "iscrowd": 0},
        ],
        "categories": CATEGORIES,
    }
    dets = np.array([[1, 10, 10, 40, 40, 0.9, 3]], dtype=np.float64)  # cat perfect, dog missed, bird has no GT
    m = coco_bbox_metrics(gt, dets)
    assert m.per_class == {"cat": pytest.approx(1.0), "dog": 0.0, "bird": -1.0}
    assert m.stats["AP"] == pytest.approx(0.5)
    table = format_per_class(m.per_class)
    assert "cat" in table and "100.0" in table and "n/a" in table


def test_no_detections_gives_zero_not_error() -> None:
    gt, _ = make_case(3, num_images=5)
    m = coco_bbox_metrics(gt, np.zeros((0, 7)))
    assert m.stats["AP"] == 0.0 and m.num_detections == 0


def test_rows_and_results_json(tmp_path) -> None:
    dets = [
        {"boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0]]), "scores": torch.tensor([0.9]),
         "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
        {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0], [1, 1, 2, 3]]), "scores": torch.tensor([0.8, 0.1]),
         "labels": torch.tensor([1, 3])},
    ]
    rows = detections_to_rows(dets, torch.tensor([101, 102, 103]), label_lookup({1: 3, 2: 7, 3: 12}, "cpu"))
    expected = [[101, 10, 20, 40, 60, 0.9, 7], [103, 0, 0, 5, 5, 0.8, 3], [103, 1, 1, 1, 2, 0.1, 12]]
    np.testing.assert_allclose(rows.numpy(), expected, rtol=1e-6)
    write_results_json(rows.numpy(), tmp_path / "r" / "results.json")
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert data[0] == {"image_id": 101, "category_id": 7, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.9}
    assert [d["category_id"] for d in data] == [7, 3, 12]


def test_ground_truth_from_a_dataset_with_normalized_boxes_and_unknown_sizes(tmp_path) -> None:
    from PIL import Image

    Image.new("RGB", (80, 40)).save(tmp_path / "a.png")
    ds = DetectionDataset(
        root=str(tmp_path), paths=[str(tmp_path / "a.png")], image_ids=[5], sizes=np.array([[-1, -1]]),
        boxes=[np.array([[0.25, 0.5, 0.75, 1.0]], np.float32)], labels=[np.array([2])],
        classes=["x", "y"], label_to_category_id={1: 10, 2: 20}, normalized_boxes=True,
    )
    gt = build_ground_truth(ds)
    assert gt["images"] == [{"id": 5, "width": 80, "height": 40, "file_name": "a.png"}]
    assert gt["annotations"][0]["bbox"] == pytest.approx([20, 20, 40, 20])
    assert gt["annotations"][0]["category_id"] == 20
    assert gt["categories"] == [{"id": 10, "name": "x"}, {"id": 20, "name": "y"}]
    # and it evaluates: the exact box scores AP 1
    m = coco_bbox_metrics(gt, np.array([[5, 20, 20, 40, 20, 0.7, 20]], np.float64))
    assert m.stats["AP"] == pytest.approx(1.0)
