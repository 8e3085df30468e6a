"""Hooks: code that acts at the training run's events without living in the loop.

The loop names each event once (``hooks.fire("epoch_start", epoch_num)``); MLPerf's logging
(:class:`singleshot.engine.mlperf.MLPerfHook`) is one hook, and a user's own (an experiment tracker, a notifier) are
passed as ``Trainer(cfg, hooks=[...])``::

    class PrintAP(TrainHook):
        def eval_end(self, epoch_num, stats):
            print(epoch_num, stats["AP"])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from singleshot.engine.build import TrainingParts
    from singleshot.engine.config import TrainConfig


class TrainHook:
    """The run's events, in the order they happen; every method does nothing unless overridden. Hooks run on every
    rank (``init_start``'s ``main`` says which one writes); epochs are numbered from 1."""

    def init_start(self, run_dir: Path, main: bool) -> None:
        """The run folder is locked; nothing is built yet."""

    def init_end(self, cfg: TrainConfig, parts: TrainingParts) -> None:
        """The training parts are built (and restored on resume); the loop has not started."""

    def run_start(self) -> None:
        """Before the first step of this process."""

    def epoch_start(self, epoch_num: int) -> None:
        """Before the epoch's first step (a resumed epoch starts again here)."""

    def step_end(self, step: int) -> None:
        """After each training step was queued (``step`` counts from 1). The device may still be running it: read
        nothing from it here unless you mean to wait (losses arrive through ``record``)."""

    def epoch_end(self, epoch_num: int) -> None:
        """After the epoch's last step, before its evaluation and checkpoint."""

    def eval_start(self, epoch_num: int) -> None:
        """Before an evaluation."""

    def eval_end(self, epoch_num: int, stats: dict[str, float]) -> None:
        """After an evaluation: ``stats`` = the 12 COCO numbers by name (``AP``, ``AP50``, ...)."""

    def record(self, record: dict[str, Any]) -> None:
        """Each record written to ``metrics.jsonl`` (``kind`` "train" every ``train.log_every`` steps, "eval")."""

    def run_end(self, status: str) -> None:
        """The run stops: ``status`` = "finished" | "target_reached" | "interrupted"."""


EVENTS = tuple(name for name in vars(TrainHook) if not name.startswith("_"))


class HookList:
    """Hooks called in order at each event."""

    def __init__(self, hooks: list[TrainHook]) -> None:
        for hook in hooks:
            if not isinstance(hook, TrainHook):
                raise TypeError(f"hooks: {hook!r} is not a TrainHook (subclass singleshot.engine.hooks.TrainHook)")
        self.hooks = list(hooks)

    def fire(self, event: str, *args: Any) -> None:
        if event not in EVENTS:  # a misspelt event would otherwise reach no hook, silently
            raise ValueError(f"unknown hook event {event!r}; events: {', '.join(EVENTS)}")
        for hook in self.hooks:
            getattr(hook, event)(*args)
