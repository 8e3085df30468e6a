"""Reading any supported checkpoint file as a singleshot checkpoint: singleshot, MLPerf or NVIDIA SSD300."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import torch

from singleshot.checkpoint import CheckpointError, check_fields, read_torch_file
from singleshot.interop.convert import InteropError, detect_kind, from_foreign
from singleshot.interop.keymaps import FORMATS
from singleshot.safetensors_io import is_safetensors, read_safetensors

KINDS = ("singleshot", *FORMATS)


def load_file(path: str | Path, map_location: str | torch.device = "cpu", trust_pickle: bool = False) -> Any:
    """``torch.load`` a checkpoint file safely (``weights_only``) and explain failures, naming the file.

    ``collections.Counter`` is allowed because the references save ``MultiStepLR`` state, whose milestones are one.
    ``trust_pickle=True`` lifts the ``weights_only`` restriction: only for files from a source you trust, since
    unpickling can run arbitrary code.
    """
    try:
        return read_torch_file(path, map_location, weights_only=not trust_pickle, safe_globals=[collections.Counter])
    except CheckpointError as exc:  # this module's callers catch InteropError; keep the one-line message
        raise InteropError(str(exc)) from exc


def read_checkpoint(
    path: str | Path,
    kind: str | None = None,
    *,
    map_location: str | torch.device = "cpu",
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Read a singleshot, MLPerf SSD300-ResNet-34 or NVIDIA SSD300 v1.1 checkpoint as a singleshot checkpoint.

    The kind is detected from the keys (``{"model": state_dict, ...}`` or a bare state dict, DDP ``module.``
    prefixes allowed); foreign checkpoints are converted in memory with :func:`singleshot.interop.from_foreign`
    (COCO class names and ``label_to_category_id`` for 81-class models). Singleshot checkpoints are returned as
    stored.

    Args:
        path: the checkpoint file.
        kind: if given ("singleshot", "mlperf" or "nvidia"), the file must be of this kind.
        map_location: where tensors are loaded (default CPU).
        trust_pickle: allow arbitrary pickled objects (see :func:`load_file`).
    Returns:
        ``{"format": "singleshot", "model": {"name", "num_classes"}, "state_dict", "classes",
        "label_to_category_id", ...}``; rebuild the model with :func:`singleshot.checkpoint.model_from_checkpoint`.
    Raises:
        FileNotFoundError: no such file.
        InteropError (a ``ValueError``): unreadable file, unknown kind, a kind other than ``kind``, or a state dict
            that does not match the architecture (the message lists the keys).
    """
    if kind is not None and kind not in KINDS:
        raise InteropError(f"unknown checkpoint kind {kind!r}; choose from {', '.join(KINDS)}")
    if kind in (None, "singleshot") and is_safetensors(path):  # `singleshot export --format safetensors`
        try:
            return read_safetensors(path, map_location)
        except ValueError as exc:
            raise InteropError(str(exc)) from exc
    obj = load_file(path, map_location, trust_pickle)
    found = detect_kind(obj)
    if found == "unknown":
        raise InteropError(
            f"{path}: not a singleshot, MLPerf SSD300-ResNet-34 or NVIDIA SSD300 checkpoint ({_peek(obj)})"
        )
    if kind is not None and found != kind:
        raise InteropError(f"{path}: expected a {kind} checkpoint but this is a {found} checkpoint")
    if found == "singleshot":
        try:
            return check_fields(obj, path)
        except CheckpointError as exc:  # this module's callers catch InteropError
            raise InteropError(str(exc)) from exc
    return from_foreign(obj, found, source=str(path))


def _peek(obj: Any) -> str:
    if not isinstance(obj, dict):
        return f"holds a {type(obj).__name__}"
    inner = obj.get("model") if isinstance(obj.get("model"), dict) else obj
    keys = list(inner)[:5]
    return f"first keys: {', '.join(map(str, keys))}" if keys else "empty dict"
