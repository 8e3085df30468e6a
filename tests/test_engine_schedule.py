"""Learning-rate schedules, the scaling rule and the optimizer's weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

import singleshot
from singleshot.engine.optim import build_optimizer, param_groups
from singleshot.engine.schedule import LRScheduler, WarmupSchedule, build_schedule, scaled_lr


def test_linear_scaling_rule() -> None:
    assert scaled_lr(2.5e-3, 1024, 32) == pytest.approx(0.08)
    assert scaled_lr(2.6e-3, 8 * 32, 32) == pytest.approx(0.0208)
    assert scaled_lr(0.1, 64, 32, scale=False) == 0.1


def test_warmup_then_multistep() -> None:
    s = build_schedule(kind="multistep", peak_lr=1.0, steps_per_epoch=10, total_steps=100, warmup_steps=5,
                       warmup_start_factor=0.0, milestones_epochs=[4, 5.5], gamma=0.1)  # fmt: skip
    assert s.milestones == (40, 55)
    assert [s.lr(i) for i in range(6)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert s.lr(39) == pytest.approx(1.0) and s.lr(40) == pytest.approx(0.1) and s.lr(55) == pytest.approx(0.01)


def test_warmup_in_epochs_and_start_factor() -> None:
    s = build_schedule(kind="constant", peak_lr=0.16, steps_per_epoch=100, total_steps=1000, warmup_epochs=2.5,
                       warmup_start_factor=0.4333)  # fmt: skip
    assert s.warmup_steps == 250
    assert s.lr(0) == pytest.approx(0.16 * 0.4333)
    assert s.lr(250) == pytest.approx(0.16)


def test_cosine_decays_to_min_after_warmup() -> None:
    s = WarmupSchedule(peak_lr=2.0, total_steps=110, warmup_steps=10, kind="cosine", min_factor=0.1)
    assert s.lr(10) == pytest.approx(2.0)
    assert s.lr(60) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert s.lr(110) == pytest.approx(0.2)
    assert all(s.lr(i) >= s.lr(i + 1) for i in range(10, 110))


def test_scheduler_sets_optimizer_lr_and_resumes() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=123.0)
    sched = LRScheduler(opt, WarmupSchedule(peak_lr=1.0, total_steps=10, warmup_steps=4))
    assert opt.param_groups[0]["lr"] == 0.0
    for _ in range(3):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.75)
    other = LRScheduler(torch.optim.SGD([p], lr=1.0), WarmupSchedule(peak_lr=1.0, total_steps=10, warmup_steps=4))
    other.load_state_dict(sched.state_dict())
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(0.75)


def test_no_decay_groups_hold_every_bias_and_bn_parameter() -> None:
    model = singleshot.build_model("ssd_tiny", num_classes=3)
    groups = param_groups(model, 5e-4, no_decay_bn_bias=True)
    decay, no_decay = groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    n_bn = sum(2 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    n_bias = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None)
    assert len(no_decay["params"]) == n_bn + n_bias
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == total
    opt = build_optimizer(model, lr=0.1, weight_decay=5e-4, no_decay_bn_bias=False)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["momentum"] == 0.9
    assert not math.isnan(opt.param_groups[0]["lr"])
