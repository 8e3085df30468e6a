"""Fixed-shape post-processing: the accelerator path of :class:`~singleshot.box.postprocess.PostProcessor`.

The list path (the CPU's) lists the candidates that pass the score threshold, which needs the host to learn how many
there are, and sends them through NMS as one flat list. On a GPU each such read waits for the whole queue. Here every
tensor's shape is known before the data is seen, so the host waits only for the final per-image split:

1. per (image, class) group, the best ``k`` scores (one ``topk`` over ``[B, K, A]``), ordered by descending score
   and ascending anchor (the list path's order), with the threshold as a mask: groups ``[B * K, k]``;
2. their boxes decoded (``[B * K * k, 4]``) and one :func:`~singleshot.box.nms.padded_nms` over every group (one
   Triton kernel on CUDA);
3. per image, the ``max_detections`` best kept boxes (one ``topk`` over keys that encode score, class and slot).

The op count is the same for any batch and class count. The result equals the list path's: same boxes, scores,
labels and order (the tests compare them), except that equal scores exactly at the ``k``-th place of a group may be
taken in either order (``topk``'s).

``per_class_cap="after_nms"`` (every candidate enters NMS, the first ``k`` kept stay) starts from the best
``2 k`` of each group and redoes, with 4x more, the groups whose best were all candidates and that kept fewer than
``k``: one host check per round, usually one round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torchvision.ops import box_convert

from singleshot.box.anchors import default_boxes
from singleshot.box.nms import descending_score_key, padded_nms

if TYPE_CHECKING:
    from singleshot.box.postprocess import PostProcessor

_NONE = torch.iinfo(torch.int64).max  # sort key of an empty slot


def fixed_shape_detections(
    post: PostProcessor, bbox_regression: Tensor, cls_logits: Tensor, scale: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Raw outputs -> padded detections.

    Args:
        post: thresholds, limits, anchors, coder and classifier kind.
        bbox_regression: ``[B, A, 4]`` offsets.
        cls_logits: ``[B, A, C]``.
        scale: ``[B, 4]`` (W, H, W, H) pixels of each image.

    Returns:
        ``boxes [B, D, 4]`` xyxy pixels clipped to the image, ``scores [B, D]``, ``labels [B, D]`` int64 in
        1..num_classes-1, each image's rows sorted by descending score, and ``counts [B]``: image ``i``'s detections
        are its first ``counts[i]`` rows (D = ``max_detections`` or fewer).
    """
    cfg = post.config
    logits = cls_logits.float()
    b, a, _ = logits.shape
    cap = cfg.candidates_per_class
    after = cfg.per_class_cap == "after_nms"
    k = min(a, 2 * cap if after else cap)
    scores, boxes, keep, counts = _groups(post, bbox_regression, logits, scale, k)  # (G, k) ...
    if after:
        keep &= keep.cumsum(-1) <= cap
        scores, boxes, keep = _first_kept(scores, boxes, keep, cap)
        while k < a:
            redo = (counts == k) & (keep.sum(-1) < cap)  # its best k all passed, and NMS kept fewer than cap
            if not bool(redo.any()):  # the one host check of a round
                break
            k = min(a, 4 * k)
            rows = redo.nonzero().flatten()  # (U,) group ids image * classes + class
            s, bx, kp, found = _groups(post, bbox_regression, logits, scale, k, rows)
            kp &= kp.cumsum(-1) <= cap
            s, bx, kp = _first_kept(s, bx, kp, cap)
            scores[rows], boxes[rows], keep[rows] = s, bx, kp
            counts = torch.zeros_like(counts)
            counts[rows] = found  # only the groups redone in this round can need another one
    return _best_per_image(scores, boxes, keep, b, cfg.max_detections, scale)


def _groups(
    post: PostProcessor, bbox_regression: Tensor, logits: Tensor, scale: Tensor, k: int, groups: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The best ``k`` candidates of each group, decoded and suppressed.

    ``groups [U]``: flat group ids ``image * K + class`` (class 0-based over the foreground classes); None = every
    group of the batch (U = B * K, image-major). Returns ``scores [U, k]``, ``boxes [U, k, 4]`` xyxy pixels
    (unclipped), ``keep [U, k]`` bool (what NMS keeps, padding never) and ``counts [U]`` (candidates per group).
    """
    b, a, c = logits.shape
    kind = post.classifier
    num_cls = kind.num_foreground(c)
    # Groups rank the classifier's keys (log-probabilities, or logits for the sigmoid), ordered like the scores.
    if groups is None:
        keys = kind.score_keys(logits)  # (B, A, K)
        top, anchor = keys.transpose(1, 2).topk(k, dim=-1)  # (B, K, k)
        top, anchor = top.flatten(0, 1), anchor.flatten(0, 1)  # (U, k)
        img = torch.arange(b * num_cls, device=logits.device) // num_cls  # (U,)
    else:
        img, cls = groups // num_cls, groups % num_cls
        top, anchor = kind.channel_keys(logits, img, cls).topk(k, dim=-1)  # (U, A) -> (U, k)
    scores = kind.key_probs(top)  # (U, k)
    # The list path's order within a group: descending score, ties by ascending anchor.
    order = ((descending_score_key(scores) << _bits(a)) | anchor).argsort(dim=-1)
    scores, anchor = scores.gather(-1, order), anchor.gather(-1, order)
    counts = (scores > post.config.score_threshold).sum(-1)  # (U,) the passing scores lead each row

    flat = (img[:, None] * a + anchor).flatten()  # (U * k,) into the flattened (B * A) outputs
    offsets = bbox_regression.reshape(-1, 4).index_select(0, flat).float()
    priors = default_boxes(post.anchors, logits.device).index_select(0, anchor.flatten())
    boxes = box_convert(post.coder.decode(offsets, priors), "cxcywh", "xyxy")  # (U * k, 4) normalized
    boxes = boxes.view(*anchor.shape, 4) * scale.index_select(0, img)[:, None, :]  # (U, k, 4) pixels
    # NMS sees the unclipped boxes, as in both reference implementations; only the returned boxes are clipped.
    keep = padded_nms(boxes, counts, post.config.nms_iou)
    return scores, boxes, keep, counts


def _first_kept(scores: Tensor, boxes: Tensor, keep: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's kept entries moved to its front, in order, and the rows cut to ``width``: ``[U, k]`` -> ``[U,
    width]`` (boxes ``[U, width, 4]``)."""
    order = (~keep).to(torch.uint8).argsort(dim=-1, stable=True)[:, :width]  # (U, width)
    return scores.gather(-1, order), boxes.gather(1, order[..., None].expand(-1, -1, 4)), keep.gather(-1, order)


def _best_per_image(
    scores: Tensor, boxes: Tensor, keep: Tensor, b: int, max_detections: int, scale: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Groups ``[B * K, W]`` (image-major) -> each image's ``max_detections`` best kept entries, ordered by descending
    score, then class, then slot (the list path's order)."""
    width = scores.shape[-1]
    per_image = scores.shape[0] // b * width  # K * W slots of an image
    position = torch.arange(per_image, device=scores.device)  # class * W + slot
    key = (descending_score_key(scores.view(b, per_image)) << _bits(per_image)) | position  # (B, K * W)
    key = torch.where(keep.view(b, per_image), key, _NONE)
    d = min(max_detections, per_image)
    best = key.topk(d, dim=-1, largest=False).values  # (B, D), ascending
    found = best != _NONE
    slot = torch.where(found, best & ((1 << _bits(per_image)) - 1), 0)  # (B, D) into the image's K * W slots
    out_scores = scores.view(b, per_image).gather(-1, slot)
    out_boxes = boxes.view(b, per_image, 4).gather(1, slot[..., None].expand(-1, -1, 4))
    out_boxes = torch.minimum(out_boxes.clamp(min=0), scale[:, None, :])
    return out_boxes, out_scores, slot // width + 1, found.sum(-1)


def _bits(n: int) -> int:
    """Bits that hold 0..n-1."""
    return max(1, (n - 1).bit_length())
