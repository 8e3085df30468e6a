"""Run reports: after a short training run with two evaluations every report file exists and holds what it says;
the confusion matrix counts what it claims (hand-built cases); labels.png comes from data check's counting."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from train_helpers import tiny_config, tiny_dataset

from singleshot.data.check import check_dataset, label_summary
from singleshot.data.formats import load_dataset
from singleshot.engine.trainer import Trainer
from singleshot.evaluation import STAT_NAMES
from singleshot.evaluation.analysis import analyze_classes, confusion_matrix, rows_from_results_json
from singleshot.evaluation.groundtruth import coco_ground_truth


def _gt() -> dict:
    """Two images, classes a (1) and b (2); image 2 also has a crowd box."""
    boxes = [(1, 1, [0, 0, 10, 10]), (1, 2, [20, 20, 10, 10]), (1, 1, [40, 0, 10, 10]), (2, 2, [0, 0, 10, 10])]
    anns = [{"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": 100.0, "iscrowd": 0}
            for i, (im, c, b) in enumerate(boxes)]
    anns.append({"id": 9, "image_id": 2, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600.0, "iscrowd": 1})
    return {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": anns}


def test_confusion_matrix_counts_by_hand() -> None:
    rows = np.array([
        [1, 0, 0, 10, 10, 0.9, 1],    # a on a: correct
        [1, 20, 20, 10, 10, 0.8, 1],  # a on b: confusion
        [1, 0.5, 0, 10, 10, 0.7, 1],  # a on the first box again (already matched): false positive
        [1, 70, 70, 10, 10, 0.6, 2],  # b on nothing: false positive
        [1, 40, 0, 10, 10, 0.2, 1],   # below the score threshold: not counted -> image 1's third box is missed
        [2, 55, 55, 20, 20, 0.9, 2],  # on the crowd region: ignored, as COCO does
    ])  # fmt: skip
    cm = confusion_matrix(_gt(), rows, iou_threshold=0.5, score_threshold=0.3)
    a, b, bg = 0, 1, 2
    assert cm.names == ["a", "b"]
    assert cm.counts[a, a] == 1 and cm.counts[a, b] == 1
    assert cm.counts[a, bg] == 1 and cm.counts[b, bg] == 1  # false positives: background column
    assert cm.counts[bg, a] == 1 and cm.counts[bg, b] == 1  # missed: image 1's third box, image 2's b
    assert cm.num_gt == 4 and cm.false_positives == 2
    assert cm.counts.sum() == cm.num_gt + cm.false_positives


def test_per_class_analysis_matches_hand_counts() -> None:
    rows = np.array([[1, 0, 0, 10, 10, 0.9, 1], [1, 40, 0, 10, 10, 0.8, 1], [2, 0, 0, 10, 10, 0.9, 2]])
    an = analyze_classes(_gt(), rows)
    assert an.names == ["a", "b"] and an.num_gt == [2, 2]
    assert an.ap50[0] == pytest.approx(1.0)  # both a boxes found, nothing wrong ranked above them
    assert an.ap50[1] == pytest.approx(0.5, abs=0.01)  # one of two b boxes: precision 1 up to recall 0.5
    assert an.precision50.shape == (2, 101)
    assert "class" in an.text() and "1.000" in an.text()


def test_labels_summary_is_data_checks_counting() -> None:
    root = tiny_dataset()
    ds = load_dataset(str(root), split="train")
    summary = label_summary(ds)
    checked = next(s for s in check_dataset(root).splits if s.split == "train")
    assert summary.boxes_per_class == checked.boxes_per_class
    assert summary.relative_sizes == checked.relative_sizes and summary.coco_sizes == checked.coco_sizes
    boxes = np.concatenate(summary.boxes_cxcywh)
    assert len(boxes) == sum(checked.boxes_per_class.values()) and (boxes >= 0).all() and (boxes <= 1).all()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """16 train images, batch 4: 4 steps per epoch, 8 steps, an evaluation after each of the 2 epochs."""
    run = tmp_path_factory.mktemp("report") / "run"
    data = str(tiny_dataset())
    cfg = tiny_config(run, **{"data.val": data, "train.max_steps": 8, "eval.every": 1, "run.report": "true",
                              "run.tensorboard": "true", "eval.num_pictures": 2, "train.log_every": 2})
    result = Trainer(cfg).run()
    assert result.status == "finished"
    return run


def test_results_csv_has_one_row_per_evaluation_with_the_12_numbers(run_dir) -> None:
    with open(run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    evals = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln]
    assert len(rows) == len(evals) == 2
    assert [int(r["step"]) for r in rows] == [4, 8] and [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[0]["lr"]) > 0  # the cosine schedule ends at 0 on the last step
    for row, ev in zip(rows, evals):
        assert float(row["lr"]) >= 0 and float(row["loss"]) > 0
        for name in STAT_NAMES:
            assert float(row[name]) == pytest.approx(ev[name], abs=1e-4)


def test_report_pictures_exist_and_are_not_blank(run_dir) -> None:
    for name in ("pr_curves.png", "confusion_matrix.png", "labels.png", "train_batch.jpg", "curves.png"):
        with Image.open(run_dir / name) as im:
            pixels = np.asarray(im.convert("L"))
        assert pixels.shape[0] > 150 and pixels.std() > 5, name  # drawn on, not a uniform canvas
    with Image.open(run_dir / "train_batch.jpg") as im:
        assert im.size == (4 * 160 + 5 * 4, 160 + 2 * 4)  # 4 images of the first batch in one row, padded
    pictures = sorted((run_dir / "predictions").glob("*.jpg"))
    assert len(pictures) == 2
    with Image.open(pictures[0]) as im:
        assert im.size[0] > 2 * 96 and im.size[1] == 72  # ground truth | predictions side by side


def test_per_class_csv_and_confusion_matrix_agree_with_the_results_json(run_dir) -> None:
    ds = load_dataset(str(tiny_dataset()), split="val")
    with open(run_dir / "per_class_ap.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["class"] for r in table] == list(ds.classes)
    assert sum(int(r["num_gt"]) for r in table) == sum(len(ds.annotation(i)[1]) for i in range(len(ds)))
    rows = rows_from_results_json(run_dir / "coco_results.json")
    assert len(rows) > 0 and set(rows[:, 0].astype(int)) <= {ds.image_id(i) for i in range(len(ds))}
    cm = confusion_matrix(coco_ground_truth(ds), rows, score_threshold=0.3)
    num_gt = sum(len(ds.annotation(i)[1]) for i in range(len(ds)))
    fp = int(cm.counts[:-1, -1].sum())
    assert cm.counts.sum() == num_gt + fp


def test_pictures_reach_tensorboard(run_dir) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    tags = set(acc.Tags()["images"])
    assert {"eval/pr_curves", "eval/confusion_matrix", "data/labels", "data/train_batch"} <= tags
    assert len(acc.Images("eval/pr_curves")) == 2  # one per evaluation
