"""SSD320 v1.2's training set-up on the tiny model: frozen backbone BatchNorm and the area crop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from singleshot.checkpoint import load_checkpoint
from singleshot.engine.trainer import Trainer
from singleshot.models import build_model


def test_frozen_backbone_bn_stays_frozen_while_the_rest_trains(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run", **{"model.frozen_backbone_bn": "true", "data.augment": "area_crop", "train.max_steps": 3}
    )
    with pytest.warns(UserWarning, match="not pretrained"):
        result = Trainer(cfg).run()
    assert result.status == "finished" and result.step == 3
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    state = ckpt["state_dict"]
    bn_stats = [k for k in state if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))]
    assert bn_stats
    for k in bn_stats:  # never updated: still the initial statistics
        init = torch.zeros_like(state[k]) if k.endswith("mean") else torch.ones_like(state[k])
        assert torch.equal(state[k], init), k
    assert all(state[k.replace("running_mean", "weight")].eq(1).all() for k in bn_stats if k.endswith("mean"))
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    initial = build_model(cfg.model.name, num_classes=ckpt["model"]["num_classes"]).state_dict()
    assert sorted(initial) == sorted(state)  # the keys of the unfrozen model
    assert not torch.equal(initial["backbone.conv1.weight"], state["backbone.conv1.weight"])  # the convs train
    # The run resumes into a frozen model from the same keys.
    cfg2 = tiny_config(
        tmp_path / "run", **{"model.frozen_backbone_bn": "true", "data.augment": "area_crop", "train.max_steps": 4}
    )
    with pytest.warns(UserWarning, match="not pretrained"):
        assert Trainer(cfg2).run().step == 4
