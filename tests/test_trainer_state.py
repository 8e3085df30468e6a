"""The trainer's state is typed and whole from the start: every attribute exists after ``Trainer.__init__`` (a run adds
none), and the loss window of the loop (:class:`LossWindow`) sums, restarts and keeps the last shown loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from train_helpers import tiny_config

from singleshot.engine.loop_state import LossWindow
from singleshot.engine.step import StepResult
from singleshot.engine.trainer import Trainer


def test_a_run_creates_no_attribute_that_init_did_not(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path / "run", **{"train.max_steps": 2, "train.log_every": 1}))
    before = set(vars(trainer))
    with pytest.raises(RuntimeError, match=r"built by Trainer\.run"):
        _ = trainer.parts
    result = trainer.run()
    assert result.status == "finished" and result.step == 2
    assert set(vars(trainer)) == before
    assert trainer.parts.total_steps == 2 and (trainer.epoch, trainer.step) == (0, 2)


def test_loss_window_sums_good_steps_and_keeps_the_shown_loss() -> None:
    window = LossWindow(t=1.0)
    assert window.n == 0 and math.isnan(window.shown)
    window.add(StepResult(3, 1, 0, 0, False, 2.0, 0.5, 1.5))  # 2 good steps with these means
    window.add(StepResult(1, 1, 1, 0, False, math.nan, math.nan, math.nan))  # all skipped: nothing to add
    assert (window.loss, window.box, window.cls, window.n) == (4.0, 1.0, 3.0, 2)
    window.images, window.shown = 12, 2.0
    window.restart(5.0)
    assert (window.loss, window.box, window.cls, window.n, window.images, window.t) == (0.0, 0.0, 0.0, 0, 0, 5.0)
    assert window.shown == 2.0
