"""Shared helpers of the training-engine tests: a tiny synthetic COCO set and a tiny-run configuration."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from singleshot.data.synth import generate
from singleshot.engine.config import TrainConfig, load_config

TINY = {"num_train": 16, "num_val": 8, "image_size": (96, 72), "max_objects": 3, "seed": 3}


def tiny_dataset() -> Path:
    """16 train + 8 val images of 96x72 px, generated once per machine into the temp folder (atomic rename)."""
    final = Path(tempfile.gettempdir()) / "singleshot-test-tiny-v1"
    if (final / ".complete").exists():
        return final
    tmp = final.parent / f".{final.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    generate(tmp, **TINY)
    (tmp / ".complete").write_text("ok\n")
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_overrides(run_dir: Path, **extra: object) -> list[str]:
    """``key=value`` overrides for a few-second CPU run of ssd_tiny on :func:`tiny_dataset`."""
    data = tiny_dataset()
    values: dict[str, object] = {
        "data.train": str(data),
        "data.val": "null",
        "data.batch_size": 4,
        "data.val_batch_size": 8,
        "data.num_workers": 0,
        # The engine tests pin the recipe they were written for, whatever the default preset becomes.
        "optim.name": "sgd",
        "optim.lr": 0.02,
        "optim.weight_decay": 0.0005,
        "optim.no_decay_bn_bias": "false",
        "data.augment": "none",
        "train.ema_decay": "null",
        "schedule.name": "cosine",
        "schedule.warmup_steps": 2,
        "train.max_steps": 6,
        "train.deterministic": "true",
        "train.threads": 1,
        "train.log_every": 1,
        "train.progress": "none",
        "run.dir": str(run_dir),
        "run.tensorboard": "false",
        "run.report": "false",
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(run_dir: Path, **extra: object) -> TrainConfig:
    return load_config(None, tiny_overrides(run_dir, **extra))
