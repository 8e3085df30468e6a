"""Matching ground truth to default boxes and the SSD box coding, batched over images.

Conventions: ground-truth boxes are ``Tensor[B, M, 4]`` **xyxy, normalized** to [0, 1] of the network input,
padded per image; a box is real iff its label is > 0. Default boxes are ``Tensor[A, 4]`` **normalized
(cx, cy, w, h)**. Offsets are ``Tensor[..., 4]`` as ``((gx - dx) / (scale_xy * dw), (gy - dy) / (scale_xy * dh),
log(gw / dw) / scale_wh, log(gh / dh) / scale_wh)``, the coding of the MLPerf reference and of NVIDIA's SSD300.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from singleshot.box.anchors import AnchorSpec, default_boxes, default_boxes_xyxy, grid_levels


class BoxCoder:
    """SSD offset coding between normalized cxcywh boxes and default boxes (``scale_xy`` 0.1, ``scale_wh`` 0.2)."""

    def __init__(self, scale_xy: float = 0.1, scale_wh: float = 0.2) -> None:
        self.scale_xy = scale_xy
        self.scale_wh = scale_wh

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """boxes ``[..., A, 4]`` normalized cxcywh, anchors ``[A, 4]`` normalized cxcywh -> offsets ``[..., A, 4]``."""
        xy = (boxes[..., :2] - anchors[:, :2]) / (self.scale_xy * anchors[:, 2:])
        wh = torch.log(boxes[..., 2:] / anchors[:, 2:]) / self.scale_wh
        return torch.cat([xy, wh], dim=-1)

    def decode(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        """offsets ``[..., A, 4]`` -> boxes ``[..., A, 4]`` normalized cxcywh (inverse of :meth:`encode`)."""
        xy = offsets[..., :2] * self.scale_xy * anchors[:, 2:] + anchors[:, :2]
        wh = torch.exp(offsets[..., 2:] * self.scale_wh) * anchors[:, 2:]
        return torch.cat([xy, wh], dim=-1)


class Workspace:
    """Scratch tensors reused across calls. A fresh 10+ MB CPU tensor costs a page fault per 4 KB on first touch,
    about as much as the arithmetic on it, so the matcher keeps its ``[B, M, A]`` buffers between batches."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """A ``shape`` view of buffer ``name`` on ``like``'s device (dtype ``dtype`` or ``like``'s); contents stale."""
        numel, dtype = math.prod(shape), dtype or like.dtype
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.device != like.device or buf.dtype != dtype:
            buf = torch.empty(numel, device=like.device, dtype=dtype)
            self._buffers[name] = buf
        return buf[:numel].view(shape)


def anchor_iou(gt_boxes: Tensor, spec: AnchorSpec, workspace: Workspace | None = None) -> Tensor:
    """IoU of every ground-truth box with every default box of ``spec``.

    Hand-written rather than ``torchvision.ops.box_iou``: default boxes lie on per-level grids whose x extent depends
    only on (type, column) and y extent only on (type, row), so the intersection is an outer product of 1-D overlaps;
    this needs a third of the memory traffic and gives bit-identical values.

    Args:
        gt_boxes: ``Tensor[B, M, 4]`` xyxy normalized.
        workspace: scratch memory reused across calls; the result then lives in it until the next call.
    Returns:
        ``Tensor[B, M, A]``.
    """
    b, m, _ = gt_boxes.shape
    levels = grid_levels(spec, gt_boxes.device, gt_boxes.dtype)
    a = levels[-1].start + levels[-1].num_types * levels[-1].size ** 2
    gx1, gy1, gx2, gy2 = (v[..., None, None] for v in gt_boxes.unbind(-1))  # each (B, M, 1, 1)
    ws = workspace or Workspace()
    inter = ws.get("inter", (b, m, a), gt_boxes)
    for lvl in levels:
        iw = torch.minimum(gx2, lvl.x2).sub_(torch.maximum(gx1, lvl.x1)).clamp_(min=0)  # (B, M, T, f) over columns
        ih = torch.minimum(gy2, lvl.y2).sub_(torch.maximum(gy1, lvl.y1)).clamp_(min=0)  # (B, M, T, f) over rows
        out = inter[:, :, lvl.start : lvl.start + lvl.num_types * lvl.size**2].unflatten(
            -1, (lvl.num_types, lvl.size, lvl.size)
        )
        torch.mul(ih[..., :, None], iw[..., None, :], out=out)  # (B, M, T, row, col)
    anchors = default_boxes_xyxy(spec, gt_boxes.device, gt_boxes.dtype)
    anchor_area = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])  # (A,)
    gt_area = ((gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1]))[..., None]  # (B, M, 1)
    union = torch.add(gt_area, anchor_area, out=ws.get("union", (b, m, a), gt_boxes)).sub_(inter)
    return inter.div_(union)


@dataclass(frozen=True)
class MatchRule:
    """How default boxes are matched to ground truth; the two published rules differ in two details.

    Attributes:
        iou_threshold: an anchor is positive when its best IoU passes this.
        inclusive: True: positive iff IoU >= threshold (TF object-detection API's ``ArgMaxMatcher`` with both
            thresholds 0.5, SSD320 v1.2); False: IoU > threshold (the MLPerf reference and NVIDIA SSD300).
        forced_tie: when several ground-truth boxes have the same best anchor (each is forced onto its best one),
            "last": the highest index gets it (the MLPerf reference's in-order assignment); "first": the lowest
            index gets it (TF's argmax over a one-hot of the forced columns).
    """

    iou_threshold: float = 0.5
    inclusive: bool = False
    forced_tie: str = "last"

    def __post_init__(self) -> None:
        if self.forced_tie not in ("first", "last"):
            raise ValueError(f"MatchRule.forced_tie must be 'first' or 'last', got {self.forced_tie!r}")


MLPERF_MATCH = MatchRule()
TF_ARGMAX_MATCH = MatchRule(inclusive=True, forced_tie="first")


def match_positives(
    gt_boxes: Tensor,
    gt_valid: Tensor,
    spec: AnchorSpec,
    iou_threshold: float = 0.5,
    workspace: Workspace | None = None,
    rule: MatchRule | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Match default boxes to ground truth and list the positives.

    Default rule, the MLPerf reference's (``Encoder.encode`` in mlcommons/training
    ``retired_benchmarks/ssd-v1/ssd/utils.py``): every anchor takes its highest-IoU ground truth (the first one on
    ties) if that IoU is > ``iou_threshold``; then every ground-truth box is forced onto its single best anchor
    (when two boxes share a best anchor, the one with the higher index wins, as the reference's in-order assignment
    does). ``rule`` (which then replaces ``iou_threshold``) selects ``>=`` and first-wins instead, TF's
    ``ArgMaxMatcher`` (:data:`TF_ARGMAX_MATCH`).

    Args:
        gt_boxes: ``Tensor[B, M, 4]`` xyxy normalized (padding rows are ignored).
        gt_valid: ``Tensor[B, M]`` bool, True for real boxes.
        spec: the default boxes.
        workspace: scratch memory for the ``[B, M, A]`` IoU, reused across calls.
        rule: the matching rule (default: ``MatchRule(iou_threshold)``).
    Returns:
        ``(matched, img, anchor)``: ``matched`` is ``Tensor[B, A]`` int64 in ``[-1, M)`` (held in ``workspace`` until
        its next use, if given); ``img``, ``anchor`` are ``Tensor[P]`` listing the positive anchors, sorted.
    """
    rule = rule or MatchRule(iou_threshold)
    b, m = gt_valid.shape
    a = default_boxes(spec, gt_boxes.device, gt_boxes.dtype).shape[0]
    ws = workspace or Workspace()
    matched = ws.get("matched", (b, a), gt_boxes, torch.long).fill_(-1)
    # Only real boxes enter the IoU: compact rows (G = number of real boxes), image-major, gt index ascending.
    img, gt = gt_valid.nonzero(as_tuple=True)  # (G,) each
    g = img.numel()
    if g == 0:
        empty = torch.zeros(0, dtype=torch.long, device=gt_boxes.device)
        return matched, empty, empty
    iou = anchor_iou(gt_boxes[img, gt][None], spec, ws)[0]  # (1, G, 4) -> (G, A)

    # Threshold matches: best IoU per (image, anchor) by a segmented max over the image's rows; the best gt *index*
    # is looked up only where that IoU passes the threshold (a few per mille of the anchors).
    best = ws.get("best", (b, a), iou).zero_().scatter_reduce_(0, img[:, None].expand(g, a), iou, "amax")  # (B, A)
    passes = best >= rule.iou_threshold if rule.inclusive else best > rule.iou_threshold  # (B, A)
    pi, pa = passes.nonzero(as_tuple=True)  # (P,) each
    row_of = torch.full((b, m), -1, dtype=torch.long, device=iou.device)
    row_of[img, gt] = torch.arange(g, device=iou.device)  # (B, M): row of each real box, -1 for padding
    rows = row_of[pi]  # (P, M)
    cand = iou[rows.clamp(min=0), pa[:, None]].masked_fill_(rows < 0, -1.0)  # (P, M) IoU of the image's boxes
    matched[pi, pa] = cand.argmax(dim=1)  # first maximum, like the reference

    # Force every real gt onto its best anchor. Where boxes share one, order the pairs by (image, anchor) key,
    # stably (gt index ascending within a key), and keep the last of each key (the reference's in-order assignment)
    # or the first (TF's argmax over the one-hot of forced columns).
    best_anchor = iou.max(dim=1).indices  # (G,)
    key = img * a + best_anchor
    order = key.argsort(stable=True)
    key, img, gt, best_anchor = key[order], img[order], gt[order], best_anchor[order]
    chosen = torch.ones_like(key, dtype=torch.bool)
    if rule.forced_tie == "last":
        chosen[:-1] = key[1:] != key[:-1]
    else:
        chosen[1:] = key[1:] != key[:-1]
    matched[img[chosen], best_anchor[chosen]] = gt[chosen]
    # The positives are the threshold matches plus the forced anchors (a few hundred): no scan of [B, A] needed.
    flat = torch.unique(torch.cat([pi * a + pa, img[chosen] * a + best_anchor[chosen]]))  # sorted
    return matched, flat // a, flat % a


def match_dense(
    gt_boxes: Tensor, gt_valid: Tensor, spec: AnchorSpec, rule: MatchRule, workspace: Workspace | None = None
) -> Tensor:
    """The matches of :func:`match_positives` with every shape fixed by the input's (no ``nonzero``, no ``unique``),
    so the host never waits for the device: the accelerator's form. Same result.

    Args:
        gt_boxes: ``Tensor[B, M, 4]`` xyxy normalized (padding rows are ignored).
        gt_valid: ``Tensor[B, M]`` bool, True for real boxes.
    Returns:
        ``Tensor[B, A]`` int64 in ``[-1, M)``.
    """
    b, m = gt_valid.shape
    iou = anchor_iou(gt_boxes, spec, workspace).masked_fill_(~gt_valid[..., None], -1.0)  # (B, M, A), padding -1
    best, arg = iou.max(dim=1)  # (B, A): the first maximum, as the list form takes it
    passes = best >= rule.iou_threshold if rule.inclusive else best > rule.iou_threshold
    matched = torch.where(passes, arg, -1)
    # Forced: each real gt onto its best anchor; where boxes share one, the highest index ("last") or the lowest.
    best_anchor = iou.argmax(dim=2)  # (B, M)
    index = torch.arange(m, device=iou.device).expand(b, m)
    if rule.forced_tie == "last":
        forced = torch.full_like(matched, -1).scatter_reduce_(1, best_anchor, torch.where(gt_valid, index, -1), "amax")
    else:
        forced = torch.full_like(matched, m).scatter_reduce_(1, best_anchor, torch.where(gt_valid, index, m), "amin")
        forced = torch.where(forced < m, forced, -1)
    return torch.where(forced >= 0, forced, matched)


class TargetEncoder(nn.Module):
    """Turns a padded batch of ground truth into per-anchor regression targets and class labels.

    Call: ``(gt_boxes [B, M, 4] xyxy normalized, gt_labels [B, M] int64, real iff > 0) ->
    (target_offsets [B, A, 4], target_labels [B, A] int64 with 0 for background)``, matching by ``rule``
    (default: the MLPerf rule at ``iou_threshold``; see :class:`MatchRule`). Offsets of background anchors
    are zero (they are never used by the losses). Runs on the device of its inputs; default boxes are cached there.
    """

    def __init__(
        self,
        anchors: AnchorSpec,
        iou_threshold: float = 0.5,
        coder: BoxCoder | None = None,
        rule: MatchRule | None = None,
    ) -> None:
        super().__init__()
        self.anchors = anchors
        self.rule = rule or MatchRule(iou_threshold)
        self.iou_threshold = self.rule.iou_threshold
        self.coder = coder or BoxCoder()
        self.workspace = Workspace()

    @torch.no_grad()
    def forward(self, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
        anchors = default_boxes(self.anchors, gt_boxes.device, gt_boxes.dtype)  # (A, 4) cxcywh
        if gt_boxes.shape[1] == 0:  # no image of the batch has a box
            b, a = gt_boxes.shape[0], anchors.shape[0]
            return anchors.new_zeros(b, a, 4), torch.zeros(b, a, dtype=torch.long, device=anchors.device)
        valid = gt_labels > 0
        if sync_free(gt_boxes.device):
            # Every anchor coded, background masked: no data-dependent shape, so the host never waits here.
            matched = match_dense(gt_boxes, valid, self.anchors, self.rule, self.workspace)  # (B, A)
            positive, index = matched >= 0, matched.clamp(min=0)
            labels = torch.where(positive, gt_labels.gather(1, index).long(), 0)
            boxes = gt_boxes.gather(1, index[..., None].expand(-1, -1, 4))  # (B, A, 4) xyxy
            offsets = self.coder.encode(box_convert(boxes, "xyxy", "cxcywh"), anchors)
            return torch.where(positive[..., None], offsets, 0.0), labels
        matched, img, anchor = match_positives(gt_boxes, valid, self.anchors, workspace=self.workspace, rule=self.rule)
        # Only positives (a few per mille of the anchors) need labels and coding; background stays 0.
        gt = matched[img, anchor]  # (P,)
        labels = torch.zeros(matched.shape, dtype=torch.long, device=matched.device)
        labels[img, anchor] = gt_labels[img, gt].long()
        offsets = anchors.new_zeros(*matched.shape, 4)
        offsets[img, anchor] = self.coder.encode(box_convert(gt_boxes[img, gt], "xyxy", "cxcywh"), anchors[anchor])
        return offsets, labels


def sync_free(device: torch.device) -> bool:
    """Whether the target encoder, the losses and the post-processor take their fixed-shape forms on ``device``: on
    accelerators, where a data-dependent shape (``nonzero``) makes the host wait for the device; the CPU keeps the
    forms that work on the positives or candidates only. ``SINGLESHOT_SYNC_FREE=1|0`` forces one (the results are
    the same)."""
    return _SYNC_FREE == "1" or (_SYNC_FREE == "auto" and device.type != "cpu")


_SYNC_FREE = os.environ.get("SINGLESHOT_SYNC_FREE", "auto")  # "auto" | "1" | "0"
