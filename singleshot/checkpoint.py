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

import errno
import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from singleshot.models import build_architecture

FORMAT = "singleshot"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is empty, corrupt, of another kind, or does not fit its declared architecture.

    The message is one line naming the file and what is wrong with it.
    """


def atomic_save(obj: Any, path: str | Path, previous: str | Path | None = None) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A reader (or a run killed at any moment, SIGKILL included) sees either the old file or the complete new one,
    never a half-written checkpoint. A full disk raises ``OSError(ENOSPC)`` naming ``path`` (torch reports it as a
    ``RuntimeError`` from its zip writer); the temporary file is removed and ``path`` is left as it was.
    ``previous``: once the new file is complete, the current ``path`` is kept under this name (training keeps
    ``last.prev.pt`` so that a resume has somewhere to fall back to if ``last.pt`` is later damaged).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.is_file():
            _keep_previous(path, Path(previous))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch's zip writer turns a failed write into a RuntimeError, or chains one to the OSError; either way the
        # caller gets one OSError with the errno (ENOSPC, EROFS, ...) and the checkpoint's name.
        chain, cur = [], exc
        while cur is not None and len(chain) < 8:
            chain.append(cur)
            cur = cur.__cause__ or cur.__context__
        os_error = next((e for e in chain if isinstance(e, OSError) and e.errno is not None), None)
        if os_error is None and any("No space left on device" in str(e) for e in chain):
            os_error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if os_error is not None and isinstance(exc, Exception):
            raise OSError(os_error.errno, os_error.strerror, str(path)) from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _keep_previous(path: Path, previous: Path) -> None:
    """``path`` -> ``previous`` by a hard link (``path`` never disappears), else by a rename."""
    link = previous.with_name(f".{previous.name}.link.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:  # no hard links on this file system
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def read_torch_file(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    weights_only: bool = True,
    safe_globals: Iterable[Any] = (),
) -> Any:
    """``torch.load`` with failures explained in one line naming the file.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty file; corrupt or truncated file (not a torch archive, a broken zip, random bytes);
            or, only for a readable pickle that holds Python objects beyond tensors and containers, a message that
            names the object and says that ``trust_pickle`` can load it from a trusted source.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "checkpoint not found", str(path))
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never completely written; delete it")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location=map_location, weights_only=weights_only)
    except OSError:
        raise  # permissions, I/O errors: the caller's error handling says them in words
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln), "")
        if detail:  # a well-formed pickle whose objects weights_only refuses
            detail = detail.split(" was not an allowed global")[0].removeprefix("WeightsUnpickler error: ")
            raise CheckpointError(
                f"cannot read {path} safely: it holds Python objects beyond tensors and containers ({detail}). "
                "If the file comes from a source you trust, load it with trust_pickle=True (CLI: --trust-pickle)."
            ) from exc
        raise CheckpointError(f"checkpoint {path} is corrupt: not a readable torch file ({_first_line(exc)})") from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, ... for truncated or foreign bytes
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].split(". ")[0] if text else ""
    return f"{type(exc).__name__}: {line[:160]}" if line else type(exc).__name__


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
        "model": {"name": spec.name, "num_classes": num_classes, "image_size": int(spec.image_size)},
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
    """Read a singleshot checkpoint; errors (:class:`CheckpointError`) name the file and what is wrong with it."""
    path = Path(path)
    obj = read_torch_file(path, map_location)
    if not is_singleshot_checkpoint(obj):
        raise CheckpointError(
            f"{path} is not a singleshot checkpoint (no format='singleshot' field); "
            "MLPerf and NVIDIA checkpoints are read by singleshot.interop"
        )
    return check_fields(obj, path)


REQUIRED_FIELDS = ("model", "state_dict", "classes")


def check_fields(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``ckpt`` itself when it holds every field a singleshot checkpoint must have; else a :class:`CheckpointError`
    naming the file and the missing fields."""
    missing = [key for key in REQUIRED_FIELDS if key not in ckpt]
    if missing:
        raise CheckpointError(f"singleshot checkpoint {path} lacks the field(s) {missing}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], source: str | Path | None = None) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (strict).

    Raises:
        CheckpointError: the header names an unknown model, or the weights are not those of the architecture the
            header names (e.g. an SSD300-ResNet-50 state dict under an ``ssd300_resnet34`` header); the message
            names ``source`` (the file) and the first mismatching keys.
    """
    where = f"checkpoint {source}" if source is not None else "the checkpoint"
    header = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else {}
    name, num_classes = header.get("name"), header.get("num_classes")
    image_size = header.get("image_size")  # absent in checkpoints written before sizes could change: the model's own
    if not isinstance(name, str) or not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise CheckpointError(f"{where}: field 'model' must hold a 'name' string and a 'num_classes' integer")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)):
        raise CheckpointError(f"{where}: field 'model.image_size' must be an integer, got {image_size!r}")
    try:
        model = build_architecture(name, num_classes=num_classes, image_size=image_size)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{where}: field 'model': {' '.join(str(exc).split())}") from exc
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: field 'state_dict' must be a dict of tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and getattr(state[k], "shape", None) != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} (first: {keys[0]})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(
            f"{where}: its header names {name} with {num_classes} classes, but its weights are of another "
            f"architecture ({'; '.join(parts)})"
        )
    model.load_state_dict(state, strict=True)
    return model
