"""MLPerf Training logging (``mlperf-logging``'s ``mllog``) for the SSD benchmark.

Emits the events and hyperparameter keys the MLPerf SSD rules require (see docs RECIPES.md): init/run start and
stop (with ``status``), block/epoch starts and stops numbered from 1, eval start/stop/accuracy with ``epoch_num``,
seed, batch size, sample counts, the learning-rate schedule keys and the submission keys. Only rank 0 writes.
With logging off, :class:`MLPerfLogger` is a no-op, so the loop calls it unconditionally.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from singleshot._extras import require


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
        max_samples: int,
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
            (C.MAX_SAMPLES, max_samples),
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
