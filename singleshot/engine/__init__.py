"""The training engine: typed config, schedules, optimizer, distributed set-up, checkpointing, the loop."""

from singleshot.engine.config import TrainConfig, apply_overrides, load_config
from singleshot.engine.trainer import Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "apply_overrides", "load_config", "train"]
