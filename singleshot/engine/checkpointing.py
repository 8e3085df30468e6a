"""Full training state in a singleshot checkpoint, and the random-number-generator states that exact resume needs.

Everything is stored as tensors, numbers, strings, lists and dicts so that ``torch.load(weights_only=True)`` reads
it (no pickled Python objects). Files are written with :func:`singleshot.checkpoint.atomic_save`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from singleshot.checkpoint import atomic_save, load_checkpoint, make_checkpoint, unwrap
from singleshot.engine.config import config_diff, upgrade_keys
from singleshot.engine.ema import ModelEMA

PREVIOUS_LAST = "last.prev.pt"  # the last.pt before the newest one, kept as a fallback for resuming


class RunConfigMismatch(RuntimeError):
    """The run folder holds a run made with a different configuration."""


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain numbers."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only when the device count matches)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_training_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    classes: list[str],
    label_to_category_id: dict[int, int] | None,
    config: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    step: int,
    sampler: dict[str, int],
    state: dict[str, Any],
    previous: str | Path | None = None,
    ema: ModelEMA | None = None,
) -> Path:
    """Write model + full training state atomically.

    With ``ema``, the checkpoint's model (``state_dict``, what eval, predict and export load) is the weight average;
    the weights the optimizer steps go under ``ema["trained_state_dict"]`` for resuming.

    Args:
        epoch: the epoch in progress (0-based), i.e. the one ``sampler`` points into.
        step: optimizer steps taken so far.
        sampler: the training loader's position (``DetectionLoader.state_dict()``).
        state: loop bookkeeping (best mAP, bad-step counter, elapsed time, finished flag, ...).
        previous: keep the file ``path`` held until now under this name once the new one is complete.
    """
    averaging = {} if ema is None else {
        "ema": {"updates": ema.updates, "decay": ema.decay, "trained_state_dict": unwrap(model).state_dict()}
    }
    ckpt = make_checkpoint(
        unwrap(model if ema is None else ema.module),
        classes,
        label_to_category_id,
        config=config,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        epoch=int(epoch),
        step=int(step),
        sampler=dict(sampler),
        rng=get_rng_state(),
        train_state=dict(state),
        **averaging,
    )
    return atomic_save(ckpt, path, previous=previous)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_checkpoint`; errors name the file and the missing field."""
    ckpt = load_checkpoint(path)
    for key in ("config", "optimizer", "scheduler", "epoch", "step", "sampler", "rng"):
        if key not in ckpt:
            raise ValueError(f"checkpoint {path} has no training state (missing {key!r}); it cannot be resumed")
    if not isinstance(ckpt["config"], dict):
        raise ValueError(f"checkpoint {path}: field 'config' must be a mapping")
    return ckpt


class NoUsableCheckpoint(RuntimeError):
    """A run folder has checkpoints but none can be resumed from."""


def resume_point(
    run_dir: Path, config: dict[str, Any], mutable: set[str], set_aside: bool = False
) -> tuple[dict[str, Any] | None, str]:
    """``(checkpoint, note)``: the newest readable training checkpoint of ``run_dir``, checked against ``config``.

    Candidates are ``checkpoints/last.pt``, then the other ``checkpoints/*.pt`` files (``last.prev.pt``,
    ``best.pt``, ...) newest first; an empty, corrupt, foreign or state-less file is passed over and named in
    ``note`` (which says which file is used and why). Keys in ``mutable`` may differ (they change how a run is
    watched or how long it is, not what it computes); a key the saved config has under an earlier name
    (:data:`~singleshot.engine.config.RENAMED_KEYS`) is compared under its present one. With ``set_aside`` (the
    run's main process), a file passed over is renamed to ``<name>.unreadable`` when an older one is used, so that
    the next save does not keep it as ``last.prev.pt`` and the evidence stays for inspection. A folder with a
    ``config.yaml`` but no checkpoint yet (killed early) is checked the same way and starts over; an unreadable
    ``config.yaml`` there is ignored.

    Raises:
        RunConfigMismatch: naming the folder and the differing keys with old and new values.
        NoUsableCheckpoint: checkpoints exist but none is usable (each is named with its fault).
    """
    folder = run_dir / "checkpoints"
    files = sorted(folder.glob("*.pt"), key=lambda p: (p.name != "last.pt", -p.stat().st_mtime))
    ckpt, used, passed = None, None, []
    for path in files:
        try:
            ckpt = load_training_checkpoint(path)
        except (OSError, ValueError) as exc:
            passed.append(f"{path.name}: {' '.join(str(exc).split())}")
            continue
        used = path
        break
    if used is None and passed:
        raise NoUsableCheckpoint(
            f"run folder {run_dir}: no checkpoint can be resumed from ({'; '.join(passed)}). Move "
            f"{folder} away to start the run over, or pick another folder with run.name=NAME or run.dir=PATH"
        )
    note = ""
    if used is not None:
        old = ckpt["config"]
        note = f"resuming {run_dir} from checkpoints/{used.name}"
        if passed:
            note += f" (passed over {'; '.join(passed)})"
            for path in files[: files.index(used)] if set_aside else []:
                path.replace(path.with_name(path.name + ".unreadable"))
    elif (run_dir / "config.yaml").is_file():
        try:
            old = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict):
            return None, ""  # damaged and nothing to resume: the run starts over and rewrites it
    else:
        return None, ""
    old = upgrade_keys(old)  # a run saved before a key was renamed compares under the present names
    changed = [k for k in config_diff(old, config) if k not in mutable]
    if changed:
        details = "; ".join(f"{k}: {_lookup(old, k)!r} -> {_lookup(config, k)!r}" for k in changed[:8])
        raise RunConfigMismatch(
            f"run folder {run_dir} holds a run with a different configuration ({details}). "
            "Re-run with the same settings to resume it, give run.exist_ok=true to replace it with a fresh run, or "
            "pick another folder with run.dir=PATH (without run.dir, a changed configuration gets a new numbered "
            "folder by itself)."
        )
    return ckpt, note


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d
