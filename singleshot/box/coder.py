"""Matching ground truth to default boxes and the SSD box coding, batched over images.

Conventions: ground-truth boxes are ``Tensor[B, M, 4]`` **xyxy, normalized** to [0, 1] of the network input,
padded per image; a box is real iff its label is > 0. Default boxes are ``Tensor[A, 4]`` **normalized
(cx, cy, w, h)**. Offsets are ``Tensor[..., 4]`` as ``((gx - dx) / (scale_xy * dw), (gy - dy) / (scale_xy * dh),
log(gw / dw) / scale_wh, log(gh / dh) / scale_wh)``, the coding of the MLPerf reference and of NVIDIA's SSD300.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou

from singleshot.box.anchors import AnchorSpec, default_boxes


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


def match_anchors(gt_boxes: Tensor, gt_valid: Tensor, anchors_xyxy: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Assign each default box the index of its ground-truth box, or -1 for background.

    The rule of the MLPerf reference (seed 000, step 1): every anchor takes its highest-IoU ground truth if that
    IoU is > ``iou_threshold``; then every ground-truth box is forced onto its single best anchor (when two boxes
    share a best anchor, the one with the higher index wins, as the reference's in-order assignment does).

    Args:
        gt_boxes: ``Tensor[B, M, 4]`` xyxy normalized (padding rows are ignored).
        gt_valid: ``Tensor[B, M]`` bool, True for real boxes.
        anchors_xyxy: ``Tensor[A, 4]`` xyxy normalized.
    Returns:
        ``Tensor[B, A]`` int64 with values in ``[-1, M)``.
    """
    b, m = gt_valid.shape
    a = anchors_xyxy.shape[0]
    if m == 0:
        return torch.full((b, a), -1, dtype=torch.long, device=anchors_xyxy.device)
    iou = box_iou(gt_boxes.reshape(b * m, 4), anchors_xyxy).view(b, m, a)  # (B*M, A) -> (B, M, A)
    iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)
    best_iou, best_gt = iou.max(dim=1)  # per anchor: (B, A)
    matched = torch.where(best_iou > iou_threshold, best_gt, torch.full_like(best_gt, -1))
    # Force every real gt onto its best anchor. Padding rows scatter into a spare column A that is dropped.
    best_anchor = iou.argmax(dim=2)  # (B, M)
    best_anchor = torch.where(gt_valid, best_anchor, torch.full_like(best_anchor, a))
    gt_idx = torch.arange(m, device=gt_boxes.device).expand(b, m)
    forced = torch.full((b, a + 1), -1, dtype=torch.long, device=gt_boxes.device)
    forced.scatter_reduce_(1, best_anchor, gt_idx, reduce="amax")
    forced = forced[:, :a]
    return torch.where(forced >= 0, forced, matched)


class TargetEncoder(nn.Module):
    """Turns a padded batch of ground truth into per-anchor regression targets and class labels.

    Call: ``(gt_boxes [B, M, 4] xyxy normalized, gt_labels [B, M] int64, real iff > 0) ->
    (target_offsets [B, A, 4], target_labels [B, A] int64 with 0 for background)``. Offsets of background anchors
    are zero (they are never used by the losses). Runs on the device of its inputs; default boxes are cached there.
    """

    def __init__(self, anchors: AnchorSpec, iou_threshold: float = 0.5, coder: BoxCoder | None = None) -> None:
        super().__init__()
        self.anchors = anchors
        self.iou_threshold = iou_threshold
        self.coder = coder or BoxCoder()

    @torch.no_grad()
    def forward(self, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
        anchors = default_boxes(self.anchors, gt_boxes.device, gt_boxes.dtype)  # (A, 4) cxcywh
        anchors_xyxy = default_boxes_xyxy(self.anchors, gt_boxes.device, gt_boxes.dtype)
        valid = gt_labels > 0
        matched = match_anchors(gt_boxes, valid, anchors_xyxy, self.iou_threshold)  # (B, A)
        positive = matched >= 0
        idx = matched.clamp(min=0)
        labels = torch.gather(gt_labels, 1, idx) * positive  # (B, A)
        boxes = torch.gather(gt_boxes, 1, idx[..., None].expand(-1, -1, 4))  # (B, A, 4) xyxy
        boxes = box_convert(boxes, "xyxy", "cxcywh")
        # Background anchors get their own default box so that log() sees a valid ratio; their offset is 0.
        boxes = torch.where(positive[..., None], boxes, anchors)
        offsets = self.coder.encode(boxes, anchors)
        return offsets, labels.long()


_XYXY_CACHE: dict[tuple, Tensor] = {}


def default_boxes_xyxy(spec: AnchorSpec, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The default boxes of ``spec`` as ``Tensor[A, 4]`` xyxy normalized (cached like :func:`default_boxes`)."""
    key = (spec, torch.device(device), dtype)
    if key not in _XYXY_CACHE:
        _XYXY_CACHE[key] = box_convert(default_boxes(spec, device, dtype), "cxcywh", "xyxy")
    return _XYXY_CACHE[key]
