"""Greedy NMS of many small padded groups in one Triton kernel launch (the CUDA path of :func:`padded_nms`).

One program per group: the group's boxes sit in registers, and its greedy pass (a box still alive suppresses every
later box of the group whose IoU with it exceeds the threshold) runs over them in score order. All groups run in
parallel; the serial part is only a group's own length (at most ``candidates_per_class``). Hand-written because
``torchvision.ops.nms`` is one serial greedy pass per call and its kernel is quadratic in its whole input: no
arrangement of its calls covers thousands of independent groups in a fixed number of launches.

Arithmetic matches the numba kernel of :mod:`singleshot.box.nms` operation for operation, in float64 with
multiply-add fusion off, so the same boxes are kept (a 0/0 IoU suppresses nothing).

``TRITON_INTERPRET=1`` (set before the first call) runs the kernel on CPU tensors with Triton's interpreter: how the
tests check it without a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

try:  # Triton comes with torch's CUDA builds on Linux; the kernel's body needs ``tl`` as a module global
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - then padded_nms takes its torch loop
    triton = tl = None

_KERNELS: dict[bool, Any] = {}


def triton_available(device: torch.device) -> bool:
    """Whether :func:`triton_padded_nms` can run on ``device`` (CUDA with Triton installed, or the interpreter)."""
    return triton is not None and (device.type == "cuda" or _interpreting())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernel() -> Any:
    """The jitted kernel, built on first use (``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates)."""
    interpret = _interpreting()
    if interpret not in _KERNELS:
        _KERNELS[interpret] = _build()
    return _KERNELS[interpret]


def _build() -> Any:
    @triton.jit
    def padded_greedy_nms(boxes_ptr, counts_ptr, thr_ptr, keep_ptr, width, BLOCK: tl.constexpr):
        # boxes [G, width, 4] float32 xyxy, counts [G] int32, thr [1] float64 -> keep [G, width] int8
        g = tl.program_id(0).to(tl.int64)
        n = tl.load(counts_ptr + g)
        thr = tl.load(thr_ptr)
        offs = tl.arange(0, BLOCK)
        inside = offs < n
        base = boxes_ptr + g * width * 4
        x1 = tl.load(base + offs * 4 + 0, mask=inside, other=0.0).to(tl.float64)
        y1 = tl.load(base + offs * 4 + 1, mask=inside, other=0.0).to(tl.float64)
        x2 = tl.load(base + offs * 4 + 2, mask=inside, other=0.0).to(tl.float64)
        y2 = tl.load(base + offs * 4 + 3, mask=inside, other=0.0).to(tl.float64)
        area = (x2 - x1) * (y2 - y1)
        keep = inside
        for i in range(0, n):
            alive = tl.sum(tl.where((offs == i) & keep, 1, 0), axis=0) > 0
            ix1 = tl.load(base + i * 4 + 0).to(tl.float64)
            iy1 = tl.load(base + i * 4 + 1).to(tl.float64)
            ix2 = tl.load(base + i * 4 + 2).to(tl.float64)
            iy2 = tl.load(base + i * 4 + 3).to(tl.float64)
            iarea = (ix2 - ix1) * (iy2 - iy1)
            w = tl.minimum(x2, ix2) - tl.maximum(x1, ix1)
            h = tl.minimum(y2, iy2) - tl.maximum(y1, iy1)
            inter = w * h
            overlaps = (w > 0.0) & (h > 0.0) & (inter / (iarea + area - inter) > thr)
            keep = keep & ~(alive & (offs > i) & overlaps)
        tl.store(keep_ptr + g * width + offs, keep.to(tl.int8), mask=offs < width)

    return padded_greedy_nms


def _threshold(value: float, device: torch.device) -> Tensor:
    """``value`` as a float64 ``[1]`` tensor on ``device``, made once: a Python float reaches a kernel as float32
    (0.45 would become 0.449999988), and a tensor made from a Python number each call is a host-to-device copy that
    waits for the GPU's queue."""
    key = (device, value)
    if key not in _THRESHOLDS:
        _THRESHOLDS[key] = torch.tensor([value], dtype=torch.float64, device=device)
    return _THRESHOLDS[key]


_THRESHOLDS: dict[tuple[torch.device, float], Tensor] = {}


def triton_padded_nms(boxes: Tensor, counts: Tensor, iou_threshold: float) -> Tensor:
    """``boxes [G, W, 4]`` xyxy (any units; each group's first ``counts[g]`` rows are its boxes in descending score
    order, the rest padding), ``counts [G]`` -> ``keep [G, W]`` bool. One kernel launch for all groups."""
    g, width = boxes.shape[:2]
    keep = torch.zeros(g, width, dtype=torch.int8, device=boxes.device)
    if g == 0 or width == 0:
        return keep.bool()
    block = max(16, triton.next_power_of_2(width))
    thr = _threshold(iou_threshold, boxes.device)
    _kernel()[(g,)](
        boxes.float().contiguous(), counts.to(torch.int32).contiguous(), thr, keep, width,
        BLOCK=block, num_warps=max(1, min(8, block // 256)), enable_fp_fusion=False,
    )  # fmt: skip
    return keep.bool()
