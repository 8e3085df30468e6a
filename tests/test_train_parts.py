"""The training parts built by one function (``build_training``) and the run's events as hooks (MLPerf's logging is
one hook; a user's own are passed to ``Trainer(cfg, hooks=[...])``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import tiny_config, tiny_dataset

from singleshot.checkpoint import load_checkpoint
from singleshot.engine.build import TrainingParts, build_training
from singleshot.engine.distributed import detect_environment
from singleshot.engine.hooks import EVENTS, HookList, TrainHook
from singleshot.engine.mlperf import MLPerfHook
from singleshot.engine.trainer import Trainer
from singleshot.evaluation import STAT_NAMES


class Recorder(TrainHook):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def init_start(self, run_dir: Path, main: bool) -> None:
        self.events.append(("init_start", main))

    def init_end(self, cfg: Any, parts: TrainingParts) -> None:
        self.events.append(("init_end", parts.total_steps))

    def run_start(self) -> None:
        self.events.append(("run_start",))

    def epoch_start(self, epoch_num: int) -> None:
        self.events.append(("epoch_start", epoch_num))

    def epoch_end(self, epoch_num: int) -> None:
        self.events.append(("epoch_end", epoch_num))

    def eval_start(self, epoch_num: int) -> None:
        self.events.append(("eval_start", epoch_num))

    def eval_end(self, epoch_num: int, stats: dict[str, float]) -> None:
        assert list(stats) == list(STAT_NAMES)
        self.events.append(("eval_end", epoch_num))

    def record(self, record: dict[str, Any]) -> None:
        self.events.append(("record", record["kind"], record["step"]))

    def run_end(self, status: str) -> None:
        self.events.append(("run_end", status))


def test_hooks_see_the_run_in_order(tmp_path: Path) -> None:
    # 16 images, batch 4: 4 steps per epoch; 6 steps = one epoch and a half, evaluated after epoch 1 and at the end.
    cfg = tiny_config(tmp_path / "run", **{"data.val": str(tiny_dataset()), "eval.every": 1, "train.log_every": 3})
    hook = Recorder()
    result = Trainer(cfg, hooks=[hook]).run()
    assert result.status == "finished" and result.step == 6
    assert hook.events == [
        ("init_start", True), ("init_end", 6), ("run_start",),
        ("epoch_start", 1), ("record", "train", 3), ("epoch_end", 1),
        ("eval_start", 1), ("eval_end", 1), ("record", "eval", 4),
        ("epoch_start", 2), ("record", "train", 6), ("epoch_end", 2),
        ("eval_start", 2), ("eval_end", 2), ("record", "eval", 6),
        ("run_end", "finished"),
    ]  # fmt: skip


def test_hook_list_rejects_what_would_fail_silently() -> None:
    with pytest.raises(TypeError, match="not a TrainHook"):
        HookList([object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown hook event 'epoch_begin'"):
        HookList([TrainHook()]).fire("epoch_begin", 1)
    assert "run_end" in EVENTS and "fire" not in EVENTS


@pytest.mark.parametrize(
    ("status", "target", "expected"),
    [("finished", None, "success"), ("finished", 0.5, "aborted"), ("target_reached", 0.5, "success"),
     ("interrupted", None, "aborted")],
)  # fmt: skip
def test_mlperf_run_stop_status(status: str, target: float | None, expected: str) -> None:
    hook = MLPerfHook(enabled=False, target_map=target)
    calls: list[tuple[str, dict[str, Any]]] = []
    hook.log.end = lambda key, value=None, **meta: calls.append((key, meta))  # type: ignore[method-assign]
    hook.run_end(status)
    assert calls == [("run_stop", {"status": expected})]


def test_build_training_restores_a_checkpoint(tmp_path: Path) -> None:
    """The parts alone, without a loop: a fresh build and one restored from a run's checkpoint."""
    run = tmp_path / "run"
    cfg = tiny_config(run, **{"train.max_steps": 5, "train.ema_decay": 0.9})
    Trainer(cfg).run()
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    kw = {"device": torch.device("cpu"), "precision": "fp32", "info": detect_environment({})}
    fresh = build_training(cfg, **kw)
    resumed = build_training(cfg, resume=ck, **kw)
    assert (fresh.total_steps, fresh.steps_per_epoch, fresh.global_batch) == (5, 4, 4)
    assert fresh.eval_model is fresh.ema.module and fresh.train_model is fresh.model  # one process, no compile
    assert fresh.scheduler.step_count == 0 and resumed.scheduler.step_count == 5
    assert resumed.optimizer.state_dict()["state"] and not fresh.optimizer.state_dict()["state"]
    trained = ck["ema"]["trained_state_dict"]  # the stepped weights; "state_dict" holds their average
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    for name, value in resumed.eval_model.state_dict().items():
        assert torch.equal(value, ck["state_dict"][name]), name
    assert resumed.data.train_loader.state_dict() == ck["sampler"]
