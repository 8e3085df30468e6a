"""Interoperability with the published SSD300 implementations' checkpoints.

* MLPerf Training reference SSD300-ResNet-34 (``model.layer1.*``, ``model.layer2.*``, ...) <-> ``ssd300_resnet34``
* NVIDIA SSD300 v1.1 ResNet-50 (``feature_extractor.feature_extractor.*``, ...) <-> ``ssd300_resnet50``

Usage::

    from singleshot.interop import read_checkpoint
    from singleshot.checkpoint import model_from_checkpoint

    ckpt = read_checkpoint("nvidia_ssdpyt_amp_200703.pt")   # any of: singleshot, MLPerf, NVIDIA; kind detected
    model = model_from_checkpoint(ckpt).eval()               # same raw outputs as the original, transposed

    from singleshot.interop import from_nvidia, to_nvidia   # in-memory conversions, both directions
    nvidia_ckpt = to_nvidia(ckpt)                            # {"model": state_dict, "label_map": {...}}

Conversion is a strict renaming (every source tensor used once, every target tensor filled, shapes checked):
the references and singleshot share the head channel layout and the default-box order, so no tensor is permuted.
Importing this package is cheap: nothing is built until a function is called.
"""

from singleshot.interop.coco import COCO_CATEGORIES, COCO_CLASSES, COCO_LABEL_TO_CATEGORY_ID
from singleshot.interop.convert import (
    InteropError,
    detect_kind,
    extract_state_dict,
    from_foreign,
    from_mlperf,
    from_nvidia,
    to_foreign,
    to_mlperf,
    to_nvidia,
)
from singleshot.interop.keymaps import FORMATS, MLPERF, NVIDIA, ForeignFormat
from singleshot.interop.reader import KINDS, load_file, read_checkpoint

__all__ = [
    "COCO_CATEGORIES",
    "COCO_CLASSES",
    "COCO_LABEL_TO_CATEGORY_ID",
    "FORMATS",
    "KINDS",
    "MLPERF",
    "NVIDIA",
    "ForeignFormat",
    "InteropError",
    "detect_kind",
    "extract_state_dict",
    "from_foreign",
    "from_mlperf",
    "from_nvidia",
    "load_file",
    "read_checkpoint",
    "to_foreign",
    "to_mlperf",
    "to_nvidia",
]
