"""Reports as a user coming from Ultralytics reads them: results.csv with precision, recall and the losses of the
epochs evaluated; ``singleshot eval`` writes the report pictures; no table row for a category the reader dropped."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from train_helpers import tiny_dataset, tiny_overrides
from trained_model import trained_checkpoint

from singleshot.cli import main
from singleshot.evaluation.metrics import coco_bbox_metrics


def test_results_csv_has_precision_recall_and_the_losses_of_each_stretch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # singleshot train ... eval.every=1 train.epochs=3 (4 steps per epoch, a loss logged every step)
    run = tmp_path / "run"
    args = tiny_overrides(run, **{"train.max_steps": "null", "train.epochs": 3, "eval.every": 1,
                                  "data.val": str(tiny_dataset()), "run.report": "true", "eval.num_pictures": 0})
    assert main(["train", *args]) == 0
    assert "precision" in capsys.readouterr().out
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    previous = -1
    for row in rows:
        assert 0.0 <= float(row["precision"]) <= 1.0 and 0.0 <= float(row["recall"]) <= 1.0
        stretch = [r for r in train if previous < r["step"] <= int(row["step"])]
        assert len(stretch) == 4  # the epoch's own steps, not the last one before it
        for key in ("loss", "box", "cls"):
            assert row[key] != "" and float(row[key]) == pytest.approx(np.mean([r[key] for r in stretch]), abs=1e-4)
        previous = int(row["step"])
    assert rows[0]["loss"] != rows[1]["loss"]  # each row its own epoch's, not a stale value


def test_eval_writes_the_report_pictures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # singleshot eval --checkpoint CK --data TINY --out OUT
    assert main(["eval", "--checkpoint", str(trained_checkpoint()), "--data", str(tiny_dataset()),
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "recall" in out and "at IoU 0.5" in out
    folder = tmp_path / "eval_val"
    for name in ("per_class_ap.csv", "pr_curves.png", "confusion_matrix.png"):
        assert (folder / name).is_file() and f"wrote {folder / name}" in out
        assert (folder / name).stat().st_size > 0
    assert len(list((folder / "predictions").glob("*.jpg"))) == 8
    # --no-report: the JSON only
    assert main(["eval", "--checkpoint", str(trained_checkpoint()), "--data", str(tiny_dataset()),
                 "--out", str(tmp_path / "bare"), "--no-report"]) == 0
    assert not (tmp_path / "bare" / "eval_val").exists() and (tmp_path / "bare" / "eval_val_results.json").is_file()


def test_a_dropped_roboflow_category_gets_no_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a Roboflow COCO export: category 0 is the project ("shapes"), the supercategory of every class, with no boxes
    src = tiny_dataset()
    root = tmp_path / "roboflow"
    shutil.copytree(src / "val", root / "val")
    data = json.loads((src / "annotations" / "instances_val.json").read_text())
    data["categories"] = [{"id": 0, "name": "shapes", "supercategory": "none"},
                          *({**c, "supercategory": "shapes"} for c in data["categories"])]
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    assert main(["eval", "--checkpoint", str(trained_checkpoint()), "--data", str(root), "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "shapes" not in captured.out  # neither the printed table nor a row of n/a for it
    table = (tmp_path / "eval_val" / "per_class_ap.csv").read_text()
    assert "shapes" not in table and len(table.splitlines()) == 1 + len(data["categories"]) - 1


def test_precision_and_recall_on_a_hand_counted_case() -> None:
    # class a: 2 boxes; detections 0.9 (hit), 0.8 (miss), 0.6 (hit). class b: 1 box; detection 0.7 (hit).
    gt = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
                          {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400,
                           "iscrowd": 0},
                          {"id": 3, "image_id": 2, "category_id": 2, "bbox": [10, 60, 30, 30], "area": 900,
                           "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dets = np.array([[1, 0, 0, 20, 20, 0.9, 1], [1, 60, 0, 20, 20, 0.8, 1], [2, 50, 50, 20, 20, 0.6, 1],
                     [2, 10, 60, 30, 30, 0.7, 2]])
    m = coco_bbox_metrics(gt, dets)
    # everything kept (score >= 0.6): a has precision 2/3, recall 1; b 1 and 1 -> P 0.8333, R 1, the best F1
    assert (m.precision50, m.recall50) == (pytest.approx(5 / 6), pytest.approx(1.0))
    assert m.confidence50 <= 0.6
    # no detections: recall 0
    empty = coco_bbox_metrics(gt, np.zeros((0, 7)))
    assert empty.recall50 == 0.0
