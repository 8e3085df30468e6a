"""Datasets in the layouts labelling tools export: each passes `data check` and a one-step training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import coco_dict, write_image
from train_helpers import tiny_overrides

from singleshot.cli import main
from singleshot.data import load_dataset
from singleshot.data.errors import DatasetFormatError
from singleshot.engine.config import ConfigError, load_config
from singleshot.engine.trainer import Trainer

YOLO_LINES = {  # 6-decimal labels whose rounding overshoots the image edge by 5e-7
    "a": "0 0.500000 0.500000 1.000001 0.400000\n1 0.100000 0.100000 0.200001 0.200001\n",
    "b": "1 0.750000 0.750000 0.500001 0.500001\n0 0.250000 0.300000 0.300000 0.400000\n",
    "c": "0 0.400000 0.600000 0.400000 0.400000\n",
    "d": "1 0.600000 0.400000 0.400000 0.400000\n",
}


def _yolo_images(folder: Path, lines: dict[str, str] = YOLO_LINES) -> None:
    """``folder/images/*.jpg`` with ``folder/labels/*.txt`` beside them (the Ultralytics convention)."""
    for i, (stem, text) in enumerate(lines.items()):
        write_image(folder / "images" / f"{stem}.jpg", seed=i)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"{stem}.txt").write_text(text)


def ultralytics_list(root: Path) -> Path:
    """``datasets/shapes/data.yaml`` with ``path: .``, ``train:``/``val:`` relative to it and a names list."""
    _yolo_images(root / "train")
    _yolo_images(root / "val")
    (root / "data.yaml").write_text("path: .\ntrain: train/images\nval: val/images\nnc: 2\nnames: [cat, dog]\n")
    return root / "data.yaml"


def ultralytics_dict(root: Path) -> Path:
    """Roboflow's YOLO export: ``data.yaml`` at the root, ``train: ../train/images``, names as a mapping."""
    _yolo_images(root / "train")
    _yolo_images(root / "valid")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames:\n  0: cat\n  1: dog\n")
    return root / "data.yaml"


def coco_elsewhere(root: Path) -> Path:
    """A COCO JSON in ``labels/`` whose images sit in an unrelated ``pictures/`` folder."""
    data = coco_dict(num_images=4)
    data["annotations"] += [
        {"id": 4, "image_id": 12, "category_id": 7, "bbox": [4, 4, 30, 30], "iscrowd": 0, "area": 900},
        {"id": 5, "image_id": 13, "category_id": 3, "bbox": [10, 8, 30, 30], "iscrowd": 0, "area": 900},
    ]
    for i, img in enumerate(data["images"]):
        write_image(root / "pictures" / img["file_name"], seed=i)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "export.json").write_text(json.dumps(data))
    return root / "labels" / "export.json"


def roboflow_coco(root: Path) -> Path:
    """Roboflow's COCO export: ``train/_annotations.coco.json`` with the project as an empty category 0."""
    images = [{"id": i, "file_name": f"im{i}.jpg", "width": 64, "height": 48} for i in range(4)]
    anns = [
        {"id": i + 1, "image_id": i, "category_id": 1 + i % 2, "bbox": [5, 5, 30, 30], "iscrowd": 0, "area": 900}
        for i in range(4)
    ]
    cats = [
        {"id": 0, "name": "pets-xyz", "supercategory": "none"},
        {"id": 1, "name": "cat", "supercategory": "pets-xyz"},
        {"id": 2, "name": "dog", "supercategory": "pets-xyz"},
    ]
    for split in ("train", "valid"):
        for i, img in enumerate(images):
            write_image(root / split / img["file_name"], seed=i)
        data = {"images": images, "annotations": anns, "categories": cats}
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    return root


def yolo_folder(root: Path) -> Path:
    """Plain YOLO folder (``images/train`` + ``labels/train`` + ``classes.txt``) with 6-decimal labels."""
    for i, (stem, text) in enumerate(YOLO_LINES.items()):
        write_image(root / "images" / "train" / f"{stem}.jpg", seed=i)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


LAYOUTS = {
    "ultralytics_list": (ultralytics_list, {}),
    "ultralytics_dict": (ultralytics_dict, {}),
    "coco_elsewhere": (coco_elsewhere, {"images": "pictures"}),
    "roboflow_coco": (roboflow_coco, {}),
    "yolo_6_decimals": (yolo_folder, {}),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_checks_and_trains_one_step(
    tmp_path: Path, layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, extra = LAYOUTS[layout]
    path = make(tmp_path / "ds")
    images = str(tmp_path / "ds" / extra["images"]) if "images" in extra else None
    argv = ["data", "check", str(path)] + (["--images", images] if images else [])
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    if layout == "roboflow_coco":  # the dropped project category is the one warning of each split
        assert "0 errors, 2 warnings" in out and out.count("category 0 'pets-xyz' has no annotations") == 2, out
    else:
        assert "0 errors, 0 warnings" in out, out  # 6-decimal overshoots are not reported as clipped
    assert "cat" in out and "dog" in out and "pets-xyz" not in out.split("\n0 errors")[0]

    ds = load_dataset(path, "train", image_dir=images)
    assert sorted(ds.classes) == ["cat", "dog"] and len(ds) >= 2
    assert ds.stats["boxes_clipped"] == 0
    overrides = {"data.train": str(path), "data.batch_size": 2, "train.max_steps": 1, "data.augment": "none"}
    if images:
        overrides["data.train_images"] = images
    result = Trainer(load_config(None, tiny_overrides(tmp_path / "run", **overrides))).run()
    assert result.status == "finished" and result.step == 1


def test_yolo_edge_rounding_is_clamped_silently_but_real_overshoots_are_reported(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path / "ds")
    ds = load_dataset(root, "train")
    boxes, _ = ds.annotation(0)
    assert boxes.min() >= 0 and boxes.max() <= 1 and not ds.problems
    (root / "labels" / "train" / "c.txt").write_text("0 0.500000 0.500000 1.010000 0.400000\n")  # 5e-3 outside
    ds = load_dataset(root, "train")
    assert ds.stats["boxes_clipped"] == 1 and "clipped" in str(ds.problems[0])


def test_roboflow_category_zero_is_dropped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = load_dataset(roboflow_coco(tmp_path / "ds"), "val")
    assert ds.classes == ["cat", "dog"] and ds.label_to_category_id == {1: 1, 2: 2}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "category 0 'pets-xyz'" in err[0] and "dropped" in err[0]


def test_missing_images_name_the_folder_and_the_key(tmp_path: Path) -> None:
    ann = coco_elsewhere(tmp_path / "ds")
    with pytest.raises(DatasetFormatError) as e:
        load_dataset(ann, "train", image_dir_key="data.train_images")
    msg = str(e.value)
    assert str(tmp_path / "ds" / "labels") in msg and "data.train_images=FOLDER" in msg and "img0.jpg" in msg
    cfg = load_config(None, tiny_overrides(tmp_path / "run", **{"data.train": str(ann)}))
    with pytest.raises(DatasetFormatError, match=r"set data\.train_images=FOLDER"):
        Trainer(cfg).run()
    cfg = load_config(None, tiny_overrides(tmp_path / "run", **{"data.train": str(ann), "data.train_images": "nope"}))
    with pytest.raises(ConfigError, match=r"data\.train_images='nope': no such folder"):
        Trainer(cfg).run()


def test_data_yaml_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = ultralytics_list(tmp_path / "ds")
    path.write_text("path: .\ntrain: train/pics\nnames: [cat, dog]\n")
    with pytest.raises(DatasetFormatError, match=r"data\.yaml: the 'train:' images 'train/pics' were looked for at"):
        load_dataset(path, "train")
    path.write_text("path: .\ntrain: train/images\nnames: 3\n")
    with pytest.raises(DatasetFormatError, match=r"'names:' must be a list or a mapping"):
        load_dataset(path, "train")


def test_on_bad_image_is_a_config_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.on_bad_image.*raise, skip"):
        load_config(None, ["data.on_bad_image=ignore"])
    root = yolo_folder(tmp_path / "ds")
    (root / "images" / "train" / "d.jpg").write_bytes(b"not a jpeg")
    # batches of 3 so that one with the bad image skipped still has 2 (BatchNorm needs more than one sample)
    overrides = {"data.train": str(root), "data.batch_size": 3, "train.max_steps": 2, "data.on_bad_image": "skip"}
    result = Trainer(load_config(None, tiny_overrides(tmp_path / "run", **overrides))).run()
    assert result.status == "finished"
