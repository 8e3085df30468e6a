"""Decoding + non-maximum suppression for a whole batch at once.

MLPerf evaluation semantics (seed 000 / RECIPES.md): softmax over classes; per image and class keep scores
> ``score_threshold`` and at most ``candidates_per_class`` best; greedy NMS per class at ``nms_iou``; keep the
``max_detections`` best per image. The per-(image, class) groups of the whole batch go through one
:func:`torchvision.ops.batched_nms` call, so there is no Python loop over images or classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_convert

from singleshot.box.anchors import AnchorSpec, default_boxes
from singleshot.box.coder import BoxCoder


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    candidates_per_class: int = 200
    max_detections: int = 200


class PostProcessor(nn.Module):
    """Raw outputs -> detections in input-image pixels.

    Call: ``(bbox_regression [B, A, 4], cls_logits [B, A, C], image_sizes [B, 2] (H, W) pixels)`` ->
    list of B dicts with ``boxes [K, 4]`` xyxy in that image's pixels (clipped to it), ``scores [K]`` and
    ``labels [K]`` int64 in 1..num_classes-1, sorted by descending score.

    Args:
        anchors: default-box spec the outputs refer to.
        classifier: "softmax" (channel 0 is background) or "sigmoid" (channel c is label c + 1).
    """

    def __init__(
        self,
        anchors: AnchorSpec,
        classifier: str = "softmax",
        config: PostprocessConfig | None = None,
        coder: BoxCoder | None = None,
    ) -> None:
        super().__init__()
        if classifier not in ("softmax", "sigmoid"):
            raise ValueError(f"classifier must be 'softmax' or 'sigmoid', got {classifier!r}")
        self.anchors = anchors
        self.classifier = classifier
        self.config = config or PostprocessConfig()
        self.coder = coder or BoxCoder()

    def scores(self, cls_logits: Tensor) -> Tensor:
        """``[B, A, C]`` logits -> ``[B, A, K]`` foreground class probabilities (K = num_classes - 1)."""
        if self.classifier == "softmax":
            return cls_logits.float().softmax(dim=-1)[..., 1:]
        return cls_logits.float().sigmoid()

    def decode_boxes(self, bbox_regression: Tensor) -> Tensor:
        """``[B, A, 4]`` offsets -> ``[B, A, 4]`` xyxy normalized boxes."""
        anchors = default_boxes(self.anchors, bbox_regression.device, torch.float32)
        return box_convert(self.coder.decode(bbox_regression.float(), anchors), "cxcywh", "xyxy")

    @torch.no_grad()
    def forward(self, bbox_regression: Tensor, cls_logits: Tensor, image_sizes: Tensor) -> list[dict[str, Tensor]]:
        cfg = self.config
        b, a, _ = bbox_regression.shape
        boxes = self.decode_boxes(bbox_regression)  # (B, A, 4) xyxy normalized
        scores = self.scores(cls_logits).transpose(1, 2)  # (B, A, K) -> (B, K, A)
        k = scores.shape[1]
        top = min(cfg.candidates_per_class, a)
        cand_scores, cand_idx = scores.topk(top, dim=2)  # (B, K, top), sorted
        keep = cand_scores > cfg.score_threshold
        img_idx, cls_idx, slot = keep.nonzero(as_tuple=True)  # (N,) each, image-major order
        anchor_idx = cand_idx[img_idx, cls_idx, slot]
        flat_scores = cand_scores[img_idx, cls_idx, slot]
        flat_boxes = boxes[img_idx, anchor_idx]  # (N, 4) normalized xyxy

        scale = image_sizes.to(boxes.device, torch.float32).flip(-1).repeat(1, 2)  # (B, 4) as (W, H, W, H)
        flat_boxes = flat_boxes.clamp(0, 1) * scale[img_idx]  # pixels
        kept = batched_nms(flat_boxes, flat_scores, img_idx * k + cls_idx, cfg.nms_iou)  # sorted by score
        # Regroup by image (stable sort keeps descending score inside each image), then cap per image.
        kept = kept[torch.sort(img_idx[kept], stable=True).indices]
        kept_img = img_idx[kept]
        counts = torch.bincount(kept_img, minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(kept.numel(), device=kept.device) - starts[kept_img]
        kept = kept[rank < cfg.max_detections]
        counts = counts.clamp(max=cfg.max_detections)
        splits = counts.tolist()
        out_boxes = flat_boxes[kept].split(splits)
        out_scores = flat_scores[kept].split(splits)
        out_labels = (cls_idx[kept] + 1).split(splits)
        return [{"boxes": bx, "scores": sc, "labels": lb} for bx, sc, lb in zip(out_boxes, out_scores, out_labels)]
