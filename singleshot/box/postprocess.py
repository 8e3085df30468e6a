"""Decoding + non-maximum suppression for a whole batch at once.

MLPerf evaluation semantics (seed 000 / RECIPES.md): softmax over classes; per image and class keep scores
> ``score_threshold`` and at most ``candidates_per_class`` best; greedy NMS per class at ``nms_iou``; keep the
``max_detections`` best per image. The per-(image, class) groups of the whole batch are suppressed together (see
:meth:`PostProcessor._nms`), so there is no Python loop over images or classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, nms

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

    def candidates(self, cls_logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Entries whose class probability exceeds the score threshold.

        ``cls_logits [B, A, C]`` -> ``(image, anchor, class, score)``, each ``[N]``; class is 0-based over the
        foreground classes. The full probability tensor is never written.
        """
        thr = self.config.score_threshold
        logits = cls_logits.float()
        # One pass over [B, A, C] finds the anchors whose best foreground class can pass; exact probabilities are
        # then computed for those rows only (a softmax never exceeds exp(l_c - max_l), so none is missed).
        if self.classifier == "softmax":
            # Some p_c > thr needs max_fg > max(max_fg, l_0) + log(thr), i.e. simply max_fg > l_0 + log(thr).
            fg_max = logits[..., 1:].amax(dim=-1)  # (B, A)
            img, anchor = (fg_max > logits[..., 0] + math.log(thr)).nonzero(as_tuple=True)  # (N,) each
            rows = logits[img, anchor]  # (N, C)
            probs = (rows[:, 1:] - rows.logsumexp(dim=-1, keepdim=True)).exp_()  # (N, K)
        else:
            img, anchor = (logits.amax(dim=-1) > math.log(thr / (1 - thr))).nonzero(as_tuple=True)
            probs = logits[img, anchor].sigmoid()  # (N, K)
        row, cls = (probs > thr).nonzero(as_tuple=True)
        return img[row], anchor[row], cls, probs[row, cls]

    def decode_boxes(self, bbox_regression: Tensor) -> Tensor:
        """``[B, A, 4]`` offsets -> ``[B, A, 4]`` xyxy normalized boxes."""
        anchors = default_boxes(self.anchors, bbox_regression.device, torch.float32)
        return box_convert(self.coder.decode(bbox_regression.float(), anchors), "cxcywh", "xyxy")

    @torch.no_grad()
    def forward(self, bbox_regression: Tensor, cls_logits: Tensor, image_sizes: Tensor) -> list[dict[str, Tensor]]:
        cfg = self.config
        b, _, c = cls_logits.shape
        k = c - 1 if self.classifier == "softmax" else c
        img, anchor, cls, score = self.candidates(cls_logits)  # (N,) each
        group = img * k + cls  # one NMS group per (image, class)

        # Order by (group, descending score), then keep the best candidates_per_class of each group.
        order = _sort_by_group_then_score(group, score)
        group, img, anchor, cls, score = group[order], img[order], anchor[order], cls[order], score[order]
        counts = torch.bincount(group, minlength=b * k)
        if group.numel() and int(counts.max()) > cfg.candidates_per_class:
            rank = torch.arange(group.numel(), device=group.device) - (counts.cumsum(0) - counts)[group]
            top = rank < cfg.candidates_per_class
            group, img, anchor, cls, score = group[top], img[top], anchor[top], cls[top], score[top]

        scale = image_sizes.to(bbox_regression.device, torch.float32).flip(-1).repeat(1, 2)  # (B, 4): W, H, W, H
        boxes = self.coder.decode(bbox_regression[img, anchor].float(), default_boxes(self.anchors, img.device)[anchor])
        # NMS sees the unclipped boxes, as in both reference implementations; only the returned boxes are clipped.
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale[img]  # (N, 4) xyxy pixels, may cross the border

        keep = self._nms(boxes, score, group)  # indices into the candidates, any order
        # Per image, the max_detections best: sort kept by (image, descending score) and rank within the image.
        keep = keep[_sort_by_group_then_score(img[keep], score[keep])]
        per_image = torch.bincount(img[keep], minlength=b)
        rank = torch.arange(keep.numel(), device=keep.device) - (per_image.cumsum(0) - per_image)[img[keep]]
        keep = keep[rank < cfg.max_detections]
        splits = per_image.clamp(max=cfg.max_detections).tolist()
        out_boxes = torch.minimum(boxes[keep].clamp(min=0), scale[img[keep]])  # clip to each image
        return [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(out_boxes.split(splits), score[keep].split(splits), (cls[keep] + 1).split(splits))
        ]

    def _nms(self, boxes: Tensor, scores: Tensor, group: Tensor) -> Tensor:
        """Greedy NMS within each group; ``boxes [N, 4]`` xyxy pixels sorted by group. Returns kept indices.

        Groups are kept apart by shifting each group's boxes by ``group * (max coordinate + 1)`` (torchvision's
        coordinate trick), done once in float64 so that shifts of millions of pixels keep sub-micro-pixel precision
        (in float32 a shift of 1.8M px rounds coordinates to 1/8 px). ``torchvision.ops.nms`` is quadratic in its
        input, so the shifted boxes go through it in blocks of about ``_NMS_BLOCK`` cut at group boundaries.
        """
        n = boxes.shape[0]
        if n == 0:
            return torch.zeros(0, dtype=torch.long, device=boxes.device)
        boxes64 = boxes.double()
        span = boxes64.max() - boxes64.min() + 1
        shifted = boxes64 - boxes64.min() + (group.double() * span)[:, None]
        scores = scores.double()
        thr = self.config.nms_iou
        if n <= _NMS_BLOCK:
            return nms(shifted, scores, thr)
        # Block id of a candidate = where its group starts, in units of _NMS_BLOCK (groups never straddle).
        is_start = torch.ones_like(group, dtype=torch.bool)
        is_start[1:] = group[1:] != group[:-1]
        positions = torch.arange(n, device=group.device)
        group_start = torch.cummax(torch.where(is_start, positions, torch.zeros_like(positions)), 0).values
        sizes = torch.bincount(group_start // _NMS_BLOCK).tolist()
        kept, offset = [], 0
        for size in sizes:
            if size:
                kept.append(nms(shifted[offset : offset + size], scores[offset : offset + size], thr) + offset)
            offset += size
        return torch.cat(kept)


def _sort_by_group_then_score(group: Tensor, score: Tensor) -> Tensor:
    """Permutation ordering ``[N]`` entries by ascending group, then descending score (ties keep their order).

    One float64 key instead of two stable sorts: integer groups are exact in float64 and scores lie in [0, 1]."""
    return (group.double() * 2.0 - score.double()).argsort(stable=True)


# Candidates per torchvision.ops.nms call (a block also takes the rest of the group it ends in): measured best
# between 192 and 384 on a CPU, balancing the kernel's quadratic cost against per-call overhead.
_NMS_BLOCK = 256
