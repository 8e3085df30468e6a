"""The training engine: typed config, schedules, optimizer, distributed set-up, checkpointing, the loop."""

from singleshot._lazy import lazy_exports

# Names are imported on first use (PEP 562) so that `singleshot --help` and the config tools start without
# loading torch; `from singleshot... import X` imports X's module at that moment.
_LAZY = {
    "TrainConfig": "singleshot.engine.config",
    "apply_overrides": "singleshot.engine.config",
    "load_config": "singleshot.engine.config",
    "Trainer": "singleshot.engine.trainer",
    "TrainResult": "singleshot.engine.trainer",
    "train": "singleshot.engine.trainer",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = ["TrainConfig", "TrainResult", "Trainer", "apply_overrides", "load_config", "train"]
