"""Box mathematics: default boxes, matching and coding, losses, decoding and NMS (all batched, device-side)."""

from singleshot.box.anchors import (
    SSD300_ANCHORS,
    AnchorSpec,
    MultiscaleAnchorSpec,
    SSDAnchorSpec,
    default_boxes,
    default_boxes_xyxy,
)
from singleshot.box.classifier import SIGMOID, SOFTMAX, Classifier, classifier_named
from singleshot.box.coder import (
    MLPERF_MATCH,
    TF_ARGMAX_MATCH,
    BoxCoder,
    MatchRule,
    TargetEncoder,
    match_dense,
    match_positives,
)
from singleshot.box.loss import FocalLoss, MultiBoxLoss
from singleshot.box.nms import group_score_order, grouped_nms
from singleshot.box.postprocess import PostprocessConfig, PostProcessor

__all__ = [
    "MLPERF_MATCH",
    "SIGMOID",
    "SOFTMAX",
    "SSD300_ANCHORS",
    "TF_ARGMAX_MATCH",
    "AnchorSpec",
    "BoxCoder",
    "Classifier",
    "FocalLoss",
    "MatchRule",
    "MultiBoxLoss",
    "MultiscaleAnchorSpec",
    "PostProcessor",
    "PostprocessConfig",
    "SSDAnchorSpec",
    "TargetEncoder",
    "classifier_named",
    "default_boxes",
    "default_boxes_xyxy",
    "group_score_order",
    "grouped_nms",
    "match_dense",
    "match_positives",
]
