"""ONNX export with a dynamic batch dimension, in two variants.

``raw`` (default): input ``images float32[B, 3, S, S]`` (ImageNet-normalized RGB) -> outputs
``bbox_regression float32[B, A, 4]`` and ``cls_logits float32[B, A, C]``, exactly the PyTorch model's outputs.

``with_nms=True``: the same input -> decoding, score threshold, per-class top-k, per-class NMS and the per-image
cap inside the graph, with fixed-size padded outputs (``D`` = the preset's ``max_detections``)::

    boxes          float32[B, D, 4]  xyxy normalized to [0, 1] (multiply by (W, H, W, H) of the original image)
    scores         float32[B, D]     descending; 0 in padding rows
    labels         int64[B, D]       1..K; 0 in padding rows
    num_detections int64[B]          rows [0, num_detections) of each image are real

The per-class NMS is ONNX ``NonMaxSuppression`` run over ``B * K`` independent (image, class) groups of
``candidates_per_class`` boxes each, which is how the op batches natively: one group's boxes never see another's.
In PyTorch the same step is a custom op (``singleshot::grouped_nms``) implemented with
:func:`singleshot.box.nms.grouped_nms`, so the exported graph and eager PyTorch compute the same thing.

``uint8_input=True`` makes the input ``images uint8[B, 3, S, S]`` (RGB already resized to S x S) and moves the
normalization ``(x - 255 mean) / (255 std)`` into the graph, so a consumer only decodes and resizes.
The file's ``metadata_props`` carry :mod:`singleshot.inference.metadata` (class names, label map, input size,
mean/std, thresholds, model name, singleshot version), one JSON-encoded value per key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from singleshot._extras import require
from singleshot.box.anchors import default_boxes
from singleshot.box.nms import group_score_order
from singleshot.box.nms import grouped_nms as nms_per_group
from singleshot.box.postprocess import PostProcessor
from singleshot.data.photometric import normalize
from singleshot.inference.core import InferenceCore

OPSET = 18


@torch.library.custom_op("singleshot::grouped_nms", mutates_args=())
def grouped_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    """Greedy NMS inside each of G groups.

    Args:
        boxes: ``float[G, N, 4]`` xyxy (any units).
        scores: ``float[G, N]``; boxes scoring ``<= score_threshold`` are dropped first.
    Returns:
        ``int64[M, 2]`` rows ``(group, index)`` of the kept boxes (ONNX NonMaxSuppression's selected indices with
        the class column removed).
    """
    n = boxes.shape[1]
    flat_scores = scores.reshape(-1)  # (G, N) -> (G*N,)
    candidates = torch.nonzero(flat_scores > score_threshold).squeeze(1)
    groups = torch.div(candidates, n, rounding_mode="floor")
    order = group_score_order(groups, flat_scores[candidates])
    candidates, groups = candidates[order], groups[order]
    keep = candidates[nms_per_group(boxes.reshape(-1, 4)[candidates], flat_scores[candidates], groups, iou_threshold)]
    keep = keep.sort().values  # ONNX returns groups in order
    return torch.stack([torch.div(keep, n, rounding_mode="floor"), keep % n], dim=1)


@grouped_nms.register_fake
def _grouped_nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    m = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((m, 2), dtype=torch.int64)


def _grouped_nms_onnx(boxes, scores, iou_threshold: float, score_threshold: float):  # type: ignore[no-untyped-def]
    """onnxscript translation: ``NonMaxSuppression`` with groups as the batch axis and a single class."""
    op = require("onnxscript", "export", "ONNX export").opset18

    max_out = op.Constant(value_ints=[2**31 - 1])
    iou = op.Constant(value_floats=[iou_threshold])
    thr = op.Constant(value_floats=[score_threshold])
    selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, [1]), max_out, iou, thr)  # (M, 3) (g, 0, idx)
    return op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)


class DetectionGraph(nn.Module):
    """Model + decoding + NMS as one module with fixed-size padded outputs (see the module docstring).

    ``post`` is the model's :class:`~singleshot.inference.core.InferenceCore` post-processor (its thresholds, box
    decoding and classifier): the graph computes what that post-processor computes, in fixed shapes, which
    :func:`singleshot.inference.verify.verify_export` and the export tests check detection by detection.
    """

    def __init__(self, model: nn.Module, post: PostProcessor) -> None:
        super().__init__()
        self.model = model
        self.post = post
        cap = post.config.per_class_cap
        if cap != "before_nms":  # the graph's per-class top-k runs before NMS, as MLPerf's decoding does
            raise ValueError(
                f"{model.spec.name} caps candidates per class {cap}, which this NMS graph does not implement: export "
                "the raw outputs (without --with-nms); singleshot evaluates and predicts with those"
            )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg = self.post.config
        bbox_regression, cls_logits = self.model(images)
        # (B, A, 4) xyxy normalized; NMS sees unclipped boxes, as PostProcessor and the references do
        boxes = self.post.decode_boxes(bbox_regression)
        probs = self.post.classifier.foreground_probs(cls_logits.float())  # (B, A, K): the post-processor's scores
        scores = probs.transpose(1, 2)  # (B, A, K) -> (B, K, A); dense: the graph keeps fixed shapes up to NMS
        b, k, a = scores.shape
        top = min(cfg.candidates_per_class, a)
        cand_scores, cand_idx = scores.topk(top, dim=2)  # (B, K, T)
        cand_boxes = torch.gather(boxes[:, None].expand(b, k, a, 4), 2, cand_idx[..., None].expand(b, k, top, 4))
        keep = grouped_nms(cand_boxes.reshape(b * k, top, 4), cand_scores.reshape(b * k, top), cfg.nms_iou,
                           cfg.score_threshold)  # (M, 2) rows (image * K + class, slot)
        flat = keep[:, 0] * top + keep[:, 1]  # index into (B*K*T,)
        kept_scores = torch.zeros(b * k * top, dtype=cand_scores.dtype, device=images.device)
        kept_scores = kept_scores.index_put((flat,), cand_scores.reshape(-1)[flat])
        d = min(cfg.max_detections, k * top)
        out_scores, order = kept_scores.view(b, k * top).topk(d, dim=1)  # (B*K*T,) -> (B, K*T) -> (B, D)
        valid = out_scores > 0
        out_boxes = torch.gather(cand_boxes.reshape(b, k * top, 4), 1, order[..., None].expand(b, d, 4))
        out_labels = torch.div(order, top, rounding_mode="floor") + 1
        return (
            out_boxes.clamp(0, 1) * valid[..., None],
            out_scores,
            out_labels * valid,
            valid.sum(dim=1),
        )


class Uint8Input(nn.Module):
    """``uint8[B, 3, S, S]`` RGB -> ``module(normalize(x))``: normalization inside an exported graph.

    The arithmetic is :func:`singleshot.data.photometric.normalize` itself (mean and std as buffers, so the graph holds
    them as constants), so a graph with this front end and PyTorch on a preprocessed batch see the same numbers.
    """

    def __init__(self, module: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, images: Tensor) -> Any:
        return self.module(normalize(images, self.mean, self.std))


def output_names(with_nms: bool) -> list[str]:
    return ["boxes", "scores", "labels", "num_detections"] if with_nms else ["bbox_regression", "cls_logits"]


def export_module(model: nn.Module, *, with_nms: bool = False, uint8_input: bool = False,
                  **postprocess_overrides: float) -> nn.Module:
    """The module every exporter traces: the model, optionally with decoding + NMS and/or the uint8 front end.

    Also builds the default boxes eagerly so that a traced graph holds them as a constant (the cache is never
    filled under an exporter's fake tensors).
    """
    model = model.eval().cpu().float()
    default_boxes(model.spec.anchors, "cpu", torch.float32)
    module: nn.Module = model
    if with_nms:
        post = InferenceCore(model, device="cpu", precision="fp32", **postprocess_overrides).postprocessor()
        module = DetectionGraph(model, post).eval()
    if uint8_input:
        module = Uint8Input(module, model.spec.mean, model.spec.std).eval()
    return module


def example_input(model: nn.Module, batch: int = 2, uint8_input: bool = False) -> Tensor:
    size = model.spec.image_size
    return torch.zeros(batch, 3, size, size, dtype=torch.uint8 if uint8_input else torch.float32)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    with_nms: bool = False,
    uint8_input: bool = False,
    metadata: Mapping[str, Any] | None = None,
    opset: int = OPSET,
    **postprocess_overrides: float,
) -> Path:
    """Export ``model`` (raw outputs, or with NMS; see the module docstring) to ``path`` with a dynamic batch.

    ``postprocess_overrides`` (``score_threshold``, ``nms_iou``, ``candidates_per_class``, ``max_detections``)
    replace the preset's post-processing defaults in the NMS variant; they are baked into the graph.
    ``metadata`` (see :func:`singleshot.inference.metadata.export_metadata`) is stored in ``metadata_props``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = export_module(model, with_nms=with_nms, uint8_input=uint8_input, **postprocess_overrides)
    example = example_input(model, 2, uint8_input)
    outputs = output_names(with_nms)
    for module_name in ("onnx", "onnxscript"):  # torch.onnx.export(dynamo=True) needs both
        require(module_name, "export", "ONNX export")
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=outputs,
            dynamic_shapes={"images": {0: batch}},
            opset_version=opset,
            custom_translation_table={torch.ops.singleshot.grouped_nms.default: _grouped_nms_onnx},
            external_data=False,
            verbose=False,
        )
    program.save(os.fspath(path))
    if metadata:
        write_onnx_metadata(path, metadata)
    return path


def write_onnx_metadata(path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
    """Replace the ``metadata_props`` of an ONNX file with ``metadata`` (one JSON-encoded value per key)."""
    onnx = require("onnx", "export", "ONNX export")

    from singleshot.inference.metadata import encode_metadata

    proto = onnx.load(os.fspath(path))
    del proto.metadata_props[:]
    for key, value in encode_metadata(metadata).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, os.fspath(path))


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata dict of an ONNX file written by :func:`export_onnx` (read without loading the weights)."""
    onnx = require("onnx", "export", "reading ONNX metadata")

    from singleshot.inference.metadata import decode_metadata

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in proto.metadata_props})


def run_onnx(path: str | os.PathLike[str], images: Tensor) -> list[np.ndarray]:
    """Run an exported graph in ONNX Runtime (CPU) on ``images`` ``[B, 3, S, S]`` (float32 normalized, or uint8
    for a ``uint8_input`` graph); outputs in graph order."""
    ort = require("onnxruntime", "export", "running an ONNX graph")

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: images.detach().cpu().numpy()})
