"""Recipe details of issue 11: COCO crowd boxes, the MLPerf warmup count, the missing-backbone warning, and the
frozen-statistics BatchNorm mode (TF's ``freeze_batchnorm``) that the SSD320 preset trains with."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import make_coco
from train_helpers import tiny_config

from singleshot import build_model
from singleshot.checkpoint import load_checkpoint
from singleshot.data.formats import load_dataset
from singleshot.engine.config import DataConfig, load_config
from singleshot.engine.data import open_dataset
from singleshot.engine.schedule import build_schedule
from singleshot.engine.trainer import Trainer


def test_crowd_boxes_dropped_or_kept_as_ordinary_targets(tmp_path: Path) -> None:
    # coco_dict: image 10 has two ordinary boxes, image 11 only an iscrowd box (dog, [5, 5, 30, 30]), image 12 none.
    root = make_coco(tmp_path / "coco")
    dropped = load_dataset(root, "train")
    kept = load_dataset(root, "train", crowd="keep")
    assert [dropped.image_id(i) for i in range(len(dropped))] == [10]
    assert [kept.image_id(i) for i in range(len(kept))] == [10, 11]  # the crowd-only image stays
    boxes, labels = kept.annotation(1)
    np.testing.assert_array_equal(boxes, [[5, 5, 35, 35]])
    assert labels.tolist() == [1]  # "dog" (category 3) is label 1: an ordinary target
    assert dropped.stats["boxes_crowd"] == kept.stats["boxes_crowd"] == 1
    # Through the training configuration, and the SSD300 presets read COCO as their references do.
    assert len(open_dataset(str(root), "train", crowd="keep")) == 2  # the engine's entry, which build_data uses
    assert load_config(None, ["data.crowd=keep"]).data.crowd == "keep" and DataConfig().crowd == "drop"
    for preset in ("mlperf_ssd300_resnet34", "nvidia_ssd300_resnet50"):
        assert load_config(preset).data.crowd == "keep"
    with pytest.raises(ValueError, match=r"data\.crowd"):
        load_config(None, ["data.crowd=ignore"])


@pytest.mark.parametrize(("n", "batch"), [(117266, 1024), (117266, 2048), (117266, 256), (1000, 96)])
def test_warmup_steps_as_mlperf_computes_them(n: int, batch: int) -> None:
    epochs = 2.619685
    s = build_schedule(kind="multistep", peak_lr=1.0, steps_per_epoch=n // batch, total_steps=10**6,
                       warmup_epochs=epochs, train_size=n, global_batch=batch)  # fmt: skip
    assert s.warmup_steps == int(epochs * n / batch)  # the reference: int(warmup_epochs * N / global_batch)


def test_warmup_count_differs_from_rounding_the_epoch_first() -> None:
    # COCO (117,266 images) at global batch 2048: int(2.619685 * 57.26) = 149 steps, where rounding the epoch down to
    # 57 steps first and the product up gave ceil(2.619685 * 57) = 150.
    s = build_schedule(kind="constant", peak_lr=1.0, steps_per_epoch=117266 // 2048, total_steps=1000,
                       warmup_epochs=2.619685, train_size=117266, global_batch=2048)  # fmt: skip
    assert s.warmup_steps == 149 and math.ceil(2.619685 * (117266 // 2048)) == 150


def test_recipe_model_without_pretrained_backbone_warns_once(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", **{"model.name": "ssd300_resnet34", "train.max_steps": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg).run()
    found = [w for w in caught if "model.pretrained_backbone" in str(w.message)]
    assert len(found) == 1 and "resnet34-333f7ec4.pth" in str(found[0].message)


def test_tiny_model_has_no_reference_backbone_to_name(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", **{"train.max_steps": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg).run()
    assert not [w for w in caught if "model.pretrained_backbone" in str(w.message)]


def test_frozen_statistics_batchnorm_trains_gamma_beta_only(tmp_path: Path) -> None:
    """train.freeze_bn (the SSD320 preset's): every BatchNorm normalizes with its moving statistics, which never
    change, while gamma and beta train; checkpoints load into frozen and unfrozen runs alike."""
    assert load_config("nvidia_ssd320_resnet50_fpn").train.freeze_bn
    cfg = tiny_config(tmp_path / "run", **{"train.freeze_bn": "true", "train.max_steps": 4})
    torch.manual_seed(cfg.train.seed)
    Trainer(cfg).run()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    state = ckpt["state_dict"]
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    initial = build_model(cfg.model.name, num_classes=ckpt["model"]["num_classes"]).state_dict()
    stats = [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    affine = [k.replace("running_mean", s) for k in stats if k.endswith("running_mean") for s in ("weight", "bias")]
    assert len(stats) > 20 and sorted(initial) == sorted(state)  # the unfrozen model's keys: loads either way
    assert all(torch.equal(state[k], initial[k]) for k in stats)  # statistics never updated
    assert sum(not torch.equal(state[k], initial[k]) for k in affine) > len(affine) // 2  # gamma/beta train
    # The same steps without the mode move the statistics (the check above can fail).
    Trainer(tiny_config(tmp_path / "plain", **{"train.max_steps": 4})).run()
    plain = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["state_dict"]
    assert all(not torch.equal(plain[k], initial[k]) for k in stats if k.endswith("num_batches_tracked"))
