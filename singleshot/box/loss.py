"""Detection losses over per-anchor targets, batched (no per-image Python loops).

Both losses take the model's raw outputs and the :class:`~singleshot.box.coder.TargetEncoder` targets:
``bbox_regression [B, A, 4]`` offsets, ``cls_logits [B, A, C]``, ``target_offsets [B, A, 4]``,
``target_labels [B, A]`` int64 with 0 = background, and return a dict with ``loss`` (the scalar to backpropagate)
and detached ``box`` / ``cls`` parts for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from singleshot.box.coder import BoxCoder, sync_free

BOX_LOSSES = ("smooth_l1", "giou")


def offsets_giou_loss(pred: Tensor, target: Tensor, coder: BoxCoder) -> Tensor:
    """``1 - GIoU`` of the boxes two offset codes describe against the same default box: ``float[P]``.

    ``pred``, ``target``: ``float[P, 4]`` offsets in ``coder``'s SSD coding. IoU and GIoU are unchanged by any
    axis-aligned scaling and translation of the plane, so both codes are decoded against the unit default box
    ``(0, 0, 1, 1)`` (cxcywh) instead of their own: the loss needs no anchors and equals GIoU loss of the real boxes.
    """
    unit = pred.new_tensor([[0.0, 0.0, 1.0, 1.0]])
    boxes = [box_convert(coder.decode(code, unit), "cxcywh", "xyxy") for code in (pred, target)]
    return generalized_box_iou_loss(boxes[0], boxes[1], reduction="none")


class MultiBoxLoss(nn.Module):
    """SSD loss with hard-negative mining, as the MLPerf reference computes it (``Loss`` in mlcommons/training
    ``retired_benchmarks/ssd-v1/ssd/base_model.py``).

    Per image: smooth-L1 (beta 1) over the offsets of the P positive anchors (or, with ``box_loss="giou"``,
    ``giou_weight * (1 - GIoU)`` of their decoded boxes, :func:`offsets_giou_loss`), plus softmax cross-entropy over the
    positives and the ``neg_pos_ratio * P`` negatives with the highest loss; the sum is divided by P. Images with
    no positives contribute 0; the result is the mean over the batch.

    Hand-written (torchvision's SSD loss loops per image): one descending sort + scatter picks the same negatives
    as the reference's sort-of-a-sort ranking at half the sorting cost, mining runs without autograd, and on the CPU
    the cross-entropy with gradient is evaluated only on the ~4P selected anchors instead of all of them. On an
    accelerator every anchor's terms are computed and masked (:meth:`_dense`): listing the selected anchors
    (``nonzero``) would make the host wait for the forward pass every step.
    """

    def __init__(self, neg_pos_ratio: float = 3.0, box_loss: str = "smooth_l1", giou_weight: float = 2.0) -> None:
        super().__init__()
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        self.neg_pos_ratio = neg_pos_ratio
        self.box_loss, self.giou_weight = box_loss, giou_weight
        self.coder = BoxCoder()

    def forward(
        self, bbox_regression: Tensor, cls_logits: Tensor, target_offsets: Tensor, target_labels: Tensor
    ) -> dict[str, Tensor]:
        positive = target_labels > 0  # (B, A)
        num_pos = positive.sum(dim=1)  # (B,)
        b = cls_logits.shape[0]
        if sync_free(cls_logits.device):
            box, cls = self._dense(bbox_regression, cls_logits, target_offsets, target_labels, positive, num_pos)
            return self._total(box, cls, num_pos)
        img, anchor = positive.nonzero(as_tuple=True)  # (P,) each
        pred, target = bbox_regression[img, anchor].float(), target_offsets[img, anchor].float()  # (P, 4)
        if self.box_loss == "giou":
            per_pos = self.giou_weight * offsets_giou_loss(pred, target, self.coder)  # (P,)
        else:
            per_pos = F.smooth_l1_loss(pred, target, reduction="none").sum(-1)  # (P,)
        box = bbox_regression.new_zeros(b, dtype=torch.float32).index_add_(0, img, per_pos)  # (B,)

        with torch.no_grad():
            logits = cls_logits.detach().float()
            background_ce = logits.logsumexp(dim=-1) - logits[..., 0]  # (B, A)
        sel_img, sel_anchor = self._negatives(background_ce, positive, num_pos).nonzero(as_tuple=True)  # (K,) each
        # Cross-entropy with gradient only for the ~4P anchors that enter the loss.
        ce = F.cross_entropy(
            cls_logits[sel_img, sel_anchor].float(), target_labels[sel_img, sel_anchor], reduction="none"
        )
        cls = bbox_regression.new_zeros(b, dtype=torch.float32).index_add_(0, sel_img, ce)  # (B,)

        return self._total(box, cls, num_pos)

    def _negatives(self, background_ce: Tensor, positive: Tensor, num_pos: Tensor) -> Tensor:
        """``[B, A]`` bool: the hard negatives (the ``neg_pos_ratio * P`` highest background losses of each image)
        and the positives, the anchors whose cross-entropy enters the loss.

        ``background_ce [B, A]``: each anchor's cross-entropy against the background class, ``lse - l_0``; it ranks
        the negatives (positives never count)."""
        with torch.no_grad():
            a = background_ce.shape[1]
            mining = background_ce.detach().masked_fill(positive, 0.0)  # (B, A)
            order = mining.argsort(dim=1, descending=True)
            num_neg = (self.neg_pos_ratio * num_pos).clamp(max=a).long()  # (B,)
            rank_ok = torch.arange(a, device=mining.device)[None, :] < num_neg[:, None]  # (B, A) in sorted order
            return torch.zeros_like(positive).scatter_(1, order, rank_ok) | positive

    def _dense(self, bbox_regression: Tensor, cls_logits: Tensor, target_offsets: Tensor, target_labels: Tensor,
               positive: Tensor, num_pos: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Per-image box and class sums ``(box [B], cls [B])`` over every anchor, masked: the accelerator's form
        (no ``nonzero``, so the host never waits for the device). Same values as the sparse form, to float
        rounding, while every term is finite."""
        b, a, _ = cls_logits.shape
        pred, target = bbox_regression.float(), target_offsets.float()  # (B, A, 4)
        if self.box_loss == "giou":
            per_anchor = self.giou_weight * offsets_giou_loss(pred.view(-1, 4), target.view(-1, 4), self.coder)
            per_anchor = per_anchor.view(b, a)
        else:
            per_anchor = F.smooth_l1_loss(pred, target, reduction="none").sum(-1)  # (B, A)
        logits = cls_logits.float()
        lse = logits.logsumexp(dim=-1)  # (B, A), once for the mining and the cross-entropy
        selected = self._negatives(lse.detach() - logits.detach()[..., 0], positive, num_pos)
        ce = lse - logits.gather(-1, target_labels[..., None]).squeeze(-1)  # (B, A)
        # A non-finite term of an unselected anchor leaves the masked sums finite but would reach the gradient through
        # torch.where (0 x NaN): "+ 0 x sum" carries it into the loss instead, where the step's guard skips the step.
        box = torch.where(positive, per_anchor, 0.0).sum(dim=1) + 0.0 * per_anchor.sum()  # (B,)
        cls = torch.where(selected, ce, 0.0).sum(dim=1) + 0.0 * ce.sum()  # (B,)
        return box, cls

    @staticmethod
    def _total(box: Tensor, cls: Tensor, num_pos: Tensor) -> dict[str, Tensor]:
        has_pos = (num_pos > 0).to(box.dtype)
        denom = num_pos.to(box.dtype).clamp(min=1e-6)
        box_part = (box * has_pos / denom).mean()
        cls_part = (cls * has_pos / denom).mean()
        return {"loss": box_part + cls_part, "box": box_part.detach(), "cls": cls_part.detach()}


class FocalLoss(nn.Module):
    """Sigmoid focal loss (alpha 0.25, gamma 2) over all anchors + smooth-L1 on positives, as SSD320 v1.2 trains.

    ``cls_logits`` has one channel per foreground class (label ``l`` is channel ``l - 1``). With ``P`` the number of
    positive anchors in the batch and ``n = max(P, 1)`` (the TF API's normalizer):
    ``cls = sum(focal) / n`` and ``box = sum(smooth_l1 over positives) / (n * 4)`` when
    ``normalize_box_by_codesize`` (the TF config's ``normalize_loc_loss_by_codesize: true``: 4 is the code size),
    else ``/ n``. Uses :func:`torchvision.ops.sigmoid_focal_loss`.
    """

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        smooth_l1_beta: float = 1.0,
        normalize_box_by_codesize: bool = False,
    ) -> None:
        super().__init__()
        self.alpha, self.gamma, self.beta = alpha, gamma, smooth_l1_beta
        self.normalize_box_by_codesize = normalize_box_by_codesize

    def forward(
        self, bbox_regression: Tensor, cls_logits: Tensor, target_offsets: Tensor, target_labels: Tensor
    ) -> dict[str, Tensor]:
        positive = target_labels > 0
        denom = positive.sum().clamp(min=1).to(torch.float32)
        # F.one_hot checks the label range with a host read on CUDA; a scatter gives the same tensor without it
        shape = (*target_labels.shape, cls_logits.shape[-1] + 1)
        one_hot = torch.zeros(shape, dtype=torch.float32, device=cls_logits.device)
        one_hot = one_hot.scatter_(-1, target_labels[..., None], 1.0)[..., 1:]  # (B, A, C)
        cls = sigmoid_focal_loss(cls_logits.float(), one_hot, self.alpha, self.gamma, reduction="sum") / denom
        box = F.smooth_l1_loss(bbox_regression.float(), target_offsets.float(), reduction="none", beta=self.beta)
        box_denom = denom * bbox_regression.shape[-1] if self.normalize_box_by_codesize else denom
        box = (box.sum(-1) * positive).sum() / box_denom
        return {"loss": box + cls, "box": box.detach(), "cls": cls.detach()}
