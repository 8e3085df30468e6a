"""Numeric precision: the one place that turns a precision name into an autocast context.

Training, evaluation, inference and the benchmarks all run their forward passes through :func:`autocast`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from singleshot.accelerator import capabilities

PRECISIONS = ("fp32", "fp16", "bf16")


def resolve_precision(precision: str, device: torch.device, *, training: bool = False) -> str:
    """"auto" -> fp16 where the device trains in fp16 with a GradScaler (CUDA); for ``training``, bf16 where bf16
    trains faster than fp32 (CPUs with native bf16, AMX or AVX512-BF16; elsewhere oneDNN emulates it, slower); fp32
    otherwise (inference on a CPU keeps
    fp32's accuracy: bf16 has 8 significant bits). Otherwise ``precision`` itself, checked. Training in fp16 needs
    gradient scaling (CUDA)."""
    caps = capabilities(device)
    fp16 = caps.fp16_training
    if precision == "auto":
        return "fp16" if fp16 else "bf16" if training and caps.bf16_training else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}, got {precision!r}")
    if training and precision == "fp16" and not fp16:
        raise ValueError(f"train.precision=fp16 needs a CUDA device (gradient scaling), not {device.type}; use bf16 "
                         "or fp32")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for a resolved ``precision`` on ``device`` (a null context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
