"""The NaN/Inf guard: non-finite losses are skipped and counted; several in a row stop the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from singleshot.box.factory import build_loss
from singleshot.checkpoint import load_checkpoint
from singleshot.engine.build import TrainingParts
from singleshot.engine.hooks import TrainHook
from singleshot.engine.trainer import Trainer, TrainingDiverged
from singleshot.models import get_spec


class _PoisonedLoss(torch.nn.Module):
    """Wraps the real loss; returns NaN (or Inf) on the listed calls (0-based)."""

    def __init__(self, inner: torch.nn.Module, bad_calls: set[int]) -> None:
        super().__init__()
        self.inner, self.bad_calls, self.calls = inner, bad_calls, 0

    def forward(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(*args)
        if self.calls in self.bad_calls:
            poison = float("nan") if self.calls % 2 else float("inf")
            out = {**out, "loss": out["loss"] * poison}
        self.calls += 1
        return out


def _poisoned(bad_calls: set[int]) -> _PoisonedLoss:
    """The tiny model's own loss, poisoned on ``bad_calls``: given to the Trainer in place of the one it builds."""
    return _PoisonedLoss(build_loss(get_spec("ssd_tiny")), bad_calls)


class _Snapshots(TrainHook):
    """The stepped weights after every step (the step is synchronous on the CPU)."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def init_end(self, cfg: object, parts: TrainingParts) -> None:
        self.model = parts.model

    def step_end(self, step: int) -> None:
        self.snapshots.append({k: v.detach().clone() for k, v in self.model.named_parameters()})


@pytest.mark.parametrize("fused", [False, True], ids=["foreach-undo", "fused-skip"])
def test_non_finite_steps_are_skipped_and_counted(tmp_path: Path, fused: bool) -> None:
    """Either way a step is skipped: undone from a snapshot (foreach, the CPU default) or skipped in the fused
    kernel (the CUDA default, asked for here on the CPU)."""
    hook = _Snapshots()
    cfg = tiny_config(tmp_path / "run", **{"train.max_steps": 5, "optim.fused": fused})
    result = Trainer(cfg, loss_fn=_poisoned({2, 3}), hooks=[hook]).run()
    snapshots = hook.snapshots
    assert result.status == "finished" and result.step == 5
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["train_state"]["bad_steps_total"] == 2
    weights = list(snapshots[0])  # parameters only: BN running stats still update in a skipped forward
    # calls 2 and 3 were skipped: weights unchanged across them, and they moved on the good steps around them
    assert all(torch.equal(snapshots[1][k], snapshots[3][k]) for k in weights)
    assert any(not torch.equal(snapshots[0][k], snapshots[1][k]) for k in weights)
    assert any(not torch.equal(snapshots[3][k], snapshots[4][k]) for k in weights)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_consecutive_non_finite_losses_stop_with_a_clear_message(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", **{"train.max_steps": 20, "train.max_bad_steps": 3})
    assert cfg.model.name == "ssd_tiny"  # the loss given below is this model's
    with pytest.raises(TrainingDiverged, match="3 non-finite losses in a row at step 4"):
        Trainer(cfg, loss_fn=_poisoned(set(range(1, 100)))).run()
