"""Detector weights as a safetensors file: tensors only, plus a small JSON header saying what model they belong to.

The header's ``__metadata__`` holds the export metadata (:mod:`singleshot.inference.metadata`), one JSON-encoded
value per key, so ``safetensors.safe_open(path).metadata()`` is readable without singleshot. Reading needs no
unpickling at all, and the file is about half a training checkpoint (no optimizer state).
:func:`read_safetensors` returns the same dict as a singleshot checkpoint, so everything that reads checkpoints
(``Detector.from_checkpoint``, ``singleshot eval``/``predict``, ``build_model(..., weights=)``) reads these too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from singleshot._extras import require

SUFFIX = ".safetensors"


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """True for a ``.safetensors`` name, or a file that starts like one (8-byte header length, then ``{``)."""
    path = Path(path)
    if path.suffix.lower() == SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: Mapping[str, Any]
) -> Path:
    """Write ``state_dict`` (contiguous CPU copies; shared storage is fine) and ``metadata`` to ``path``."""
    require("safetensors", "export", "writing safetensors files")
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, os.fspath(path), metadata={k: json.dumps(v) for k, v in metadata.items()})
    return path


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header metadata of a safetensors file, JSON values decoded (other tools' plain strings kept)."""
    safe_open = require("safetensors", "export", "reading safetensors files").safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def read_safetensors(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A singleshot safetensors file as a singleshot checkpoint dict (``format``, ``model``, ``state_dict``,
    ``classes``, ``label_to_category_id``, ``export_metadata``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or the header lacks the fields that say which model the weights belong to.
    """
    require("safetensors", "export", "reading safetensors files")
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        meta = read_safetensors_metadata(path)
        state = load_file(os.fspath(path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for a corrupt header or body
        raise ValueError(f"cannot read safetensors file {path}: {exc}") from exc
    missing = [k for k in ("model", "num_classes", "classes") if k not in meta]
    if missing:
        raise ValueError(
            f"{path}: the safetensors header lacks {missing}; it was not written by singleshot export "
            "(the model name, class count and class names are needed to rebuild the detector)"
        )
    return {
        "format": "singleshot",
        "version": 1,
        "model": {"name": str(meta["model"]), "num_classes": int(meta["num_classes"]),
                  **({"image_size": int(meta["input"]["size"])} if "size" in (meta.get("input") or {}) else {})},
        "state_dict": state,
        "classes": list(meta["classes"]),
        "label_to_category_id": {int(k): int(v) for k, v in (meta.get("label_to_category_id") or {}).items()},
        "export_metadata": meta,
    }
