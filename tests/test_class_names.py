"""Classes by name: a dataset listing the model's classes in another order scores the same; other sets are errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from data_fixtures import write_image
from torch import Tensor, nn
from train_helpers import tiny_overrides

from singleshot import build_model
from singleshot.checkpoint import make_checkpoint
from singleshot.cli import main
from singleshot.data import load_dataset
from singleshot.data.classes import ClassMismatchError, label_map_by_name
from singleshot.data.loader import build_loader
from singleshot.data.transforms import SSDValTransform
from singleshot.engine.config import load_config
from singleshot.engine.trainer import Trainer
from singleshot.evaluation import category_ids_by_name, evaluate
from singleshot.inference.core import InferenceCore
from singleshot.models import get_spec

BOXES = [  # per image: (x, y, w, h, class name), pixels of a 64x48 image
    [(2, 3, 20, 14, "cat"), (30, 20, 16, 16, "dog")],
    [(5, 5, 30, 30, "dog")],
    [(10, 8, 24, 20, "cat"), (40, 4, 18, 30, "fox")],
    [(20, 10, 30, 30, "fox")],
]


def write_set(root: Path, categories: dict[str, int]) -> Path:
    """The same 4 images and boxes as a COCO set whose category ids (hence label order) follow ``categories``."""
    images, anns = [], []
    for i, boxes in enumerate(BOXES):
        write_image(root / "images" / f"{i}.jpg", seed=i)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        for x, y, w, h, name in boxes:
            if name in categories:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": categories[name],
                             "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    cats = [{"id": cid, "name": name} for name, cid in categories.items()]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root / "ann.json"


class _Replay(InferenceCore):
    """A core whose post-processing returns prepared detections (the model's labels) for the images in loader
    order."""

    def __init__(self, per_image: list[dict[str, Tensor]]) -> None:
        super().__init__(_Constant(), spec=get_spec("ssd_tiny"), device="cpu")
        self.per_image, self.at = per_image, 0

    def postprocess(self, outputs: tuple[Tensor, Tensor], sizes: Tensor, **overrides: Any) -> list[dict[str, Tensor]]:
        out = self.per_image[self.at : self.at + len(sizes)]
        self.at += len(sizes)
        return out


def _detections(model_classes: list[str]) -> list[dict[str, Tensor]]:
    """Per image: each true box (score 0.9) plus the same box called the next class (score 0.5), model labels."""
    out = []
    for boxes in BOXES:
        xyxy, scores, labels = [], [], []
        for x, y, w, h, name in boxes:
            label = model_classes.index(name) + 1
            for lab, score in ((label, 0.9), (label % len(model_classes) + 1, 0.5)):
                xyxy.append([x, y, x + w, y + h])
                scores.append(score)
                labels.append(lab)
        out.append({"boxes": torch.tensor(xyxy, dtype=torch.float32), "scores": torch.tensor(scores),
                    "labels": torch.tensor(labels)})
    return out


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros(len(x), 1, 4), torch.zeros(len(x), 1, 2)


def _evaluate(ann: Path, model_classes: list[str], l2c: dict[int, int] | None = None) -> dict[str, Any]:
    ds = load_dataset(ann, "val", keep_empty=True)
    loader = build_loader(ds, SSDValTransform(32), batch_size=4, shuffle=False, num_workers=0)
    l2c = l2c if l2c is not None else category_ids_by_name(model_classes, ds)
    return evaluate(_Replay(_detections(model_classes)), loader, label_to_category_id=l2c, log=None)


def test_permuted_class_order_gives_identical_ap(tmp_path: Path) -> None:
    model_classes = ["cat", "dog", "fox"]
    same = write_set(tmp_path / "same", {"cat": 1, "dog": 2, "fox": 3})
    permuted = write_set(tmp_path / "perm", {"fox": 1, "cat": 2, "dog": 3})  # labels: fox 1, cat 2, dog 3
    assert load_dataset(permuted, "val").classes == ["fox", "cat", "dog"]
    a, b = _evaluate(same, model_classes), _evaluate(permuted, model_classes)
    assert a["AP"] > 0.9 and a["AP"] == b["AP"] and a["AP50"] == b["AP50"]
    assert a["per_class_AP"] == b["per_class_AP"]
    # What comparing counts only did: the model's label k scored as the dataset's label k.
    ds = load_dataset(permuted, "val")
    wrong = _evaluate(permuted, model_classes, l2c=ds.label_to_category_id)
    assert wrong["AP"] < a["AP"] - 0.3  # only the lower-scored decoys land on the right class


def test_a_different_class_set_is_an_error_listing_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ClassMismatchError, match=r"only in a: \['fox'\]; only in b: \['bird'\].*\['cat', 'dog', 'fox'\]"
                       r".*\['dog', 'bird', 'cat'\]"):
        label_map_by_name(["cat", "dog", "fox"], ["dog", "bird", "cat"], source_what="a", target_what="b")
    with pytest.raises(ClassMismatchError, match="repeated names"):
        label_map_by_name(["cat", "cat"], ["cat", "dog"])
    ann = write_set(tmp_path / "two", {"cat": 1, "dog": 2})
    ckpt = tmp_path / "three.pt"
    torch.save(make_checkpoint(build_model("ssd_tiny", num_classes=4), ["cat", "dog", "fox"]), ckpt)
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(ann), "--workers", "0"]) != 0
    err = capsys.readouterr().err
    assert "['cat', 'dog', 'fox']" in err and "['cat', 'dog']" in err and "only in checkpoint" in err


def test_training_maps_a_separate_validation_source_by_name(tmp_path: Path) -> None:
    train = write_set(tmp_path / "train", {"cat": 1, "dog": 2, "fox": 3})
    val = write_set(tmp_path / "val", {"fox": 1, "cat": 2, "dog": 3})
    other = write_set(tmp_path / "other", {"cat": 1, "dog": 2})
    base = {"data.train": str(train), "data.batch_size": 2, "train.max_steps": 1, "data.augment": "none",
            "data.val_batch_size": 4}
    cfg = load_config(None, tiny_overrides(tmp_path / "bad", **base, **{"data.val": str(other)}))
    with pytest.raises(ClassMismatchError, match=r"training set .* \['cat', 'dog', 'fox'\].*validation set"):
        Trainer(cfg).run()
    trainer = Trainer(load_config(None, tiny_overrides(tmp_path / "ok", **base, **{"data.val": str(val)})))
    result = trainer.run()
    assert result.status == "finished" and result.final_stats is not None
    assert trainer.parts.val_label_to_category_id == {1: 2, 2: 3, 3: 1}  # cat, dog, fox -> their ids in the val file
