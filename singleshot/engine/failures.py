"""Failures a run cannot go on from, turned into one line that says what happened and the way out.

- :class:`OutOfMemory`: the device (``torch.OutOfMemoryError``) or the host (``MemoryError``, from the training
  process or re-raised from a loader worker) ran out of memory. The line names the step, the batch size, the device
  and its memory (total, and the peak this process used), and the checkpoint that is intact.
- :class:`LoaderWorkerDied`: a data loader worker process ended without a Python error (killed, e.g. by the kernel's
  out-of-memory killer, or crashed): the line names its pid and how it ended when known.
- :class:`PeerLost`: several processes, and a collective failed because a rank died or hung past
  ``train.dist_timeout``: the line names the rank(s) and the step every rank reached.

Both leave the run's checkpoints as they were (nothing is written after the failure); the CLI exits with 1.
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

import torch

GiB = 1024**3
# torch >= 2.5 has torch.OutOfMemoryError (the CUDA one is an alias of it); older: torch.cuda.OutOfMemoryError.
DEVICE_OOM: type[BaseException] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_WORKER_DIED = re.compile(r"DataLoader worker \(pid\(?s?\)? ?([\d, ]+)\) (exited unexpectedly|is killed by signal)")


class OutOfMemory(RuntimeError):
    """The device or the host ran out of memory (see the module's docstring)."""


class LoaderWorkerDied(RuntimeError):
    """A data loader worker process died (see the module's docstring)."""


class PeerLost(RuntimeError):
    """Several processes: a collective failed because a rank died or hung past ``train.dist_timeout``
    (:class:`~singleshot.engine.distributed.Heartbeat` tells which)."""


def memory_seen(device: torch.device) -> str:
    """``"cuda:0 (NVIDIA H200: 139.8 GiB, this process peaked at 131.2 GiB)"`` or the host's equivalent."""
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        peak = torch.cuda.max_memory_reserved(device) / GiB
        return f"{device} ({props.name}: {props.total_memory / GiB:.1f} GiB, this process peaked at {peak:.1f} GiB)"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB  # Linux: kilobytes
    return f"{device} (host memory {total:.1f} GiB, this process peaked at {peak:.1f} GiB resident)"


def out_of_memory_message(
    *, step: int, batch_size: int, world_size: int, image_size: int, device: torch.device, checkpoint: str
) -> str:
    """The one line for an out-of-memory failure at ``step`` (``checkpoint``: what is intact, said as is)."""
    smaller = max(1, batch_size // 2)
    per = f" per process ({batch_size * world_size} in all)" if world_size > 1 else ""
    return (
        f"out of memory at step {step + 1} with data.batch_size={batch_size}{per} at {image_size} px on "
        f"{memory_seen(device)}; lower data.batch_size (e.g. data.batch_size={smaller}) or model.image_size (a new "
        f"run; gradient accumulation is not available); {checkpoint}"
    )


def worker_died_message(error: BaseException, *, step: int, num_workers: int, checkpoint: str) -> str | None:
    """The one line for a dead loader worker, or None when ``error`` is not torch's report of one."""
    found = _WORKER_DIED.search(str(error))
    if found is None:
        return None
    pids, text = found.group(1).strip(), str(error)
    signal_name = re.search(r"killed by signal: (\w+)", text)
    exit_code = re.search(r"exit code (-?\d+)", text)
    cause = (f"killed by signal {signal_name.group(1)}" if signal_name
             else f"exit code {exit_code.group(1)}" if exit_code else "it exited")  # fmt: skip
    return (
        f"a data loader worker (pid {pids}) died at step {step + 1} ({cause}, without a Python error: killed from "
        f"outside, or by the kernel when memory ran out); {checkpoint}; re-run the same command to resume, with "
        f"fewer data.num_workers (now {num_workers}) if memory is short"
    )


def checkpoint_note(path: Path, step: int | None) -> str:
    """What a failure leaves: ``"the last checkpoint (P, step N) is intact"`` or that there is none yet."""
    if step is None or not path.is_file():
        return f"no checkpoint was written yet ({path} does not exist)"
    return f"the last checkpoint ({path}, step {step}) is intact"
