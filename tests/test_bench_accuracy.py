"""The accuracy benchmark's plumbing (no training): the COCO -> YOLO layout, mapping Ultralytics' predictions back
to the set's image and category ids, the shared scoring path, the budget and the table."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from singleshot.data import synth
from singleshot.engine.config import load_config

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("bench_accuracy")
peer = _load("yolo_peer")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("set"), num_train=3, num_val=5, seed=4, image_size=(120, 80))


def _fake_ultralytics_predictions(yolo_dir: Path, val_coco: dict) -> list[dict]:
    """What Ultralytics' save_json would write for perfect boxes: image_id from the stem, classes 1..K."""
    sizes = {Path(im["file_name"]).name: (im["width"], im["height"]) for im in val_coco["images"]}
    out = []
    for label_file in sorted((yolo_dir / "labels" / "val").glob("*.txt")):
        name = label_file.stem + ".jpg"
        w_img, h_img = sizes[name]
        for line in label_file.read_text().splitlines():
            k, cx, cy, w, h = line.split()
            w, h = float(w) * w_img, float(h) * h_img
            box = [float(cx) * w_img - w / 2, float(cy) * h_img - h / 2, w, h]
            out.append({"image_id": int(label_file.stem), "file_name": name, "category_id": int(k) + 1,
                        "bbox": box, "score": 0.9})
    return out


def test_yolo_layout_and_mapping_score_perfect_boxes_as_perfect(small_set: Path, tmp_path: Path) -> None:
    data_yaml, categories = peer.coco_to_yolo(small_set, tmp_path / "yolo")
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == dict(enumerate(synth.CLASSES))
    images = sorted((tmp_path / "yolo" / "images" / "val").iterdir())
    assert len(images) == 5 and all(p.is_symlink() and p.resolve().is_file() for p in images)
    assert len(list((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))) == 3

    val_coco = json.loads((small_set / "annotations" / "instances_val.json").read_text())
    results = peer.predictions_to_results(_fake_ultralytics_predictions(tmp_path / "yolo", val_coco), val_coco,
                                          categories)
    assert {r["image_id"] for r in results} == {im["id"] for im in val_coco["images"]}  # ids 1..5, not stems 0..4
    assert len(results) == len(val_coco["annotations"])
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    metrics = bench.score_results(small_set / "annotations" / "instances_val.json", results_file)
    assert metrics["AP"] > 0.99 and metrics["num_images"] == 5

    # a wrong class map must show: shift every category by one
    shifted = [{**r, "category_id": r["category_id"] % len(categories) + 1} for r in results]
    results_file.write_text(json.dumps(shifted))
    assert bench.score_results(small_set / "annotations" / "instances_val.json", results_file)["AP"] < 0.5


def test_scoring_counts_every_val_image(small_set: Path, tmp_path: Path) -> None:
    results_file = tmp_path / "empty.json"
    results_file.write_text("[]")
    metrics = bench.score_results(small_set / "annotations" / "instances_val.json", results_file)
    assert metrics["num_images"] == 5 and metrics["AP"] == 0.0


def test_bad_annotation_names_file_and_record(small_set: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (broken / split).symlink_to(small_set / split)
        coco = json.loads((small_set / "annotations" / f"instances_{split}.json").read_text())
        if split == "val":
            coco["annotations"][1]["category_id"] = 99
        (broken / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"instances_val\.json: annotation #1 .*'category_id': 99"):
        peer.coco_to_yolo(broken, tmp_path / "yolo")


def test_default_budget_follows_the_default_preset() -> None:
    cfg = load_config(None)
    budget, how = bench.default_budget()
    if cfg.train.max_steps is None:
        assert budget == round(cfg.train.epochs * synth.DEFAULTS["num_train"]) and "num_train" in how
    else:
        assert budget == cfg.train.max_steps * cfg.data.batch_size


def test_table_has_both_models_ratio_and_mean() -> None:
    metrics = {"AP": 0.5, "AP50": 0.8, "APs": -1.0, "APm": 0.4, "APl": 0.6}
    report = {"ours_name": "ours", "sets": [
        {"index": 0, "seed": 5, "style": "circles", "num_train": 10, "num_val": 2, "ratio": 0.5,
         "ours": {"metrics": metrics, "train_wall_s": 75.0, "train_images_seen": 20},
         "yolo": {"metrics": {**metrics, "AP": 1.0}, "train_wall_s": 61.0, "train_images_seen": 20}}]}
    bench.summarize(report)
    table = bench.markdown_table(report)
    assert "| 0 | ours | 0.500 | 0.800 | n/a | 0.400 | 0.600 | 1 min 15 s | 20 | 0.50 |" in table
    assert "| 0 | YOLOv8n, same images | 1.000 |" in table and "same seconds" not in table
    assert "0.50 (min 0.50)" in table and "seed 5" in table and "circles" in table

    # --equal-time: a third row, YOLOv8n for the seconds ours took, and its ratio beside the same-images one
    report["sets"][0]["yolo_time"] = {"metrics": {**metrics, "AP": 0.25}, "train_wall_s": 76.0,
                                      "train_images_seen": 40}
    report["sets"][0]["ratio_time"] = 2.0
    bench.summarize(report)
    table = bench.markdown_table(report)
    assert "| 0 | ours | 0.500 | 0.800 | n/a | 0.400 | 0.600 | 1 min 15 s | 20 | 0.50 / 2.00 |" in table
    assert "| 0 | YOLOv8n, same seconds | 0.250 | 0.800 | n/a | 0.400 | 0.600 | 1 min 16 s | 40 |  |" in table
    assert "0.50 (min 0.50) / 2.00 (min 2.00)" in table

    report.update(base_seed=5, epochs=2, num_train=10, budget_from="--budget-images", budget_images=20,
                  image_size=160, threads=2, yolo_batch=16,
                  machine={"cpus": 2, "ultralytics": "8.4", "load_average_start": (1.0, 1, 1)})
    args = bench.parse_args(["--sets", "1", "--num-train", "10", "--budget-images", "20"])
    header = bench.markdown_header(report, args)
    assert header.startswith("`python benchmarks/bench_accuracy.py --base-seed 5 --sets 1 --num-train 10 ")
    assert "--budget-images 20`" in header and "2 epochs x 10 images" in header


def test_both_training_commands_get_the_benchmarks_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing ultralytics sets OMP_NUM_THREADS=1 in the harness; the children must not inherit it."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = bench.child_env(2)
    assert env["OMP_NUM_THREADS"] == "2" and env["PATH"] == os.environ["PATH"]
