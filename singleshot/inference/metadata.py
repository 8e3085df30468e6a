"""What an exported model needs to carry so that a consumer can use it without being told anything else.

One flat dict of JSON-serializable values, stored in each export format's own place for it (ONNX
``metadata_props``, a TorchScript / ``torch.export`` extra file, the safetensors header)::

    format            "singleshot-export"
    singleshot_version
    model             preset name, e.g. "ssd_tiny";  num_classes  labels incl. background
    classes           K names; label k (1..K) is classes[k - 1]
    label_to_category_id  {"k": category id}  (JSON object keys are strings)
    input             {"size": S, "layout": "NCHW", "color": "RGB", "dtype": "float32" | "uint8",
                       "normalized_inside": bool, "mean": [3], "std": [3]}   mean/std of RGB scaled to [0, 1]
    postprocess       {"score_threshold", "nms_iou", "candidates_per_class", "max_detections"}
    outputs           output names in order; with_nms  bool
    boxes             how the output boxes are expressed

ONNX metadata values must be strings, so every value is stored JSON-encoded under its own key (readable one key at a
time with ONNX Runtime's ``custom_metadata_map``); :func:`decode_metadata` turns such a string map back into the dict.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

FORMAT = "singleshot-export"


def export_metadata(
    model: nn.Module,
    classes: Sequence[str],
    label_to_category_id: Mapping[int, int] | None = None,
    *,
    with_nms: bool = False,
    uint8_input: bool = False,
    outputs: Sequence[str] = ("bbox_regression", "cls_logits"),
    **postprocess_overrides: float,
) -> dict[str, Any]:
    """The metadata dict of the module docstring for ``model`` (a singleshot detector with ``.spec``)."""
    from singleshot import __version__

    spec = model.spec
    num_classes = int(model.num_classes)
    if len(classes) != num_classes - 1:
        raise ValueError(f"{len(classes)} class names for a model with {num_classes - 1} foreground classes")
    l2c = label_to_category_id or {i: i for i in range(1, num_classes)}
    post = {**dataclasses.asdict(spec.postprocess), **postprocess_overrides}
    if with_nms:
        boxes = "boxes [B, D, 4] xyxy normalized to [0, 1] of the input image; labels 0 = padding"
    else:
        boxes = "bbox_regression [B, A, 4]: SSD offsets to the default boxes (decode with singleshot)"
    return {
        "format": FORMAT,
        "singleshot_version": __version__,
        "model": spec.name,
        "num_classes": num_classes,
        "classes": list(classes),
        "label_to_category_id": {str(int(k)): int(v) for k, v in l2c.items()},
        "input": {
            "size": int(spec.image_size),
            "layout": "NCHW",
            "color": "RGB",
            "dtype": "uint8" if uint8_input else "float32",
            "normalized_inside": bool(uint8_input),
            "mean": [float(v) for v in spec.mean],
            "std": [float(v) for v in spec.std],
        },
        "postprocess": {k: _plain(v) for k, v in post.items()},
        "outputs": list(outputs),
        "with_nms": bool(with_nms),
        "boxes": boxes,
    }


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (post-processing settings are numbers, strings or booleans)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return float(value)


def encode_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """Metadata dict -> ``{key: JSON string}`` (ONNX metadata_props and safetensors headers hold strings only)."""
    return {k: json.dumps(v, separators=(",", ":")) for k, v in meta.items()}


def decode_metadata(strings: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`encode_metadata`; keys that are not JSON (written by other tools) are kept as strings."""
    out: dict[str, Any] = {}
    for k, v in strings.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def label_map(meta: Mapping[str, Any]) -> dict[int, int]:
    """``label_to_category_id`` of a metadata dict with int keys again."""
    return {int(k): int(v) for k, v in meta.get("label_to_category_id", {}).items()}
