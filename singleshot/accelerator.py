"""Accelerators: the one place that knows which device types exist and what each can do.

Devices are CUDA (what this project's GPU checks run on), Intel XPU, Apple MPS, Habana HPU (Gaudi, where Intel Habana
runs its port of the MLPerf SSD: HabanaAI/Model-References ``PyTorch/computer_vision/detection/mlcommons/SSD``) or the
CPU, found through ``torch.accelerator`` where torch has it (2.6 and later), else through ``torch.<type>``. The rest
of the package asks for a capability (:func:`capabilities`: gradient scaling, the process-group backend,
channels-last, pinned memory, cuDNN, DALI) or calls :func:`synchronize`, instead of branching on
``device.type == "cuda"``. CPU stays the tested fallback; the capability table for the other types follows their
PyTorch support and is exercised on CUDA by ``scripts/gpu_check.sh``. :func:`in_process_group` and
:func:`rank_and_world_size` say where this process stands in ``torch.distributed``, for every layer that shards or
gathers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

ACCELERATOR_TYPES = ("cuda", "xpu", "mps", "hpu")


def _module(device_type: str) -> object | None:
    return getattr(torch, device_type, None)


def is_available(device_type: str) -> bool:
    """Whether this process can use devices of ``device_type`` ("cpu" always)."""
    if device_type == "cpu":
        return True
    if device_type == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    module = _module(device_type)
    check = getattr(module, "is_available", None)
    return bool(check()) if callable(check) else False


def current_accelerator() -> str | None:
    """The type of this machine's accelerator ("cuda", "xpu", "mps", "hpu"), or None for a CPU-only machine."""
    api = getattr(torch, "accelerator", None)
    if api is not None and hasattr(api, "current_accelerator"):  # torch >= 2.6
        device = api.current_accelerator() if api.is_available() else None
        return device.type if device is not None else None
    return next((t for t in ACCELERATOR_TYPES if is_available(t)), None)


def default_device(local_rank: int = 0) -> torch.device:
    """This process's accelerator (``<type>:local_rank``; MPS has one device), else the CPU."""
    kind = current_accelerator()
    if kind is None:
        return torch.device("cpu")
    return torch.device(kind) if kind == "mps" else torch.device(kind, local_rank)


def resolve_device(name: str, local_rank: int = 0, key: str = "device") -> torch.device:
    """``name`` = "auto" (:func:`default_device`), "cpu", or a device type with an optional index ("cuda",
    "cuda:1", "xpu", ...); a type without an index gets ``local_rank``. Raises ``ValueError`` naming ``key`` for an
    unknown or unavailable device."""
    if name == "auto":
        return default_device(local_rank)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{key}={name!r} is not a device; use auto, cpu, cuda, cuda:N, xpu, mps or hpu") from None
    if not is_available(device.type):
        found = current_accelerator()
        raise ValueError(f"{key}={name} but {device.type} is not available here"
                         f"{f' (this machine has {found})' if found else ''}; use {key}=auto or {key}=cpu")
    if device.index is None and device.type not in ("cpu", "mps"):
        device = torch.device(device.type, local_rank)
    return device


def synchronize(device: torch.device | None = None) -> None:
    """Wait for the work queued on ``device`` (default: the current accelerator, if any); a no-op on the CPU."""
    if device is not None and device.type == "cpu":
        return
    current = current_accelerator()
    kind = device.type if device is not None else current
    if kind is None:
        return
    api = getattr(torch, "accelerator", None)
    if api is not None and hasattr(api, "synchronize") and kind == current:
        api.synchronize(device)
        return
    sync = getattr(_module(kind), "synchronize", None)
    if callable(sync):
        sync()


def set_device(device: torch.device) -> None:
    """Make ``device`` this process's current device of its type (before a process group or CUDA graphs)."""
    if device.type in ("cpu", "mps") or device.index is None:
        return
    setter = getattr(_module(device.type), "set_device", None)
    if callable(setter):
        setter(device)


def in_process_group() -> bool:
    """Whether this process has joined a ``torch.distributed`` process group (False on a torch built without
    distributed support)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` in this process's ``torch.distributed`` process group; ``(0, 1)`` outside one."""
    return (dist.get_rank(), dist.get_world_size()) if in_process_group() else (0, 1)


@dataclass(frozen=True)
class Capabilities:
    """What a device type supports, for the decisions the engine makes once.

    Attributes:
        fp16_training: fp16 autocast with a ``GradScaler`` (what ``precision=auto`` picks on it).
        bf16_training: bf16 autocast trains faster than fp32 there (what ``precision=auto`` picks for training
            where fp16 is not available): CPUs with AMX tiles (oneDNN runs bf16 convolutions on them).
        dist_backend: ``torch.distributed`` backend for a process group on it.
        channels_last: convolutions run faster with channels-last memory (the default layout there).
        pin_memory: page-locked host buffers make host-to-device copies asynchronous.
        cudnn: cuDNN autotuning and TF32 matmuls apply.
        dali: NVIDIA DALI can decode and augment there (nvJPEG).
    """

    fp16_training: bool = False
    bf16_training: bool = False
    dist_backend: str = "gloo"
    channels_last: bool = False
    pin_memory: bool = False
    cudnn: bool = False
    dali: bool = False


_CAPABILITIES = {
    "cuda": Capabilities(fp16_training=True, dist_backend="nccl", channels_last=True, pin_memory=True, cudnn=True,
                         dali=True),
    "xpu": Capabilities(dist_backend="xccl", pin_memory=True),
    "hpu": Capabilities(dist_backend="hccl"),
    "mps": Capabilities(),
}


def native_bf16_cpu() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU: AMX tiles (Intel Sapphire Rapids and later) or
    AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake), and ``ONEDNN_MAX_CPU_ISA`` does not hold it
    below them. Without them oneDNN emulates bf16: ssd_tiny's training step 2.2x (AVX-512) to 8x (AVX2) slower than
    fp32 on 2 Zen 4 cores."""
    if not torch.backends.mkldnn.is_available():
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and isa not in ("ALL", "DEFAULT") and not any(k in isa for k in ("BF16", "AMX", "AVX10")):
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _cpu_capabilities() -> Capabilities:
    """The CPU's: channels-last where oneDNN runs the convolutions (its native layout: ssd_tiny's training step
    1.2x faster in fp32, 1.4x in bf16, on 2 Sapphire Rapids cores); bf16 training where oneDNN has native bf16
    (:func:`native_bf16_cpu`; the step 1.7x faster than fp32 on 2 Sapphire Rapids cores with AMX, 2.0x on 2 Zen 4
    cores with AVX512-BF16)."""
    return Capabilities(channels_last=torch.backends.mkldnn.is_available(), bf16_training=native_bf16_cpu())


_CAPABILITIES["cpu"] = _cpu_capabilities()


def capabilities(device: torch.device | str) -> Capabilities:
    """The :class:`Capabilities` of ``device``'s type (a type not listed here gets the CPU's: none)."""
    kind = torch.device(device).type
    return _CAPABILITIES.get(kind, _CAPABILITIES["cpu"])


def use_channels_last(device: torch.device | str, requested: bool | None = None) -> bool:
    """The one channels-last decision: ``requested`` when given (``train.channels_last``), else the device's
    preference (:attr:`Capabilities.channels_last`: on for CUDA)."""
    return capabilities(device).channels_last if requested is None else bool(requested)


def device_name(device: torch.device) -> str:
    """A human-readable name: the GPU's model for CUDA, else the device string."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return str(device)
