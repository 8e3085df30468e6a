"""singleshot checkpoints: atomic writes, safe reads, and rebuilding a model from one.

A checkpoint is a dict::

    {"format": "singleshot", "version": 1,
     "model": {"name": str, "num_classes": int},
     "state_dict": {...}, "classes": [K names], "label_to_category_id": {label: category_id},
     # written by training, optional elsewhere:
     "config": {...}, "optimizer": {...}, "scheduler": {...}, "scaler": {...}, "epoch": int, "step": int, ...}

Only plain containers, numbers, strings and tensors go in, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from singleshot.models import build_model

FORMAT = "singleshot"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A reader (or a run killed at any moment, SIGKILL included) sees either the old file or the complete new one,
    never a half-written checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def make_checkpoint(
    model: nn.Module,
    classes: list[str],
    label_to_category_id: dict[int, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The model part of a checkpoint (``extra`` adds training state). ``model`` may be DDP/compiled-wrapped."""
    inner = unwrap(model)
    spec = inner.spec
    num_classes = inner.num_classes
    if len(classes) != num_classes - 1:
        raise ValueError(f"{len(classes)} class names given for a model with {num_classes - 1} foreground classes")
    if label_to_category_id is None:
        label_to_category_id = {i: i for i in range(1, num_classes)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": spec.name, "num_classes": num_classes},
        "state_dict": inner.state_dict(),
        "classes": list(classes),
        "label_to_category_id": {int(k): int(v) for k, v in label_to_category_id.items()},
        **extra,
    }


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def is_singleshot_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a singleshot checkpoint; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not is_singleshot_checkpoint(obj):
        raise ValueError(
            f"{path} is not a singleshot checkpoint (no format='singleshot' field); "
            "MLPerf and NVIDIA checkpoints are read by singleshot.interop"
        )
    for key in ("model", "state_dict", "classes"):
        if key not in obj:
            raise ValueError(f"checkpoint {path} lacks the field {key!r}")
    return obj


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (strict)."""
    model = build_model(ckpt["model"]["name"], num_classes=int(ckpt["model"]["num_classes"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model
