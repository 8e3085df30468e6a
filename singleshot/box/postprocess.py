"""Decoding + non-maximum suppression for a whole batch at once.

MLPerf evaluation semantics (seed 000 / RECIPES.md): softmax over classes; per image and class keep scores
> ``score_threshold`` and at most ``candidates_per_class`` best; greedy NMS per class at ``nms_iou``; keep the
``max_detections`` best per image. The per-(image, class) groups of the whole batch are suppressed together (see
:func:`singleshot.box.nms.grouped_nms`), so there is no Python loop over images or classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from singleshot.box.anchors import AnchorSpec, default_boxes
from singleshot.box.coder import BoxCoder
from singleshot.box.nms import group_score_order, grouped_nms


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
        """Entries whose class probability exceeds the score threshold, at most ``candidates_per_class`` best per
        (image, class) when many pass (see below; the caller caps the groups in any case).

        ``cls_logits [B, A, C]`` -> ``(image, anchor, class, score)``, each ``[N]``; class is 0-based over the
        foreground classes.

        Sparse case (MLPerf's 0.05 on a trained SSD: a few hundred anchors per image can pass): one pass over
        ``[B, A, C]`` bounds which anchors can pass, and exact probabilities are computed for those rows only; the
        full probability tensor is never written. Dense case (more than ``_DENSE_FRACTION`` of the anchors can pass,
        as with SSD320's threshold 1e-8, where nearly every (anchor, class) would be a candidate): the best
        ``candidates_per_class`` anchors of every (image, class) are taken with one ``topk`` first, which keeps the
        candidate list at ``B * C * candidates_per_class`` instead of ``B * A * C``.
        """
        thr = self.config.score_threshold
        logits = cls_logits.float()
        b, a, _ = logits.shape
        if self.classifier == "softmax":
            # p_c = exp(l_c - logsumexp(l)) > thr needs l_c > l_0 + log(thr): a bound from one pass, missing nothing.
            fg_max = logits[..., 1:].amax(dim=-1)  # (B, A)
            passing = fg_max > logits[..., 0] + math.log(thr)  # (B, A)
        else:
            passing = logits.amax(dim=-1) > math.log(thr / (1 - thr))  # sigmoid(l) > thr  <=>  l > logit(thr)
        img, anchor = passing.nonzero(as_tuple=True)  # (N,) each
        if img.numel() > _DENSE_FRACTION * b * a and a > self.config.candidates_per_class:
            return self._topk_candidates(logits)
        rows = logits.reshape(-1, logits.shape[-1]).index_select(0, img * a + anchor)  # (N, C)
        if self.classifier == "softmax":
            probs = (rows[:, 1:] - rows.logsumexp(dim=-1, keepdim=True)).exp_()  # (N, K)
        else:
            probs = rows.sigmoid()  # (N, K)
        row, cls = (probs > thr).nonzero(as_tuple=True)
        return img[row], anchor[row], cls, probs[row, cls]

    def _topk_candidates(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The dense case of :meth:`candidates`: top ``candidates_per_class`` anchors per (image, class), then the
        threshold. Equal scores at the cut may be taken in any order (``topk``'s), unlike the sparse case."""
        k = self.config.candidates_per_class
        if self.classifier == "softmax":
            probs = (logits[..., 1:] - logits.logsumexp(dim=-1, keepdim=True)).exp_()  # as the sparse path computes
            scores, anchor = probs.topk(k, dim=1)  # (B, k, K) each
        else:
            top_logits, anchor = logits.topk(k, dim=1)  # sigmoid is monotonic: rank the logits
            scores = top_logits.sigmoid()
        img, slot, cls = (scores > self.config.score_threshold).nonzero(as_tuple=True)
        # Back to (image, anchor) order, as the sparse case lists them (the later score sort is stable).
        anchor, score = anchor[img, slot, cls], scores[img, slot, cls]
        order = (img * logits.shape[1] + anchor).argsort(stable=True)
        return img[order], anchor[order], cls[order], score[order]

    def decode_boxes(self, bbox_regression: Tensor) -> Tensor:
        """``[B, A, 4]`` offsets -> ``[B, A, 4]`` xyxy normalized boxes."""
        anchors = default_boxes(self.anchors, bbox_regression.device, torch.float32)
        return box_convert(self.coder.decode(bbox_regression.float(), anchors), "cxcywh", "xyxy")

    @torch.no_grad()
    def forward(self, bbox_regression: Tensor, cls_logits: Tensor, image_sizes: Tensor) -> list[dict[str, Tensor]]:
        cfg = self.config
        b, num_anchors, c = cls_logits.shape
        k = c - 1 if self.classifier == "softmax" else c
        img, anchor, cls, score = self.candidates(cls_logits)  # (N,) each
        group = img * k + cls  # one NMS group per (image, class)

        # Order by (group, descending score), then keep the best candidates_per_class of each group.
        order = group_score_order(group, score)
        group, img, anchor, cls, score = (t.index_select(0, order) for t in (group, img, anchor, cls, score))
        counts = torch.bincount(group, minlength=b * k)
        if group.numel() and int(counts.max()) > cfg.candidates_per_class:
            top = (_rank_within(group, counts) < cfg.candidates_per_class).nonzero().flatten()
            group, img, anchor, cls, score = (t.index_select(0, top) for t in (group, img, anchor, cls, score))

        scale = image_sizes.to(bbox_regression.device, torch.float32).flip(-1).repeat(1, 2)  # (B, 4): W, H, W, H
        rows = img * num_anchors + anchor  # into the flattened (B * A) outputs
        offsets = bbox_regression.reshape(-1, 4).index_select(0, rows).float()
        boxes = self.coder.decode(offsets, default_boxes(self.anchors, img.device).index_select(0, anchor))
        # NMS sees the unclipped boxes, as in both reference implementations; only the returned boxes are clipped.
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale.index_select(0, img)  # (N, 4) xyxy pixels

        keep = grouped_nms(boxes, score, group, cfg.nms_iou)  # ascending: still ordered by group, then score
        # Per image, the max_detections best: order kept by (image, descending score) and rank within the image.
        keep = keep.index_select(0, group_score_order(img.index_select(0, keep), score.index_select(0, keep)))
        kept_img = img.index_select(0, keep)
        per_image = torch.bincount(kept_img, minlength=b)
        keep = keep[_rank_within(kept_img, per_image) < cfg.max_detections]
        splits = per_image.clamp(max=cfg.max_detections).tolist()
        kept_img = img.index_select(0, keep)
        out_boxes = torch.minimum(boxes.index_select(0, keep).clamp(min=0), scale.index_select(0, kept_img))
        out_scores, out_labels = score.index_select(0, keep), cls.index_select(0, keep) + 1
        return [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(out_boxes.split(splits), out_scores.split(splits), out_labels.split(splits))
        ]


def _rank_within(ids: Tensor, counts: Tensor) -> Tensor:
    """``ids [N]`` non-decreasing segment ids, ``counts [S]`` their bincount -> ``[N]`` position of each entry within
    its segment (0 for the first)."""
    return torch.arange(ids.numel(), device=ids.device) - (counts.cumsum(0) - counts).index_select(0, ids)


# PostProcessor.candidates takes its dense path when more than this share of the anchors can pass the threshold.
_DENSE_FRACTION = 0.25
