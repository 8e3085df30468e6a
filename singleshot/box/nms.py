"""Greedy non-maximum suppression over many groups at once (one group per image and class).

``grouped_nms(boxes [N, 4] xyxy, scores [N], groups [N]) -> kept indices`` with the input ordered by ascending group,
then descending score (``group_score_order`` gives that order). Each group is suppressed on its own, exactly as
``torchvision.ops.nms`` would suppress it (IoU strictly above the threshold suppresses).

Two implementations, one result:

- CPU with numba installed: one compiled pass over the groups (``_greedy_kernel``). Hand-written because
  ``torchvision.ops.nms`` re-sorts its input on every call and, fed many groups at once, computes IoUs across groups
  too; a grouped kernel over pre-sorted input does only the within-group pairs, ~10x less work at SSD300 scale.
  Loading it costs ~0.8 s once per process (numba's import and its on-disk cache), so ``auto`` takes it for inputs
  of at least ``_NUMBA_MIN_CANDIDATES`` boxes, and for every input once it is loaded.
- Elsewhere (CUDA, smaller inputs, or no numba): ``torchvision.ops.nms`` on boxes shifted apart per group, in blocks.

``SINGLESHOT_NMS=numba|torchvision`` forces one implementation (the result is the same).

``padded_nms(boxes [G, W, 4], counts [G]) -> keep [G, W]`` is the fixed-shape form that the CUDA post-processing
uses (every group padded to one width, nothing read back by the host): one Triton kernel launch on CUDA
(:mod:`singleshot.box.nms_triton`), else a torch loop over the group width (the same greedy pass, all groups at once).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms

# numba is a default dependency (imported on first use: it takes ~0.4 s); without it the torchvision path below
# gives the same result, slower.
_HAVE_NUMBA = importlib.util.find_spec("numba") is not None

_BACKEND = os.environ.get("SINGLESHOT_NMS", "auto")  # "auto" | "numba" | "torchvision"
_PADDED_BACKEND = "auto"  # padded_nms: "auto" (Triton where it runs) | "triton" | "torch"
_triton_state = "untried"  # "auto" tries the kernel once: "ok", or "failed" (then the torch loop, with a warning)
# Below this many boxes the blocked torchvision path costs < ~20 ms, less than loading the kernel the first time.
_NUMBA_MIN_CANDIDATES = 16384


def group_score_order(groups: Tensor, scores: Tensor) -> Tensor:
    """Permutation ordering ``[N]`` entries by ascending group (int64 >= 0), then descending score (float in [0, 1]).

    One stable int64 sort: for non-negative float32 the IEEE bit pattern orders like the value, so
    ``group * 2**30 + (bits(1.0) - bits(score))`` sorts by group, then by descending score, exactly; ties keep their
    input order. (About half the time of a float64 key, a third of two stable sorts.)
    """
    return (groups * (1 << 30) + descending_score_key(scores)).sort(stable=True).indices


def descending_score_key(scores: Tensor) -> Tensor:
    """``scores [...]`` float in [0, 1] -> int64 ``[...]`` in [0, 2**30) that orders like the negated score, exactly
    (for non-negative float32 the IEEE bit pattern orders like the value)."""
    s = scores.detach().float()
    s = torch.where(s > 0, s.clamp(max=1.0), 0.0)  # also turns -0.0 (sign bit set) into +0.0
    return _ONE_BITS - s.view(torch.int32).long()


_ONE_BITS = 0x3F800000  # bit pattern of float32 1.0 (< 2**30)


def grouped_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float, max_per_group: int | None = None
) -> Tensor:
    """Greedy NMS within each group.

    Args:
        boxes: ``[N, 4]`` xyxy, any units (pixels here), sorted by (group, descending score).
        scores: ``[N]`` in that order (used only by the torchvision path; the order already encodes them).
        groups: ``[N]`` int64 group ids, non-decreasing.
        iou_threshold: a box is suppressed by a kept, higher-scored box of its group with IoU > this.
        max_per_group: keep at most this many boxes per group, the first ones greedy NMS keeps (TF's
            ``non_max_suppression(max_output_size=...)``); the numba kernel then stops each group as soon as it has
            them, never looking at the rest.

    Returns:
        ``[K]`` int64 indices of the kept boxes, ascending (so still grouped and score-ordered).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if boxes.device.type == "cpu" and _use_numba(n):
        keep = torch.empty(n, dtype=torch.bool)
        bounds = torch.cat([_group_starts(groups).nonzero().flatten(), torch.tensor([n])])  # [G + 1]
        b = boxes.detach()
        b = b if b.dtype in (torch.float32, torch.float64) else b.float()  # fp16/bf16 have no numba kernel
        if max_per_group is None:
            _kernel()(b.contiguous().numpy(), bounds.numpy(), float(iou_threshold), keep.numpy())
        else:
            _capped_kernel()(
                b.contiguous().numpy(), bounds.numpy(), float(iou_threshold), int(max_per_group), keep.numpy()
            )
        return keep.nonzero().flatten()
    kept = _blocked_torchvision_nms(boxes, scores, groups, iou_threshold)
    if max_per_group is None:
        return kept
    kept_groups = groups.index_select(0, kept)
    starts = _group_starts(kept_groups)
    positions = torch.arange(kept.numel(), device=kept.device)
    rank = positions - torch.cummax(torch.where(starts, positions, torch.zeros_like(positions)), 0).values
    return kept[rank < max_per_group]


def padded_nms(boxes: Tensor, counts: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within each of ``G`` padded groups, with no host sync on CUDA.

    Args:
        boxes: ``[G, W, 4]`` xyxy, any units; group ``g``'s boxes are its first ``counts[g]`` rows, in descending
            score order (ties in the order the list form would take them); the rest is padding.
        counts: ``[G]`` int, 0 <= counts <= W.
        iou_threshold: a box is suppressed by a kept, higher-scored box of its group with IoU > this.

    Returns:
        ``[G, W]`` bool, True for the boxes greedy NMS keeps (never for padding). The same boxes as
        :func:`grouped_nms` keeps from the unpadded groups.
    """
    from singleshot.box.nms_triton import triton_available, triton_padded_nms

    global _triton_state
    if _PADDED_BACKEND == "triton" or (_PADDED_BACKEND == "auto" and triton_available(boxes.device)):
        if _PADDED_BACKEND == "triton" or _triton_state == "ok":
            return triton_padded_nms(boxes, counts, iou_threshold)
        if _triton_state == "untried":
            try:
                keep = triton_padded_nms(boxes, counts, iou_threshold)
            except Exception as e:  # a Triton/driver combination that cannot build the kernel: the torch loop instead
                _triton_state = "failed"
                warnings.warn(f"the Triton NMS kernel could not run ({type(e).__name__}: {str(e)[:200]}); "
                              "post-processing continues with the slower torch loop", stacklevel=2)  # fmt: skip
            else:
                _triton_state = "ok"
                return keep
    return _torch_padded_nms(boxes, counts, iou_threshold)


def _torch_padded_nms(boxes: Tensor, counts: Tensor, iou_threshold: float) -> Tensor:
    """:func:`padded_nms` without Triton: the greedy pass steps through the group width, every group at once (about
    a dozen ops per position; the width is read once on the host to stop at the longest group). Same float64
    arithmetic as the numba kernel."""
    g, width = boxes.shape[:2]
    inside = torch.arange(width, device=boxes.device) < counts[:, None]  # (G, W)
    keep = inside.clone()
    if g == 0 or width == 0:
        return keep
    b = boxes.double()
    x1, y1, x2, y2 = b.unbind(-1)  # (G, W) each
    area = (x2 - x1) * (y2 - y1)
    later = torch.ones(width, width, dtype=torch.bool, device=boxes.device).triu(1)  # later[i, j]: j > i
    for i in range(int(counts.max())):
        w = torch.minimum(x2, x2[:, i : i + 1]) - torch.maximum(x1, x1[:, i : i + 1])
        h = torch.minimum(y2, y2[:, i : i + 1]) - torch.maximum(y1, y1[:, i : i + 1])
        inter = w * h
        overlaps = (w > 0) & (h > 0) & (inter / (area[:, i : i + 1] + area - inter) > iou_threshold)
        keep &= ~(overlaps & later[i] & keep[:, i : i + 1])
    return keep


def _group_starts(groups: Tensor) -> Tensor:
    """``groups [N]`` non-decreasing -> ``[N]`` bool, True where a group begins."""
    starts = torch.ones_like(groups, dtype=torch.bool)
    starts[1:] = groups[1:] != groups[:-1]
    return starts


def _use_numba(n: int) -> bool:
    if _BACKEND == "torchvision" or not _HAVE_NUMBA:
        return False
    return _BACKEND == "numba" or _compiled is not None or n >= _NUMBA_MIN_CANDIDATES


def _blocked_torchvision_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """The portable path: groups kept apart by shifting each group's boxes by ``group * (span + 1)`` (torchvision's
    coordinate trick), in float64 so that shifts of millions of pixels keep sub-micro-pixel precision (float32 would
    round a 1.8M px shift to 1/8 px). ``nms`` is quadratic in its input, so the shifted boxes go through it in blocks
    of about ``_NMS_BLOCK`` cut at group boundaries."""
    n = boxes.shape[0]
    boxes64 = boxes.double()
    span = boxes64.max() - boxes64.min() + 1
    shifted = boxes64 - boxes64.min() + (groups.double() * span)[:, None]
    scores = scores.double()
    if n <= _NMS_BLOCK:
        return nms(shifted, scores, iou_threshold).sort().values
    # Block id of a candidate = where its group starts, in units of _NMS_BLOCK (groups never straddle).
    positions = torch.arange(n, device=groups.device)
    group_start = torch.cummax(torch.where(_group_starts(groups), positions, torch.zeros_like(positions)), 0).values
    sizes = torch.bincount(group_start // _NMS_BLOCK).tolist()
    kept, offset = [], 0
    for size in sizes:
        if size:
            kept.append(nms(shifted[offset : offset + size], scores[offset : offset + size], iou_threshold) + offset)
        offset += size
    return torch.cat(kept).sort().values


# Candidates per torchvision.ops.nms call (a block also takes the rest of the group it ends in): measured best
# between 192 and 384 on a CPU, balancing the kernel's quadratic cost against per-call overhead.
_NMS_BLOCK = 256

_compiled = None
_compiled_capped = None


def _jit(fn: Any) -> Any:
    """``fn`` compiled by numba, cached on disk; in memory when no cache folder is writable (read-only installs)."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:
        return numba.njit(cache=False, nogil=True, error_model="numpy")(fn)


def _kernel() -> Any:
    """The numba-compiled greedy kernel, compiled on first use."""
    global _compiled
    if _compiled is None:
        _compiled = _jit(_greedy_kernel)
    return _compiled


def _capped_kernel() -> Any:
    """The numba-compiled greedy kernel with a per-group cap, compiled on first use."""
    global _compiled_capped
    if _compiled_capped is None:
        _compiled_capped = _jit(_greedy_capped_kernel)
    return _compiled_capped


def _greedy_capped_kernel(boxes, bounds, thr, cap, keep):  # pragma: no cover - runs compiled
    """As :func:`_greedy_kernel`, keeping at most ``cap`` boxes per group. Each box, in score order, is tested
    against the boxes kept so far (at most ``cap``) instead of suppressing forward, so a group stops as soon as it
    has ``cap`` boxes: the rest of a group (thousands of SSD320 candidates) is never visited. The kept set equals
    the first ``cap`` boxes the forward form keeps (a box survives iff no kept, higher-scored box overlaps it)."""
    keep[:] = False
    kept = np.empty(cap, np.int64)
    for g in range(bounds.shape[0] - 1):
        start, end = bounds[g], bounds[g + 1]
        count = 0
        for j in range(start, end):
            if count >= cap:
                break
            jx1, jy1 = float(boxes[j, 0]), float(boxes[j, 1])
            jx2, jy2 = float(boxes[j, 2]), float(boxes[j, 3])
            jarea = (jx2 - jx1) * (jy2 - jy1)
            alive = True
            for t in range(count):
                i = kept[t]
                w = min(float(boxes[i, 2]), jx2) - max(float(boxes[i, 0]), jx1)
                if w <= 0.0:
                    continue
                h = min(float(boxes[i, 3]), jy2) - max(float(boxes[i, 1]), jy1)
                if h <= 0.0:
                    continue
                inter = w * h
                iarea = (float(boxes[i, 2]) - float(boxes[i, 0])) * (float(boxes[i, 3]) - float(boxes[i, 1]))
                if inter / (iarea + jarea - inter) > thr:
                    alive = False
                    break
            if alive:
                keep[j] = True
                kept[count] = j
                count += 1


def _greedy_kernel(boxes, bounds, thr, keep):  # pragma: no cover - runs compiled
    """boxes [N, 4] xyxy float32/64, sorted by (group, -score); bounds [G + 1] group starts; writes keep [N] bool.

    Per group, in score order: a box still alive is kept and suppresses every later alive box of its group whose
    IoU with it exceeds ``thr``. Same arithmetic as torchvision's CPU kernel (areas (x2-x1)*(y2-y1), IoU =
    inter / (area_i + area_j - inter), a 0/0 IoU suppresses nothing), in float64.
    """
    keep[:] = True
    for g in range(bounds.shape[0] - 1):
        start, end = bounds[g], bounds[g + 1]
        for i in range(start, end):
            if not keep[i]:
                continue
            ix1, iy1 = float(boxes[i, 0]), float(boxes[i, 1])
            ix2, iy2 = float(boxes[i, 2]), float(boxes[i, 3])
            iarea = (ix2 - ix1) * (iy2 - iy1)
            for j in range(i + 1, end):
                if not keep[j]:
                    continue
                w = min(ix2, float(boxes[j, 2])) - max(ix1, float(boxes[j, 0]))
                if w <= 0.0:
                    continue
                h = min(iy2, float(boxes[j, 3])) - max(iy1, float(boxes[j, 1]))
                if h <= 0.0:
                    continue
                inter = w * h
                jarea = (float(boxes[j, 2]) - float(boxes[j, 0])) * (float(boxes[j, 3]) - float(boxes[j, 1]))
                if inter / (iarea + jarea - inter) > thr:
                    keep[j] = False
