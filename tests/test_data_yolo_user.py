"""``data=PATH`` and a dataset's own splits, as a user coming from Ultralytics types them; ``data check`` on a
Roboflow export whose ``test:`` folder is missing; ``labels.png``'s counts for a YOLO set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_fixtures import coco_dict, make_coco, make_voc, make_yolo
from train_helpers import tiny_overrides

from singleshot.cli import main
from singleshot.data.check import check_dataset, label_summary
from singleshot.data.formats import load_dataset


def _yolo_with_val(root: Path, test_entry: str | None = None) -> Path:
    make_yolo(root)
    shutil.copytree(root / "images" / "train", root / "images" / "val")
    shutil.copytree(root / "labels" / "train", root / "labels" / "val")
    text = "path: .\ntrain: images/train\nval: images/val\nnames: [cat, dog]\n"
    (root / "data.yaml").write_text(text + (f"test: {test_entry}\n" if test_entry else ""))
    return root


def _coco(root: Path, split: str, n: int) -> Path:
    data = coco_dict(num_images=n)
    data["annotations"] = [{"id": i + 1, "image_id": img["id"], "category_id": 7, "bbox": [2, 3, 20, 10],
                            "iscrowd": 0, "area": 200} for i, img in enumerate(data["images"])]
    return make_coco(root, data, split=split)


def _layouts(tmp_path: Path) -> dict[str, tuple[Path, int, int]]:
    """Each layout with both splits: ``{name: (path given as data=, train images, val images)}``."""
    coco = _coco(tmp_path / "coco", "train", 2)
    _coco(tmp_path / "coco", "val", 3)
    voc = make_voc(tmp_path / "voc")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    yolo = _yolo_with_val(tmp_path / "yolo")
    return {"coco folder": (coco, 2, 3), "voc root": (voc, 2, 1), "yolo root": (yolo, 2, 2),
            "data.yaml": (yolo / "data.yaml", 2, 2)}


def _train(capsys: pytest.CaptureFixture[str], run: Path, *extra: str) -> tuple[int, str]:
    base = [a for a in tiny_overrides(run, **{"train.max_steps": 1, "data.batch_size": 2})
            if not a.startswith(("data.train=", "data.val="))]
    code = main(["train", *base, "eval.every=0", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_data_path_trains_and_validates_on_the_datasets_own_splits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (path, n_train, n_val) in _layouts(tmp_path).items():
        # singleshot train data=PATH ...
        code, out = _train(capsys, tmp_path / f"run-{name}", f"data={path}")
        assert code == 0, (name, out)
        assert f"on {n_train} images" in out, name  # the train split
        assert f"; {n_val} validation images; run folder" in out, name  # the val split
        assert "evaluation after epoch 1 (step 1)" in out, name


def test_a_data_yaml_given_as_data_train_takes_its_val_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yolo = _yolo_with_val(tmp_path / "yolo")
    # singleshot train data.train=yolo/data.yaml   (data.val left at its default)
    code, out = _train(capsys, tmp_path / "run", f"data.train={yolo / 'data.yaml'}")
    assert code == 0, out
    assert f"data.val: using the val split of {yolo / 'data.yaml'} (2 images)" in out
    assert "class names differ" not in out


def test_a_dataset_without_a_val_split_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yolo = make_yolo(tmp_path / "yolo")  # train: only
    code, out = _train(capsys, tmp_path / "run", f"data={yolo / 'data.yaml'}")
    assert code == 2
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"singleshot train: data.val={str(yolo / 'data.yaml')!r}: the dataset has no val split")
    assert "it has: train" in line and "data.val=null" in line
    code, out = _train(capsys, tmp_path / "run2", f"data.train={yolo}")  # data.val following data.train
    assert code == 2 and "(data.val follows it)" in out and "it has: train" in out
    # with data.val=null it trains without evaluation
    code, out = _train(capsys, tmp_path / "run3", f"data={yolo}", "data.val=null")
    assert code == 0, out


def test_data_check_warns_on_a_missing_test_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a Roboflow export's data.yaml names ../test/images, which the download left out
    yolo = _yolo_with_val(tmp_path / "export", test_entry="../test/images")
    assert main(["data", "check", str(yolo / "data.yaml")]) == 0
    out = capsys.readouterr().out
    assert "'test:'" in out and "the test split is left out" in out
    # a missing val folder stays an error
    (yolo / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/nowhere\nnames: [cat, dog]\n")
    assert main(["data", "check", str(yolo / "data.yaml")]) == 1


def test_labels_summary_of_a_yolo_set_counts_what_data_check_counts(tmp_path: Path) -> None:
    yolo = _yolo_with_val(tmp_path / "yolo")
    report = check_dataset(yolo / "data.yaml", decode=False)
    train = next(s for s in report.splits if s.split == "train")
    summary = label_summary(load_dataset(yolo / "data.yaml", "train", keep_empty=True))
    assert sum(summary.boxes_per_class.values()) == sum(train.boxes_per_class.values()) == 3
    assert summary.images == train.images == 2
