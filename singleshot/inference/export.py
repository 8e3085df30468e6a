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
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from singleshot.box.anchors import default_boxes
from singleshot.box.factory import build_postprocessor
from singleshot.box.nms import group_score_order
from singleshot.box.nms import grouped_nms as nms_per_group

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
    from onnxscript import opset18 as op

    max_out = op.Constant(value_ints=[2**31 - 1])
    iou = op.Constant(value_floats=[iou_threshold])
    thr = op.Constant(value_floats=[score_threshold])
    selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, [1]), max_out, iou, thr)  # (M, 3) (g, 0, idx)
    return op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)


class DetectionGraph(nn.Module):
    """Model + decoding + NMS as one module with fixed-size padded outputs (see the module docstring)."""

    def __init__(self, model: nn.Module, **postprocess_overrides: float) -> None:
        super().__init__()
        self.model = model
        self.post = build_postprocessor(model.spec, **postprocess_overrides)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg = self.post.config
        bbox_regression, cls_logits = self.model(images)
        # (B, A, 4) xyxy normalized; NMS sees unclipped boxes, as PostProcessor and the references do
        boxes = self.post.decode_boxes(bbox_regression)
        probs = cls_logits.float().softmax(-1)[..., 1:] if self.post.classifier == "softmax" else cls_logits.sigmoid()
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


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    with_nms: bool = False,
    opset: int = OPSET,
    **postprocess_overrides: float,
) -> Path:
    """Export ``model`` (raw outputs, or with NMS; see the module docstring) to ``path`` with a dynamic batch.

    ``postprocess_overrides`` (``score_threshold``, ``nms_iou``, ``candidates_per_class``, ``max_detections``)
    replace the preset's post-processing defaults in the NMS variant; they are baked into the graph.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu().float()
    size = model.spec.image_size
    example = torch.zeros(2, 3, size, size)
    module: nn.Module = DetectionGraph(model, **postprocess_overrides).eval() if with_nms else model
    outputs = ["boxes", "scores", "labels", "num_detections"] if with_nms else ["bbox_regression", "cls_logits"]
    # Build the default boxes eagerly first so that the traced graph holds them as a constant (the cache is never
    # filled under the exporter's fake tensors).
    default_boxes(model.spec.anchors, "cpu", torch.float32)
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
    return path


RAW_ATOL, RAW_RTOL = 1e-4, 1e-3  # fp32 graph vs fp32 PyTorch: |onnx - torch| <= atol + rtol * |torch|


def run_onnx(path: str | os.PathLike[str], images: Tensor) -> list[np.ndarray]:
    """Run an exported graph in ONNX Runtime (CPU) on ``images float32[B, 3, S, S]``; outputs in graph order."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.detach().cpu().numpy()})


def verify_onnx(model: nn.Module, path: str | os.PathLike[str], *, with_nms: bool = False, batch: int = 2,
                seed: int = 0, **postprocess_overrides: float) -> str:
    """Compare ONNX Runtime with PyTorch on a random batch; one line of text, containing MISMATCH on failure.

    Raw graph: every output within ``RAW_ATOL + RAW_RTOL * |torch|``. NMS graph: the same ``num_detections`` per
    image, labels equal and boxes/scores within 1e-4 on the real rows.
    """
    size = model.spec.image_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    module = DetectionGraph(model, **postprocess_overrides).eval() if with_nms else model.eval()
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    got = run_onnx(path, x)
    if not with_nms:
        worst = max(float(np.max(np.abs(g - e) - RAW_RTOL * np.abs(e))) for g, e in zip(got, expected))
        diff = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))
        ok = worst <= RAW_ATOL
        return (f"onnxruntime vs PyTorch (batch {batch}): max |diff| {diff:.2e} "
                f"(tolerance {RAW_ATOL:g} + {RAW_RTOL:g}*|x|): {'ok' if ok else 'MISMATCH'}")
    counts_ok = bool(np.array_equal(got[3], expected[3]))
    ok = counts_ok
    diff = 0.0
    if counts_ok:
        real = np.arange(got[1].shape[1])[None, :] < got[3][:, None]  # (B, D) rows that hold detections
        diff = max(float(np.abs(got[0] - expected[0])[real].max(initial=0)),
                   float(np.abs(got[1] - expected[1])[real].max(initial=0)))
        ok = diff <= 1e-4 and bool(np.array_equal(got[2][real], expected[2][real]))
    return (f"onnxruntime vs PyTorch (batch {batch}): detections per image {got[3].tolist()} vs "
            f"{expected[3].tolist()}, max |diff| boxes/scores {diff:.2e}: {'ok' if ok else 'MISMATCH'}")
