"""Loss and post-processor for a :class:`~singleshot.models.spec.DetectorSpec`-like object.

Takes any object with ``anchors``, ``classifier``, ``loss`` and ``postprocess`` attributes, so box math stays
independent of the model package.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from singleshot.box.loss import FocalLoss, MultiBoxLoss
from singleshot.box.postprocess import PostProcessor


def build_loss(spec: Any) -> nn.Module:
    """``MultiBoxLoss`` (3:1 hard-negative mining) or ``FocalLoss`` (alpha 0.25, gamma 2) as ``spec.loss`` says."""
    if spec.loss == "multibox":
        return MultiBoxLoss()
    if spec.loss == "focal":
        return FocalLoss()
    raise ValueError(f"unknown loss {spec.loss!r}")


def build_postprocessor(spec: Any, **overrides: Any) -> PostProcessor:
    """Decoding + NMS with the preset's published defaults; ``overrides`` replace fields of ``PostprocessConfig``
    (``score_threshold``, ``nms_iou``, ``candidates_per_class``, ``max_detections``)."""
    config = dataclasses.replace(spec.postprocess, **overrides)
    return PostProcessor(spec.anchors, classifier=spec.classifier, config=config)
