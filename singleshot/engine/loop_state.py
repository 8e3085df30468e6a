"""The training loop's types: what a run knows about itself across resumes (:class:`RunState`, saved in every
checkpoint), the losses of the steps since the last ``train`` record (:class:`LossWindow`, this process only), what
:meth:`~singleshot.engine.trainer.Trainer.run` returns (:class:`TrainResult`) and the two ways a run stops short
(:class:`TrainingDiverged`, :class:`EvaluationInterrupted`). :mod:`singleshot.engine.trainer` exports them all but
:class:`LossWindow`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from singleshot.engine.step import StepResult


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


class EvaluationInterrupted(Exception):
    """A signal arrived during an evaluation in a single-process run."""


@dataclass
class TrainResult:
    """What :meth:`~singleshot.engine.trainer.Trainer.run` returns: how the run ended and where it stands."""

    run_dir: Path
    status: str  # "finished" | "target_reached" | "interrupted" | "already_finished"
    step: int
    epoch: int
    best_map: float | None
    final_stats: list[float] | None
    wall_time: float
    signum: int = 0
    main: bool = True  # rank 0 (the process that prints and writes)


@dataclass
class RunState:
    """What a run knows about itself across resumes (saved as the checkpoint's ``train_state``)."""

    best_map: float | None = None  # best COCO mAP@[.5:.95] of the evaluations so far
    last_eval_step: int = -1  # step of the last evaluation
    bad_steps_total: int = 0  # steps skipped for a non-finite loss
    elapsed: float = 0.0  # training wall seconds before this process started
    finished: bool = False
    status: str = "running"  # "running" | "finished" | "target_reached"
    final_stats: list[float] | None = None  # the 12 COCO numbers of the last evaluation
    eval_pending: bool = False  # a signal interrupted an evaluation: run it first on resume ...
    eval_epoch: int = 0  # ... as the evaluation after this epoch (1-based)

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> RunState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


@dataclass
class LossWindow:
    """The steps since the last ``train`` record: loss sums over their good (finite-loss) steps as read from the
    device, and the images fed since ``t`` (for images per second)."""

    t: float  # perf_counter() when the window opened
    loss: float = 0.0
    box: float = 0.0
    cls: float = 0.0
    n: int = 0  # good steps read so far
    images: int = 0  # images fed (all ranks)
    shown: float = math.nan  # the last record's loss: what the progress shows until this window reads a good step

    def add(self, out: StepResult) -> None:
        """Adds the good steps of one read (``out`` holds their means)."""
        good = out.steps - out.skipped
        if good:
            self.loss += out.loss * good
            self.box += out.box * good
            self.cls += out.cls * good
            self.n += good

    def restart(self, now: float) -> None:
        """Opens the next window at ``now``; ``shown`` carries over."""
        self.loss, self.box, self.cls, self.n, self.t, self.images = 0.0, 0.0, 0.0, 0, now, 0


# What an evaluation costs in training images, measured with the default run on 2 CPU cores (62 training img/s; an
# evaluation of 200 synthetic images took 1.9 s plus about 6 s for the COCO tables and the report's pictures): about
# half a training image per validation image, plus a fixed part worth ~500 training images.
EVAL_COST_PER_IMAGE = 0.5
EVAL_COST_FIXED = 500.0
EVAL_BUDGET = 0.10  # auto cadence: evaluations at most this fraction of the run (the final one included)


def auto_eval_every(epochs: int, train_images_per_epoch: int, val_images: int) -> tuple[int, float]:
    """``(every, fraction)``: the most frequent cadence (every N epochs, plus the run's end) whose evaluations cost at
    most :data:`EVAL_BUDGET` of the run by the estimate above, and that estimate; when even the final evaluation
    alone costs more, ``every`` is 0 (only the end). ``epochs``: the run's epochs (a partial last one counts)."""
    per_eval = EVAL_COST_PER_IMAGE * val_images + EVAL_COST_FIXED
    run = max(1, epochs * train_images_per_epoch)
    for every in range(1, epochs + 1):
        count = epochs // every + (epochs % every != 0)  # every N-th epoch, and the end
        if count * per_eval <= EVAL_BUDGET * run:
            return (every if every < epochs else 0), count * per_eval / run
    return 0, per_eval / run
