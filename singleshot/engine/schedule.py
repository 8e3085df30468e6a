"""Learning-rate schedules of the published recipes: linear warmup, then multistep or cosine decay.

The schedule is a pure function of the optimizer step, so its only state is the step counter (which makes resume
exact). Epoch quantities (milestones, warmup epochs) are converted to steps with the run's steps per epoch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int, scale: bool = True) -> float:
    """The linear scaling rule: ``base_lr * global_batch / reference_batch`` (MLPerf and NVIDIA recipes)."""
    return base_lr * global_batch / reference_batch if scale else base_lr


@dataclass
class WarmupSchedule:
    """lr(step) = peak_lr * warmup(step) * decay(step).

    Attributes:
        peak_lr: the (already scaled) base learning rate.
        total_steps: length of the run (cosine decays to ``min_factor`` at this step).
        warmup_steps: linear ramp from ``warmup_start_factor * peak_lr`` at step 0 to ``peak_lr`` at this step.
        kind: "multistep" | "cosine" | "constant".
        milestones: multistep boundaries in steps; the lr is multiplied by ``gamma`` after each.
    """

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start_factor: float = 0.0
    kind: str = "multistep"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_factor: float = 0.0
    after_warmup: str = "peak"  # "peak" | "held" | "held_decayed" (see ScheduleConfig.after_warmup)

    def _ramp(self, step: int) -> float:
        return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps

    def factor(self, step: int) -> float:
        """Multiplier of ``peak_lr`` for the optimizer step ``step`` (0-based)."""
        warm = 1.0
        decays = sum(step >= m for m in self.milestones) if self.kind == "multistep" else 0
        if self.warmup_steps > 0 and step < self.warmup_steps:
            warm = self._ramp(step)
        elif self.warmup_steps > 0 and self.after_warmup != "peak":
            # The references set the lr during the warmup only: the last warmup value stays until a decay sets the
            # lr again (MLPerf: base x gamma^k; NVIDIA's MultiStepLR scales what the warmup left).
            held = self._ramp(self.warmup_steps - 1)
            ended_with = sum(self.warmup_steps - 1 >= m for m in self.milestones) if self.kind == "multistep" else 0
            warm = held if self.after_warmup == "held_decayed" or decays == ended_with else 1.0
        if self.kind == "multistep":
            decay = self.gamma ** decays
        elif self.kind == "cosine":
            # Cosine over the steps after warmup, as the SSD320 TF recipe does.
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            decay = self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        else:
            decay = 1.0
        return warm * decay

    def lr(self, step: int) -> float:
        return self.peak_lr * self.factor(step)


class LRScheduler(LambdaLR):
    """``torch.optim.lr_scheduler.LambdaLR`` over :meth:`WarmupSchedule.factor`, with ``schedule.peak_lr`` as every
    group's base rate (whatever the optimizer was built with); :meth:`step` after each optimizer step.

    ``state_dict`` holds the step counter only (``{"step_count": n}``): the schedule itself is rebuilt from the
    config on resume, so a resumed run may change it (e.g. ``train.epochs``), which LambdaLR's full state (base
    rates and the last rates) would override.
    """

    def __init__(self, optimizer: Optimizer, schedule: WarmupSchedule) -> None:
        self.schedule = schedule
        for group in optimizer.param_groups:
            group["initial_lr"] = schedule.peak_lr
        super().__init__(optimizer, lambda step: schedule.factor(step), last_epoch=-1)

    def step(self) -> None:  # type: ignore[override]
        # The schedule counts steps taken, skipped ones included (a non-finite loss, an fp16 overflow that made
        # GradScaler skip optimizer.step()): torch's warning about stepping before the optimizer does not apply.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            super().step()

    @property
    def step_count(self) -> int:
        """Optimizer steps taken (the schedule's position)."""
        return self.last_epoch

    def lr(self) -> float:
        """The current learning rate (every group has the same)."""
        return self.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state["step_count"])
        factor = self.schedule.factor(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_schedule(
    *,
    kind: str,
    peak_lr: float,
    steps_per_epoch: int,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.0,
    milestones_epochs: list[float] | tuple[float, ...] = (),
    gamma: float = 0.1,
    min_factor: float = 0.0,
    train_size: int | None = None,
    global_batch: int | None = None,
    after_warmup: str = "peak",
    epochs: EpochLengths | None = None,
) -> WarmupSchedule:
    """A :class:`WarmupSchedule` from epoch-based recipe numbers (warmup: the longer of steps and epochs).

    Warmup epochs become ``int(warmup_epochs * train_size / global_batch)`` steps, as the MLPerf reference computes
    them (not ``warmup_epochs * steps_per_epoch``, which rounds the epoch down first and can be a step longer);
    without ``train_size``/``global_batch``, ``int(warmup_epochs * steps_per_epoch)``.
    """
    if warmup_epochs and train_size and global_batch:
        epoch_warmup = int(warmup_epochs * train_size / global_batch)
    else:
        epoch_warmup = int(warmup_epochs * steps_per_epoch)
    warm = max(int(warmup_steps), epoch_warmup)
    return WarmupSchedule(
        peak_lr=peak_lr,
        total_steps=total_steps,
        warmup_steps=warm,
        warmup_start_factor=warmup_start_factor,
        kind=kind,
        milestones=tuple(
            epochs.to_steps(m) if epochs is not None else round(m * steps_per_epoch) for m in milestones_epochs
        ),
        gamma=gamma,
        min_factor=min_factor,
        after_warmup=after_warmup,
    )


def epoch_steps(images: int, global_batch: int, last_batch: str = "drop") -> int:
    """Optimizer steps per epoch: ``images // global_batch`` when the last incomplete batch is dropped, else
    ``ceil(images / global_batch)`` (``"pad"``; what the MLPerf reference's loader gives, ``drop_last`` off, which
    equals ``ceil(ceil(images / ranks) / batch)`` per rank with ``DistributedSampler``)."""
    return -(-images // global_batch) if last_batch == "pad" else images // global_batch


class EpochLengths:
    """Optimizer steps per epoch: the same for every epoch (``steps``), or NVIDIA v1.1's iterator count
    (:meth:`dali_counter`), which varies by a step from epoch to epoch. Converts epoch quantities of a recipe
    (length of the run, milestones, evaluation epochs) to steps."""

    def __init__(self, steps: int, counts: Callable[[int], list[int]] | None = None) -> None:
        self._steps, self._counts = steps, counts
        self._cache: list[int] = []
        self.kind = "constant" if counts is None else "dali_counter"

    @classmethod
    def dali_counter(cls, samples: float, batch: int) -> EpochLengths:
        """NVIDIA v1.1 (``ssd/coco_pipeline.py`` ``DALICOCOIterator``): an epoch ends once the samples counted
        (``batch`` per step per process) exceed ``samples`` (per process: the annotation file's image count / ranks,
        118287 / ranks on COCO); the batch fetched when the iterator is built counts in the first epoch, and each
        epoch's overshoot carries into the next (``counter % size``)."""

        def counts(n: int) -> list[int]:
            out, counter = [], float(batch)
            for epoch in range(n):
                steps = 1 if epoch == 0 else 0  # the first batch, prefetched at construction
                while counter <= samples:
                    steps += 1
                    counter += batch
                out.append(steps)
                counter = counter % samples  # reset() after the epoch
            return out

        return cls(counts(1)[0], counts)

    def steps(self, epoch: int) -> int:
        """Steps of ``epoch`` (0-based)."""
        if self._counts is None:
            return self._steps
        if epoch >= len(self._cache):
            self._cache = self._counts(max(epoch + 1, 2 * len(self._cache)))
        return self._cache[epoch]

    def start(self, epoch: int) -> int:
        """Steps before ``epoch`` (0-based) begins."""
        if self._counts is None:
            return epoch * self._steps
        self.steps(epoch)
        return sum(self._cache[:epoch])

    def to_steps(self, epochs: float) -> int:
        """``epochs`` (may be fractional) as a step count: whole epochs' steps plus the fraction of the next, rounded
        up (``ceil(epochs x steps)`` for constant epochs)."""
        whole = math.floor(epochs)
        return self.start(whole) + math.ceil(round((epochs - whole) * self.steps(whole), 9))

    def epoch_of(self, step: int) -> int:
        """The 0-based epoch that step ``step`` (0-based) falls in."""
        if self._counts is None:
            return step // max(1, self._steps)
        epoch = 0
        while self.start(epoch + 1) <= step:
            epoch += 1
        return epoch
