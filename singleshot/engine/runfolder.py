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
from typing import IO

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
