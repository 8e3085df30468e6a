"""MLPerf Training logging (``mlperf-logging``'s ``mllog``) for the SSD benchmark.

Emits the events and hyperparameter keys the MLPerf SSD rules require (see docs RECIPES.md): init/run start and
stop (with ``status``), block/epoch starts and stops numbered from 1, eval start/stop/accuracy with ``epoch_num``,
seed, batch size, sample counts, the learning-rate schedule keys and the submission keys. Only rank 0 writes.
:class:`MLPerfHook` maps the training run's events (engine/hooks.py) to these keys, so the loop holds no MLPerf
lines; with logging off, :class:`MLPerfLogger` is a no-op.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from singleshot._extras import require
from singleshot.engine.hooks import TrainHook

if TYPE_CHECKING:
    from singleshot.engine.build import TrainingParts
    from singleshot.engine.config import TrainConfig


class MLPerfLogger:
    """Thin wrapper over ``mllog.get_mllogger()`` writing to one file; every method is a no-op when disabled."""

    def __init__(self, path: str | Path | None, enabled: bool) -> None:
        self.enabled = enabled and path is not None
        self._log: Any = None
        if not self.enabled:
            return
        mllog = require("mlperf_logging.mllog", "mlperf", "run.mlperf_log=true")
        logger = logging.getLogger(f"singleshot.mlperf.{Path(path).resolve()}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if not logger.handlers:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            logger.addHandler(logging.FileHandler(path))
        mllog.config(logger=logger, default_stack_offset=2)
        self._log = mllog.get_mllogger()

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.enabled:
            self._log.event(key=key, value=value, metadata=metadata or None)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.enabled:
            self._log.start(key=key, value=value, metadata=metadata or None)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.enabled:
            self._log.end(key=key, value=value, metadata=metadata or None)

    def log_hyperparameters(
        self,
        *,
        seed: int,
        global_batch_size: int,
        train_samples: int,
        eval_samples: int,
        base_lr: float,
        weight_decay: float,
        warmup_steps: int,
        warmup_factor: float,
        decay_boundary_epochs: list[float],
        crop_attempts: int,
        bn_span: int,
    ) -> None:
        """The submission and hyperparameter keys, logged once between init_start and init_stop."""
        if not self.enabled:
            return
        C = require("mlperf_logging.mllog.constants", "mlperf", "run.mlperf_log=true")
        for key, value in (
            (C.SUBMISSION_BENCHMARK, C.SSD),
            (C.SUBMISSION_ORG, "singleshot"),
            (C.SUBMISSION_DIVISION, "closed"),
            (C.SUBMISSION_STATUS, "research"),
            (C.SUBMISSION_PLATFORM, "singleshot"),
            (C.CACHE_CLEAR, True),
            (C.SEED, seed),
            (C.GLOBAL_BATCH_SIZE, global_batch_size),
            (C.TRAIN_SAMPLES, train_samples),
            (C.EVAL_SAMPLES, eval_samples),
            ("opt_base_learning_rate", base_lr),
            (C.OPT_WEIGHT_DECAY, weight_decay),
            (C.OPT_LR_WARMUP_STEPS, warmup_steps),
            (C.OPT_LR_WARMUP_FACTOR, warmup_factor),
            (C.OPT_LR_DECAY_BOUNDARY_EPOCHS, decay_boundary_epochs),
            (C.MAX_SAMPLES, crop_attempts),
            (C.MODEL_BN_SPAN, bn_span),
            (C.GRADIENT_ACCUMULATION_STEPS, 1),
        ):
            self.event(key, value)


# The events the loop logs: MLPerf's key names (``mlperf_logging.mllog.constants`` holds the same strings; they are
# spelled out here so that the loop runs without the optional package when logging is off).
INIT_START, INIT_STOP = "init_start", "init_stop"
RUN_START, RUN_STOP = "run_start", "run_stop"
BLOCK_START, BLOCK_STOP = "block_start", "block_stop"
EPOCH_START, EPOCH_STOP = "epoch_start", "epoch_stop"
EVAL_START, EVAL_STOP, EVAL_ACCURACY = "eval_start", "eval_stop", "eval_accuracy"
SUCCESS, ABORTED = "success", "aborted"


class MLPerfHook(TrainHook):
    """The MLPerf events of a training run, written by rank 0 to ``<run>/mlperf.log`` when ``enabled``.

    ``run_stop``'s status is "success" when the quality target (``target_map``) was reached, or, for a run without
    a target, when it finished; else "aborted" (a target missed, a signal)."""

    def __init__(self, enabled: bool, target_map: float | None) -> None:
        self.enabled, self.target_map = enabled, target_map
        self.log = MLPerfLogger(None, False)

    def init_start(self, run_dir: Path, main: bool) -> None:
        # Opened here, after the run folder's lock: a refused start writes nothing into a live run's folder.
        self.log = MLPerfLogger(run_dir / "mlperf.log", self.enabled and main)
        self.log.start(INIT_START)

    def init_end(self, cfg: TrainConfig, parts: TrainingParts) -> None:
        data = parts.data
        self.log.log_hyperparameters(
            seed=cfg.train.seed, global_batch_size=parts.global_batch, train_samples=len(data.train),
            eval_samples=len(data.val) if data.val is not None else 0, base_lr=parts.base_lr,
            weight_decay=cfg.optim.weight_decay, warmup_steps=parts.schedule.warmup_steps,
            warmup_factor=cfg.schedule.warmup_start_factor, decay_boundary_epochs=list(cfg.schedule.milestones),
            crop_attempts=cfg.data.crop_attempts, bn_span=cfg.data.batch_size,
        )  # fmt: skip
        self.log.end(INIT_STOP)

    def run_start(self) -> None:
        self.log.start(RUN_START)

    def epoch_start(self, epoch_num: int) -> None:
        self.log.start(BLOCK_START, first_epoch_num=epoch_num, epoch_count=1)
        self.log.start(EPOCH_START, epoch_num=epoch_num)

    def epoch_end(self, epoch_num: int) -> None:
        self.log.end(EPOCH_STOP, epoch_num=epoch_num)
        self.log.end(BLOCK_STOP, first_epoch_num=epoch_num)

    def eval_start(self, epoch_num: int) -> None:
        self.log.start(EVAL_START, epoch_num=epoch_num)

    def eval_end(self, epoch_num: int, stats: dict[str, float]) -> None:
        self.log.end(EVAL_STOP, epoch_num=epoch_num)
        self.log.event(EVAL_ACCURACY, stats["AP"], epoch_num=epoch_num)

    def run_end(self, status: str) -> None:
        ok = status == "target_reached" or (status == "finished" and self.target_map is None)
        self.log.end(RUN_STOP, status=SUCCESS if ok else ABORTED)
