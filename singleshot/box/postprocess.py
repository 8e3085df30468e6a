"""Decoding + non-maximum suppression for a whole batch at once.

Per image and class: scores above ``score_threshold``, greedy NMS at ``nms_iou``, then the ``max_detections`` best
of the image. The per-class limit ``candidates_per_class`` has two published meanings (``per_class_cap``):

* ``"before_nms"``, MLPerf evaluation (SSD300; ``Encoder.decode_single`` in mlcommons/training
  ``retired_benchmarks/ssd-v1/ssd/utils.py``): the best ``candidates_per_class`` scores of each class *enter* NMS;
  everything NMS keeps from them stays.
* ``"after_nms"``, TF object-detection API's ``batch_multiclass_non_max_suppression`` (SSD320 v1.2): every
  candidate enters NMS, and the first ``candidates_per_class`` boxes NMS *keeps* stay (``max_size_per_class``).

The per-(image, class) groups of the whole batch are suppressed together, so there is no Python loop over images or
classes. Two paths, one result: on the CPU the candidates above the threshold are listed and suppressed as one flat
list (:func:`singleshot.box.nms.grouped_nms`, numba); on an accelerator every tensor has a fixed shape and nothing is
read back before the final per-image split (:mod:`singleshot.box.postprocess_fixed`, one Triton NMS kernel on CUDA).
The choice is :func:`singleshot.box.coder.sync_free`'s, the target encoder's and the losses' too
(``SINGLESHOT_SYNC_FREE=1|0`` forces one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from singleshot.box.anchors import AnchorSpec, default_boxes
from singleshot.box.classifier import SOFTMAX, Classifier, classifier_named
from singleshot.box.coder import BoxCoder, sync_free
from singleshot.box.nms import group_score_order, grouped_nms
from singleshot.box.postprocess_fixed import fixed_shape_detections


@dataclass(frozen=True)
class PostprocessConfig:
    """Decoding defaults of a published evaluation.

    Attributes:
        score_threshold: a (box, class) is a candidate when its probability is > this.
        nms_iou: greedy NMS suppresses a box whose IoU with a kept, higher-scored box of its class is > this.
        candidates_per_class: the per-class limit; what it counts is ``per_class_cap``.
        max_detections: the best this many of an image are returned.
        per_class_cap: "before_nms" (MLPerf: the best ``candidates_per_class`` candidates enter NMS) or
            "after_nms" (TF: at most ``candidates_per_class`` boxes NMS keeps; all candidates enter it).
    """

    score_threshold: float = 0.05
    nms_iou: float = 0.5
    candidates_per_class: int = 200
    max_detections: int = 200
    per_class_cap: str = "before_nms"

    def __post_init__(self) -> None:
        if self.per_class_cap not in ("before_nms", "after_nms"):
            raise ValueError(f"per_class_cap must be 'before_nms' or 'after_nms', got {self.per_class_cap!r}")


@dataclass
class _Kept:
    """Boxes NMS kept, each ``[K]`` (boxes ``[K, 4]`` xyxy pixels, unclipped), ordered by (group, -score)."""

    group: Tensor
    img: Tensor
    cls: Tensor
    score: Tensor
    boxes: Tensor

    def select(self, index: Tensor) -> _Kept:
        return _Kept(*(t.index_select(0, index) for t in (self.group, self.img, self.cls, self.score, self.boxes)))

    @staticmethod
    def cat(parts: list[_Kept]) -> _Kept:
        return _Kept(*(torch.cat([getattr(p, f) for p in parts]) for f in ("group", "img", "cls", "score", "boxes")))


class PostProcessor(nn.Module):
    """Raw outputs -> detections in input-image pixels.

    Call: ``(bbox_regression [B, A, 4], cls_logits [B, A, C], image_sizes [B, 2] (H, W) pixels)`` ->
    list of B dicts with ``boxes [K, 4]`` xyxy in that image's pixels (clipped to it), ``scores [K]`` and
    ``labels [K]`` int64 in 1..num_classes-1, sorted by descending score.

    Args:
        anchors: default-box spec the outputs refer to.
        classifier: the head's classifier kind, :data:`~singleshot.box.classifier.SOFTMAX` (channel 0 is the
            background) or :data:`~singleshot.box.classifier.SIGMOID` (channel c is label c + 1), or its name.
        config: thresholds and limits (:class:`PostprocessConfig`).
    """

    def __init__(
        self,
        anchors: AnchorSpec,
        classifier: Classifier | str = SOFTMAX,
        config: PostprocessConfig | None = None,
        coder: BoxCoder | None = None,
    ) -> None:
        super().__init__()
        self.anchors = anchors
        self.classifier = classifier_named(classifier)
        self.config = config or PostprocessConfig()
        self.coder = coder or BoxCoder()

    # ------------------------------------------------------------------------------------------- candidates
    def candidates(self, cls_logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Entries whose class probability exceeds the score threshold, at most ``candidates_per_class`` best per
        (image, class) when many pass (see below; the caller caps the groups in any case).

        ``cls_logits [B, A, C]`` -> ``(image, anchor, class, score)``, each ``[N]``; class is 0-based over the
        foreground classes.

        Three regimes, one result. Sparse (MLPerf's 0.05 on a trained SSD: a few hundred anchors per image can
        pass): one pass over ``[B, A, C]`` bounds which anchors can pass, and exact probabilities are computed for
        those rows only. Dense (more than ``_DENSE_FRACTION`` of the anchors can pass, as an early-training SSD300
        gives at 0.05): one exact pass over the whole tensor lists the candidates. Saturated (more candidates than
        ``B * classes * candidates_per_class``, as SSD320's threshold 1e-8 gives): the best
        ``candidates_per_class`` anchors of every (image, class) are taken with one ``topk`` first.
        """
        found = self._threshold_candidates(cls_logits.float(), self.config.candidates_per_class)
        return self._topk_candidates(cls_logits.float()) if found is None else found

    def _threshold_candidates(self, logits: Tensor, saturation_k: int) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Every (image, anchor, class) above the threshold, in (image, anchor, class) order; None when there are
        more than ``B * classes * saturation_k`` of them (then a per-group top-k should come first)."""
        thr = self.config.score_threshold
        kind = self.classifier
        b, a, c = logits.shape
        k = kind.num_foreground(c)
        passing = kind.rows_may_pass(logits, thr)  # (B, A)
        img, anchor = passing.nonzero(as_tuple=True)  # (N,) each
        if img.numel() <= _DENSE_FRACTION * b * a or a <= saturation_k:
            rows = logits.reshape(-1, c).index_select(0, img * a + anchor)  # (N, C)
            probs = kind.foreground_probs(rows)  # (N, K)
            row, cls = (probs > thr).nonzero(as_tuple=True)
            return img[row], anchor[row], cls, probs[row, cls]
        # Dense: a superset of the candidates from one comparison pass (the margin absorbs exp/log rounding), then
        # the same exact probability test as the sparse case on those entries only.
        normalizer = kind.log_normalizer(logits)  # (B, A) or None
        maybe = kind.keys_above(logits, normalizer, kind.key_threshold(thr) - _MARGIN)  # (B, A, K)
        if int(maybe.count_nonzero()) > b * k * saturation_k:  # count_nonzero: ~5x faster than a bool sum
            return None
        flat = maybe.view(-1).nonzero().flatten()  # (N,) into (B, A, K), ascending
        cls, row = flat % k, flat // k  # row = image * A + anchor
        probs = kind.key_probs(kind.entry_keys(logits, normalizer, row, cls))
        ok = (probs > thr).nonzero().flatten()
        row = row.index_select(0, ok)
        return row // a, row % a, cls.index_select(0, ok), probs.index_select(0, ok)

    def _topk_candidates(self, logits: Tensor, k: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The saturated case of :meth:`candidates`: top ``k`` (default ``candidates_per_class``) anchors per
        (image, class), then the threshold. Equal scores at the cut may be taken in any order (``topk``'s), unlike
        the other cases."""
        k = k or self.config.candidates_per_class
        scores, anchor = self.classifier.top_anchors(logits, k)  # (B, k, K) each
        img, slot, cls = (scores > self.config.score_threshold).nonzero(as_tuple=True)
        # Back to (image, anchor) order, as the sparse case lists them (the later score sort is stable).
        anchor, score = anchor[img, slot, cls], scores[img, slot, cls]
        order = (img * logits.shape[1] + anchor).argsort(stable=True)
        return img[order], anchor[order], cls[order], score[order]

    def _group_topk(self, logits: Tensor, groups: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The best ``k`` anchors above the threshold of each listed (image, class) group.

        ``logits [B, A, C]``, ``groups [U]`` flat ids ``image * classes + class`` -> ``(image, anchor, class,
        score)``, each ``[N]``, N <= U * k."""
        kind = self.classifier
        num_cls = kind.num_foreground(logits.shape[-1])
        img_u, cls_u = groups // num_cls, groups % num_cls
        scores = kind.key_probs(kind.channel_keys(logits, img_u, cls_u))  # (U, A)
        top, anchor = scores.topk(min(k, scores.shape[1]), dim=1)  # (U, k) each
        u, slot = (top > self.config.score_threshold).nonzero(as_tuple=True)
        return img_u[u], anchor[u, slot], cls_u[u], top[u, slot]

    # ---------------------------------------------------------------------------------------------- decoding
    def decode_boxes(self, bbox_regression: Tensor) -> Tensor:
        """``[B, A, 4]`` offsets -> ``[B, A, 4]`` xyxy normalized boxes."""
        anchors = default_boxes(self.anchors, bbox_regression.device, torch.float32)
        return box_convert(self.coder.decode(bbox_regression.float(), anchors), "cxcywh", "xyxy")

    def _suppress(
        self,
        bbox_regression: Tensor,
        cands: tuple[Tensor, Tensor, Tensor, Tensor],
        num_cls: int,
        scale: Tensor,
        cap_before: int | None,
        cap_after: int | None,
    ) -> _Kept:
        """Candidates ``(image, anchor, class, score)`` -> the boxes greedy NMS keeps per (image, class), with the
        best ``cap_before`` of each group entering NMS and/or the first ``cap_after`` it keeps staying."""
        img, anchor, cls, score = cands
        b, num_anchors = bbox_regression.shape[:2]
        group = img * num_cls + cls  # one NMS group per (image, class)
        # Order by (group, descending score), then keep the best cap_before candidates of each group.
        order = group_score_order(group, score)
        group, img, anchor, cls, score = (t.index_select(0, order) for t in (group, img, anchor, cls, score))
        if cap_before is not None and group.numel():
            counts = torch.bincount(group, minlength=b * num_cls)
            if int(counts.max()) > cap_before:
                top = (_rank_within(group, counts) < cap_before).nonzero().flatten()
                group, img, anchor, cls, score = (t.index_select(0, top) for t in (group, img, anchor, cls, score))

        rows = img * num_anchors + anchor  # into the flattened (B * A) outputs
        offsets = bbox_regression.reshape(-1, 4).index_select(0, rows).float()
        boxes = self.coder.decode(offsets, default_boxes(self.anchors, img.device).index_select(0, anchor))
        # NMS sees the unclipped boxes, as in both reference implementations; only the returned boxes are clipped.
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale.index_select(0, img)  # (N, 4) xyxy pixels
        keep = grouped_nms(boxes, score, group, self.config.nms_iou, max_per_group=cap_after)
        return _Kept(group, img, cls, score, boxes).select(keep)

    def _suppress_capped_after(self, bbox_regression: Tensor, logits: Tensor, num_cls: int, scale: Tensor) -> _Kept:
        """The "after_nms" meaning: all candidates enter NMS, the first ``candidates_per_class`` kept stay.

        When nearly everything passes the threshold (SSD320: 1e-8), sorting every (anchor, class) is avoided
        exactly: greedy NMS decides each box from the higher-scored ones alone, so NMS over a group's best ``k``
        candidates keeps the same first boxes as over all of them. A group is settled once it has its cap, or
        when its best ``k`` were all it had; the others are redone with 4x more (a few rounds at most)."""
        cap = self.config.candidates_per_class
        b, a, _ = logits.shape
        found = self._threshold_candidates(logits, 2 * cap)
        if found is not None:
            return self._suppress(bbox_regression, found, num_cls, scale, None, cap)
        parts: list[_Kept] = []
        pending = torch.arange(b * num_cls, device=logits.device)
        k = 2 * cap
        while pending.numel():
            if pending.numel() == b * num_cls:
                cands = self._topk_candidates(logits, k)
            else:
                cands = self._group_topk(logits, pending, k)
            kept = self._suppress(bbox_regression, cands, num_cls, scale, None, cap)
            if k >= a:  # every candidate of these groups was seen
                parts.append(kept)
                break
            cand_groups = cands[0] * num_cls + cands[2]
            full = torch.bincount(cand_groups, minlength=b * num_cls) >= k  # its best k all passed: maybe more
            short = torch.bincount(kept.group, minlength=b * num_cls) < cap
            redo = full & short  # (B * classes,) bool
            parts.append(kept.select((~redo.index_select(0, kept.group)).nonzero().flatten()))
            pending = redo.nonzero().flatten()
            k *= 4
        kept = _Kept.cat(parts)
        # Back to (group, -score) order, so that equal scores of an image rank by class whichever round found them.
        return kept.select(kept.group.argsort(stable=True)) if len(parts) > 1 else kept

    @torch.no_grad()
    def forward(self, bbox_regression: Tensor, cls_logits: Tensor, image_sizes: Tensor) -> list[dict[str, Tensor]]:
        cfg = self.config
        # Any strides (e.g. the MLPerf / NVIDIA heads' [B, C, A] transposed to [B, A, C]): one copy to the layout
        # every path below reads, which also gives their reductions the same rounding as contiguous inputs.
        bbox_regression, cls_logits = bbox_regression.contiguous(), cls_logits.contiguous()
        b, _, c = cls_logits.shape
        num_cls = self.classifier.num_foreground(c)
        scale = image_sizes.to(bbox_regression.device, torch.float32).flip(-1).repeat(1, 2)  # (B, 4): W, H, W, H
        if sync_free(cls_logits.device):
            boxes, scores, labels, counts = fixed_shape_detections(self, bbox_regression, cls_logits, scale)
            return [
                {"boxes": bx[:n], "scores": sc[:n], "labels": lb[:n]}
                for bx, sc, lb, n in zip(boxes, scores, labels, counts.tolist())  # the one host read
            ]
        if cfg.per_class_cap == "before_nms":
            cands = self.candidates(cls_logits)
            kept = self._suppress(bbox_regression, cands, num_cls, scale, cfg.candidates_per_class, None)
        else:
            kept = self._suppress_capped_after(bbox_regression, cls_logits.float(), num_cls, scale)

        # Per image, the max_detections best: order kept by (image, descending score) and rank within the image.
        kept = kept.select(group_score_order(kept.img, kept.score))
        per_image = torch.bincount(kept.img, minlength=b)
        kept = kept.select((_rank_within(kept.img, per_image) < cfg.max_detections).nonzero().flatten())
        splits = per_image.clamp(max=cfg.max_detections).tolist()
        out_boxes = torch.minimum(kept.boxes.clamp(min=0), scale.index_select(0, kept.img))
        out_labels = kept.cls + 1
        return [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(out_boxes.split(splits), kept.score.split(splits), out_labels.split(splits))
        ]


def _rank_within(ids: Tensor, counts: Tensor) -> Tensor:
    """``ids [N]`` non-decreasing segment ids, ``counts [S]`` their bincount -> ``[N]`` position of each entry within
    its segment (0 for the first)."""
    return torch.arange(ids.numel(), device=ids.device) - (counts.cumsum(0) - counts).index_select(0, ids)


# PostProcessor.candidates leaves its sparse path when more than this share of the anchors can pass the threshold.
_DENSE_FRACTION = 0.25
# Logit margin of the dense path's superset test (float32 exp/log rounding is ~1e-6 relative).
_MARGIN = 1e-3
