"""singleshot: SSD object detectors (MLPerf SSD300-ResNet-34, NVIDIA SSD300 v1.1, SSD320 v1.2) in PyTorch."""

import os

# Back large CPU tensors (input batches, IoU scratch) with transparent huge pages: fresh multi-megabyte buffers
# otherwise pay a page fault per 4 KiB. Read by torch when it is first imported; a user's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from singleshot.box import (
    BoxCoder,
    FocalLoss,
    MultiBoxLoss,
    PostProcessor,
    TargetEncoder,
    default_boxes,
)
from singleshot.box.factory import build_loss, build_postprocessor
from singleshot.inference import Detector
from singleshot.models import DetectorSpec, build_model, list_models

__version__ = "0.1.0"

__all__ = [
    "BoxCoder",
    "Detector",
    "DetectorSpec",
    "FocalLoss",
    "MultiBoxLoss",
    "PostProcessor",
    "TargetEncoder",
    "build_loss",
    "build_model",
    "build_postprocessor",
    "default_boxes",
    "list_models",
]
