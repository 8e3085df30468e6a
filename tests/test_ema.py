"""Weight averaging (train.ema_decay) and the AdamW option: the EMA formula, what checkpoints hold, exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from test_train_resume import STEP_SCHEDULE
from torch import nn
from train_helpers import tiny_config

from singleshot.checkpoint import load_checkpoint
from singleshot.engine.ema import ModelEMA
from singleshot.engine.trainer import train


def test_ema_follows_the_formula_with_its_warmup() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, warmup_steps=2.0)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3))  # moves the BatchNorm statistics too
        ema.update(model)
        d = 0.9 * (1 - math.exp(-t / 2.0))
        for k, v in model.state_dict().items():
            expected[k] = v.clone() if not v.is_floating_point() or t == 1 else d * expected[k] + (1 - d) * v
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)
    assert ema.module is not model and not any(p.requires_grad for p in ema.module.parameters())


def test_ema_checkpoint_holds_the_average_and_resumes_exactly(tmp_path: Path) -> None:
    opts = {**STEP_SCHEDULE, "train.ema_decay": 0.9, "train.ema_warmup_steps": 2, "optim.name": "adamw",
            "optim.lr": 0.001, "optim.weight_decay": 0.05}
    straight = train(tiny_config(tmp_path / "straight", **opts))
    assert straight.status == "finished" and straight.step == 6
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert a["ema"]["updates"] == 6
    trained, averaged = a["ema"]["trained_state_dict"], a["state_dict"]
    assert any(not torch.equal(trained[k], v) for k, v in averaged.items() if v.is_floating_point())
    assert "exp_avg_sq" in next(iter(a["optimizer"]["state"].values()))  # AdamW's state, not SGD's

    train(tiny_config(tmp_path / "resumed", **opts, **{"train.max_steps": 3}))
    train(tiny_config(tmp_path / "resumed", **opts))
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert b["step"] == 6 and b["ema"]["updates"] == 6
    for part in ("state_dict",):
        for k, v in a[part].items():
            torch.testing.assert_close(b[part][k], v, atol=1e-6, rtol=0, msg=k)
    for k, v in trained.items():
        torch.testing.assert_close(b["ema"]["trained_state_dict"][k], v, atol=1e-6, rtol=0, msg=k)


def test_the_default_preset_trains(tmp_path: Path) -> None:
    """The default recipe itself (AdamW, EMA, flip + jitter, batch 16 -> 4 here), not the engine tests' pinned one."""
    from train_helpers import tiny_dataset

    from singleshot.engine.config import load_config

    cfg = load_config(None, [f"data.train={tiny_dataset()}", "data.val=null", "data.batch_size=4", "data.num_workers=0",
                             "train.max_steps=3", "train.threads=1", "train.progress=none", f"run.dir={tmp_path}",
                             "run.tensorboard=false", "run.report=false"])
    assert (cfg.optim.name, cfg.data.augment, cfg.train.ema_decay) == ("adamw", "light", 0.995)
    result = train(cfg)
    assert result.status == "finished" and result.step == 3
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["ema"]["updates"] == 3
