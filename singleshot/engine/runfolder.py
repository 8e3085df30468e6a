"""Run-folder housekeeping: one live run per folder (a lock), stale temporary files, atomic small files, and
``metrics.jsonl`` trimmed to the checkpoint a run resumes from.

The lock is an ``fcntl.flock`` on ``<run>/.lock``: the kernel drops it when the process ends, however it ends
(SIGKILL and machine crashes included), so a killed run never leaves a folder locked. The file holds the holder's
pid, host and start time only to say who holds it. Platforms without ``fcntl`` run without a lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import yaml

try:
    import fcntl
except ImportError:  # Windows: no advisory locks through fcntl; runs there go unlocked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """An exclusive, non-blocking lock on a run folder (rank 0 of a run takes it; other ranks share its folder).

    Raises:
        RunFolderBusy: from :meth:`acquire`, naming the folder and the holder (pid, host, start time).
        OSError: the folder cannot be created or written (read-only, full disk); the caller says it in words.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 -- held open for the run's lifetime
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise RunFolderBusy(
                    f"run folder {self.run_dir} is in use by a live run ({holder}); wait for it to end, stop it, or "
                    "pick another folder with run.name=NAME or run.dir=PATH"
                ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        # The file stays: unlinking it would let a process that opened the old inode lock a file nobody else sees.
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that :func:`singleshot.checkpoint.atomic_save` leaves when killed mid-write.

    Only call it while holding the run's lock: then no live writer owns them. Returns the files removed.
    """
    removed = []
    if folder.is_dir():
        for p in sorted(folder.glob(".*.tmp")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file so that readers see the old or the new content, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def trim_metrics(path: Path, step: int, last_eval_step: int) -> int:
    """Drop the ``metrics.jsonl`` records a resumed run will write again; returns how many were dropped.

    A run killed after its last checkpoint (at ``step``) had logged the steps after it, and maybe an evaluation;
    resuming replays them. Kept: records without a step, ``eval`` records up to ``last_eval_step`` (the last
    evaluation the checkpoint knows of), others up to ``step``. A line cut short by the kill is dropped too.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        rec_step = record.get("step") if isinstance(record, dict) else None
        limit = last_eval_step if isinstance(record, dict) and record.get("kind") == "eval" else step
        if isinstance(rec_step, int) and rec_step > limit:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
    return dropped


# ------------------------------------------------------------------------------------------------ which folder
def _saved_config(folder: Path) -> dict[str, Any] | None:
    """The configuration a run folder holds (its ``config.yaml``, written once set-up succeeded), None when it holds
    no run (missing, empty, or a run killed before its set-up ended: that one starts over, as resuming it would)."""
    try:
        data = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _differing(folder_config: dict[str, Any], config: dict[str, Any], mutable: set[str]) -> list[str]:
    from singleshot.engine.config import config_diff, upgrade_keys

    return [k for k in config_diff(upgrade_keys(folder_config), config) if k not in mutable]


# What replacing a run (run.exist_ok=true) removes: the state and records a fresh run would otherwise mix with.
RUN_STATE = ("checkpoints", "metrics.jsonl", "config.yaml", "tensorboard", "mlperf.log")


def choose_run_dir(run: Any, config: dict[str, Any], mutable: set[str]) -> tuple[Path, str, bool]:
    """``(folder, note, replace)``: where a run of ``config`` goes, a line saying why when it is not simply the folder
    named, and whether the run there must be replaced by a fresh one (``run.exist_ok``).

    ``run`` is the config's ``run`` section. ``run.dir`` is used exactly. Otherwise ``root/name``, ``root/name2``,
    ``root/name3``, ... are searched in order: the first that holds a run of the same configuration (keys in
    ``mutable`` aside) is resumed (unless ``run.resume`` is false), else the first that holds no run starts one.
    ``run.exist_ok`` keeps ``root/name`` whatever it holds: the same configuration resumes (with ``run.resume``), any
    other is replaced. Decided from the folders' ``config.yaml`` files only, before anything is written; two processes
    that pick the same new folder at once are told apart by the run lock.
    """
    if run.dir:
        folder = Path(run.dir)
        saved = _saved_config(folder)
        if run.exist_ok and saved is not None and (_differing(saved, config, mutable) or not run.resume):
            return folder, f"run.exist_ok=true: replacing the run in {folder} with a fresh one", True
        return folder, "", False
    base = Path(run.root) / run.name
    if run.exist_ok:
        saved = _saved_config(base)
        if saved is not None and (_differing(saved, config, mutable) or not run.resume):
            why = "another configuration" if _differing(saved, config, mutable) else "run.resume=false"
            return base, f"run.exist_ok=true: replacing the run in {base} ({why}) with a fresh one", True
        return base, "", False
    first_other: tuple[Path, list[str]] | None = None
    k = 1
    while True:
        folder = base if k == 1 else base.with_name(f"{run.name}{k}")
        saved = _saved_config(folder)
        if saved is None:
            break
        diff = _differing(saved, config, mutable)
        if not diff and run.resume:
            return folder, "", False
        if first_other is None:
            first_other = (folder, diff)
        k += 1
    if folder == base:
        return folder, "", False
    if not run.resume:
        return folder, f"run.resume=false: starting a new run in {folder}", False
    diff = first_other[1] if first_other else []
    keys = ", ".join(diff[:4]) + (", ..." if len(diff) > 4 else "") + (" differs" if len(diff) == 1 else " differ")
    where = first_other[0] if first_other else base
    return folder, (f"{where} holds a run with another configuration ({keys}): starting {folder} (run.exist_ok"
                    f"=true replaces the run in {base} instead)"), False


def clear_run_state(folder: Path) -> None:
    """Remove what :data:`RUN_STATE` names from ``folder`` (the run being replaced); the rest is left."""
    import shutil

    for name in RUN_STATE:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
