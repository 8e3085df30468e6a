"""The training engine: typed config, schedules, optimizer, distributed set-up, checkpointing, the loop."""

import importlib
from typing import Any

# Names are imported on first use (PEP 562) so that `singleshot --help` and the config tools start without
# loading torch; `from singleshot... import X` works as before.
_LAZY = {
    "TrainConfig": "singleshot.engine.config",
    "apply_overrides": "singleshot.engine.config",
    "load_config": "singleshot.engine.config",
    "Trainer": "singleshot.engine.trainer",
    "TrainResult": "singleshot.engine.trainer",
    "train": "singleshot.engine.trainer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["TrainConfig", "TrainResult", "Trainer", "apply_overrides", "load_config", "train"]
