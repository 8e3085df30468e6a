"""Process-group set-up for torchrun and SLURM, DDP wrapping, and the few collectives the loop needs.

Launchers set the environment; we only read it:

* torchrun: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
* SLURM (``srun`` with one task per GPU): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the first host
  of ``SLURM_JOB_NODELIST`` as the master (port ``MASTER_PORT`` or 29500).

The backend is NCCL when the processes use CUDA and gloo on CPU.
"""

from __future__ import annotations

import datetime
import inspect
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from singleshot.accelerator import capabilities, in_process_group, rank_and_world_size, set_device
from singleshot.engine.failures import PeerLost


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, and the launcher."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "none" | "torchrun" | "slurm"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as ``gpu[003-005,010],cpu1`` -> ``gpu003`` (no ``scontrol``)."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    m = re.fullmatch(r"(.*?)\[([^\]]+)\](.*)", first)
    if not m:
        return first
    prefix, ranges, suffix = m.groups()
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def detect_environment(env: dict[str, str] | None = None) -> DistInfo:
    """Read the launcher's variables (torchrun first, then SLURM); a plain ``python`` run is rank 0 of 1."""
    env = dict(os.environ if env is None else env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), "slurm")
    return DistInfo()


def _slurm_master(env: dict[str, str]) -> str:
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    try:  # scontrol expands every node-list syntax; fall back to our parser where it is not installed
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return first_slurm_host(nodelist)


def restart_round_store(timeout_s: float | None = None, env: dict[str, str] | None = None) -> dist.Store | None:
    """The store for this torchrun restart round, its keys prefixed by the round; None outside torchrun's agent.

    torchrun's agent serves one TCPStore to every restart round while torch's ``env://`` rendezvous assumes a fresh
    one per round (torch 2.14, c10d rendezvous): a restarted rank then read the killed round's gloo addresses and
    failed ("connectFullMesh failed ... Connection refused", 5 times in 12 with a ten-line script; 0 in 10 with the
    prefix)."""
    env = dict(os.environ if env is None else env)
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "TORCHELASTIC_RESTART_COUNT" not in env:
        return None
    wait = datetime.timedelta(seconds=timeout_s if timeout_s is not None else 300)
    client = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=wait)
    return dist.PrefixStore(f"singleshot/round_{env['TORCHELASTIC_RESTART_COUNT']}", client)


def init_distributed(info: DistInfo, device: torch.device, timeout_s: float | None = None) -> None:
    """Join the process group (no-op for a single process). Sets the CUDA device from ``local_rank``.
    ``timeout_s``: how long a collective waits for the other ranks (None: torch's default)."""
    if not info.enabled or in_process_group():
        return
    if info.launcher == "slurm":
        os.environ.setdefault("MASTER_ADDR", _slurm_master(dict(os.environ)))
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", str(info.rank))
        os.environ.setdefault("WORLD_SIZE", str(info.world_size))
        os.environ.setdefault("LOCAL_RANK", str(info.local_rank))
    backend = capabilities(device).dist_backend
    set_device(device)
    timeout = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
    try:
        store = restart_round_store(timeout_s) if info.launcher == "torchrun" else None
        where = {} if store is None else {"store": store}
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, **timeout, **where)
    except (RuntimeError, ValueError) as exc:  # a peer that never answers, an address nobody listens on
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        what = re.sub(r"^\[[^\]]*\] ", "", str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        raise PeerLost(f"rank {info.rank} of {info.world_size} ({info.launcher}): could not join the process group "
                       f"({backend} via {where}): {what[:200]}") from exc  # fmt: skip


def cleanup_distributed() -> None:
    if in_process_group():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """DDP-wrap ``model`` for a multi-process run; unchanged otherwise."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type != "cpu" and device.index is not None else None
    # No buffer sync per forward: BN running statistics stay per rank during training and are averaged explicitly
    # before evaluation (average_bn_stats), as the MLPerf reference does; it also saves a broadcast per step.
    # (torch 2.14 renamed broadcast_buffers to forward_sync_buffers; both sync once at construction.)
    ddp = nn.parallel.DistributedDataParallel
    name = (
        "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
    )
    return ddp(model, device_ids=ids, **{name: False})


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks (in place; identity for one process)."""
    if in_process_group():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


@torch.no_grad()
def average_bn_stats(model: nn.Module) -> None:
    """Average BatchNorm running mean/var over ranks so every rank evaluates the same model."""
    if rank_and_world_size()[1] == 1:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            all_reduce_mean(module.running_mean)
            all_reduce_mean(module.running_var)


def barrier() -> None:
    if in_process_group():
        dist.barrier()


class Heartbeat:
    """Each rank's sign of life in the process group's store: every ``interval`` seconds a thread writes
    ``"<step> <beat>"`` under ``singleshot/alive/<rank>`` (``step()`` says the step; ``beat`` counts up). When a
    collective fails, :meth:`lost_peers` tells the ranks that stopped beating from those that are alive, and the step
    each one reached. Nothing is written per training step: the loop's speed does not depend on the store.

    The store is the process group's (torchrun's agent holds it, so it outlives any worker; with plain ``env://`` it
    lives in rank 0, and dies with it).
    """

    PREFIX = "singleshot/alive/"

    def __init__(self, rank: int, world_size: int, step: Callable[[], int], interval: float = 1.0) -> None:
        self.rank, self.world_size, self.step, self.interval = rank, world_size, step, interval
        self.store = _default_store()
        self._stop = threading.Event()
        self._beat = 0
        self._thread = threading.Thread(target=self._run, name="singleshot-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        if self.store is not None:
            self._write()
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _write(self) -> None:
        self._beat += 1
        self.store.set(f"{self.PREFIX}{self.rank}", f"{self.step()} {self._beat}")

    def _run(self) -> None:
        written, last = self.step(), time.monotonic()
        while not self._stop.wait(0.2):  # the step as it moves (5 writes/s at most), a beat at least every interval
            step = self.step()
            if step == written and time.monotonic() - last < self.interval:
                continue
            try:
                self._write()
            except Exception:  # the store is gone (e.g. with rank 0): nothing more to say
                return
            written, last = step, time.monotonic()

    def _read(self) -> dict[int, tuple[int, int]] | None:
        """rank -> (step, beat) for every rank that has beaten; None when the store cannot be reached."""
        out: dict[int, tuple[int, int]] = {}
        try:
            for rank in range(self.world_size):
                key = f"{self.PREFIX}{rank}"
                if self.store.check([key]):
                    step, beat = self.store.get(key).decode().split()
                    out[rank] = (int(step), int(beat))
        except Exception:
            return None
        return out

    def lost_peers(self) -> tuple[list[int], dict[int, int]] | None:
        """Read every rank's beat, wait 2.5 intervals, read again: (ranks that did not beat in between, the step
        each rank reached). None when the store cannot be reached."""
        if self.store is None:
            return None
        first = self._read()
        time.sleep(2.5 * self.interval)
        second = self._read()
        if first is None or second is None:
            return None
        lost = [r for r in range(self.world_size) if r != self.rank and (r not in second or second[r] == first.get(r))]
        steps = {r: second[r][0] for r in sorted(second)}
        steps[self.rank] = self.step()
        return lost, dict(sorted(steps.items()))


def _default_store() -> dist.Store | None:
    """The default process group's key-value store (torch keeps no public accessor), or None."""
    get = getattr(dist.distributed_c10d, "_get_default_store", None)
    try:
        return get() if get is not None and in_process_group() else None
    except Exception:
        return None


def lost_peer_message(rank: int, world_size: int, error: BaseException, found: tuple[list[int], dict[int, int]] | None,
                      timeout_s: float) -> str | None:  # fmt: skip
    """The one line for a collective that failed because a rank went missing, or None when every rank is alive
    (the failure is something else). ``found``: :meth:`Heartbeat.lost_peers`; None = the store itself is gone."""
    what = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    what = re.sub(r"^\[[^\]]*\] ", "", what).split(". ")[0][:160]  # gloo's first sentence, not its location
    if found is None:
        return (f"rank {rank} of {world_size}: lost contact with the other ranks and with the store of the process "
                f"group (rank 0 or the launcher is gone) ({what})")  # fmt: skip
    lost, steps = found
    if not lost:
        return None
    reached = ", ".join(f"rank {r}: {s}" for r, s in steps.items())
    silent = ", ".join(map(str, lost))
    return (f"rank {rank} of {world_size}: rank{'s' if len(lost) > 1 else ''} {silent} stopped responding (dead, or "
            f"hung for longer than train.dist_timeout={timeout_s:g} s) ({what}); steps reached: {reached}")  # fmt: skip
