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

    from singleshot.interop import load_weights             # fine-tuning: by name and shape, class rows by name
    load_weights(new_model, "nvidia_ssdpyt_amp_200703.pt", classes=["person", "bicycle", "kite"])

Conversion is a strict renaming (every source tensor used once, every target tensor filled, shapes checked):
the references and singleshot share the head channel layout and the default-box order, so no tensor is permuted.
Importing this package is cheap: nothing is built until a function is called.
"""

from singleshot._lazy import lazy_exports

# Names are imported on first use (PEP 562) so that `singleshot --help` and the config tools start without
# loading torch; `from singleshot... import X` imports X's module at that moment.
_LAZY = {
    "COCO_CATEGORIES": "singleshot.interop.coco",
    "COCO_CLASSES": "singleshot.interop.coco",
    "COCO_LABEL_TO_CATEGORY_ID": "singleshot.interop.coco",
    "InteropError": "singleshot.interop.convert",
    "detect_kind": "singleshot.interop.convert",
    "extract_state_dict": "singleshot.interop.convert",
    "from_foreign": "singleshot.interop.convert",
    "from_mlperf": "singleshot.interop.convert",
    "from_nvidia": "singleshot.interop.convert",
    "to_foreign": "singleshot.interop.convert",
    "to_mlperf": "singleshot.interop.convert",
    "to_nvidia": "singleshot.interop.convert",
    "FORMATS": "singleshot.interop.keymaps",
    "MLPERF": "singleshot.interop.keymaps",
    "NVIDIA": "singleshot.interop.keymaps",
    "ForeignFormat": "singleshot.interop.keymaps",
    "KINDS": "singleshot.interop.reader",
    "load_file": "singleshot.interop.reader",
    "read_checkpoint": "singleshot.interop.reader",
    "WeightsReport": "singleshot.interop.weights",
    "load_weights": "singleshot.interop.weights",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


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
    "WeightsReport",
    "detect_kind",
    "extract_state_dict",
    "from_foreign",
    "from_mlperf",
    "from_nvidia",
    "load_file",
    "load_weights",
    "read_checkpoint",
    "to_foreign",
    "to_mlperf",
    "to_nvidia",
]
