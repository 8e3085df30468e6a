"""Target encoder, loss and post-processor for a :class:`~singleshot.models.spec.DetectorSpec`-like object.

Takes any object with ``anchors``, ``classifier``, ``loss`` and ``postprocess`` attributes (and optionally
``match`` and ``box_loss_by_codesize``), so box math stays independent of the model package.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from singleshot.box.coder import MatchRule, TargetEncoder
from singleshot.box.loss import FocalLoss, MultiBoxLoss
from singleshot.box.postprocess import PostProcessor


def build_encoder(spec: Any) -> TargetEncoder:
    """The :class:`TargetEncoder` of ``spec.anchors`` with the preset's matching rule (``spec.match``)."""
    return TargetEncoder(spec.anchors, rule=getattr(spec, "match", None) or MatchRule())


def build_loss(spec: Any, box_loss: str | None = None) -> nn.Module:
    """``MultiBoxLoss`` (3:1 hard-negative mining) or ``FocalLoss`` (alpha 0.25, gamma 2) as ``spec.loss`` says;
    ``spec.box_loss_by_codesize`` selects the focal loss's box normalizer (matches x 4 instead of matches).
    ``box_loss``: the multibox loss's box term, "smooth_l1" or "giou"; None = ``spec.box_loss`` (smooth-L1 if unset).
    """
    by_codesize = bool(getattr(spec, "box_loss_by_codesize", False))
    box_loss = box_loss or getattr(spec, "box_loss", "smooth_l1")
    if spec.loss == "multibox":
        if by_codesize:
            raise ValueError("box_loss_by_codesize applies to the focal loss only")
        return MultiBoxLoss(box_loss=box_loss)
    if spec.loss == "focal":
        if box_loss != "smooth_l1":
            raise ValueError(f"the focal loss (SSD320) trains its boxes with smooth-L1 only, not {box_loss!r}")
        return FocalLoss(normalize_box_by_codesize=by_codesize)
    raise ValueError(f"unknown loss {spec.loss!r}")


def build_postprocessor(spec: Any, **overrides: Any) -> PostProcessor:
    """Decoding + NMS with the preset's published defaults; ``overrides`` replace fields of ``PostprocessConfig``
    (``score_threshold``, ``nms_iou``, ``candidates_per_class``, ``max_detections``, ``per_class_cap``)."""
    config = dataclasses.replace(spec.postprocess, **overrides)
    return PostProcessor(spec.anchors, classifier=spec.classifier, config=config)
