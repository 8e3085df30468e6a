"""Process-group set-up for torchrun and SLURM, DDP wrapping, and the few collectives the loop needs.

Launchers set the environment; we only read it:

* torchrun: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
* SLURM (``srun`` with one task per GPU): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the first host
  of ``SLURM_JOB_NODELIST`` as the master (port ``MASTER_PORT`` or 29500).

The backend is NCCL when the processes use CUDA and gloo on CPU.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from singleshot.accelerator import capabilities, in_process_group, rank_and_world_size, set_device


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


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group (no-op for a single process). Sets the CUDA device from ``local_rank``."""
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
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


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
