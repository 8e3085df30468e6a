"""Does an exported file compute what the PyTorch model computes? Raw outputs and final detections, on real images.

A comparison on images where the model finds nothing proves little for the detections (both sides return zero
boxes), so :func:`verify_export` counts the detections it compared and reports ``unverified`` when there were none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from singleshot.data.photometric import normalize
from singleshot.inference.core import InferenceCore
from singleshot.inference.export import DetectionGraph
from singleshot.inference.loading import Runner

RAW_ATOL, RAW_RTOL = 1e-4, 1e-3  # fp32 file vs fp32 PyTorch: |exported - torch| <= atol + rtol * |torch|
DET_ATOL = 1e-4  # scores and boxes (normalized units) of matching detections


@dataclass
class Verification:
    """Outcome of :func:`verify_export`: ``status`` is "ok", "MISMATCH" or "unverified" (no detections)."""

    status: str
    text: str
    detections: int  # detections compared (PyTorch's count over the batch)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _compare_detections(got: list[dict[str, Tensor]], ref: list[dict[str, Tensor]], scale: float) -> tuple[bool, float]:
    """Same count and labels per image, boxes (divided by ``scale`` to normalized units) and scores within DET_ATOL."""
    worst = 0.0
    for g, r in zip(got, ref):
        if len(g["scores"]) != len(r["scores"]) or not torch.equal(g["labels"], r["labels"]):
            return False, float("inf")
        if len(r["scores"]):
            worst = max(worst, float((g["scores"] - r["scores"]).abs().max()),
                        float((g["boxes"] - r["boxes"]).abs().max()) / scale)
    return worst <= DET_ATOL, worst


@torch.no_grad()
def verify_export(model: nn.Module, runner: Runner, images: Tensor, **postprocess_overrides: float) -> Verification:
    """Run ``runner`` and PyTorch on ``images`` and compare raw outputs and detections.

    Args:
        model: the fp32 PyTorch model the file was exported from.
        runner: :func:`singleshot.inference.loading.load_runner` of the file (its metadata says whether the graph
            takes uint8 and holds NMS).
        images: ``uint8[B, 3, S, S]`` RGB, already resized to the model's input size.
        postprocess_overrides: the thresholds the file was exported with (NMS graphs) or the ones to decode with.
    Raw-output files: every output within ``RAW_ATOL + RAW_RTOL * |torch|``, then both decoded with the same
    post-processor must give the same detections. NMS graphs: the padded outputs equal PyTorch's
    :class:`~singleshot.box.postprocess.PostProcessor` detections (count, labels, boxes, scores).
    """
    model = model.eval().cpu().float()
    meta = runner.metadata
    with_nms = bool(meta.get("with_nms", False))
    x = normalize(images, model.spec.mean, model.spec.std)
    got = runner(images if meta.get("input", {}).get("dtype") == "uint8" else x)
    size = model.spec.image_size
    sizes = torch.tensor([[size, size]] * len(images))
    core = InferenceCore(model, device="cpu", precision="fp32", **postprocess_overrides)
    raw = core.forward(x)
    reference = core.postprocess(raw, sizes)
    count = sum(len(r["scores"]) for r in reference)
    label = f"{runner.format} vs PyTorch ({len(images)} images, {count} detections)"
    if with_nms:
        boxes, scores, labels, num = (torch.from_numpy(np.asarray(a)) for a in got)
        eager = DetectionGraph(model, core.postprocessor())(x)
        same_graph = bool(torch.equal(num, eager[3]))
        dets = [{"boxes": boxes[i, : int(n)] * size, "scores": scores[i, : int(n)], "labels": labels[i, : int(n)]}
                for i, n in enumerate(num.tolist())]
        ok, worst = _compare_detections(dets, reference, size)
        ok = ok and same_graph
        text = f"{label}: detections per image {num.tolist()}, max |diff| boxes/scores {worst:.2e}"
    else:
        worst_raw = max(float(np.max(np.abs(g - e.numpy()) - RAW_RTOL * np.abs(e.numpy()))) for g, e in zip(got, raw))
        diff = max(float(np.max(np.abs(g - e.numpy()))) for g, e in zip(got, raw))
        dets = core.postprocess((torch.from_numpy(got[0]), torch.from_numpy(got[1])), sizes)
        ok_det, worst = _compare_detections(dets, reference, size)
        ok = worst_raw <= RAW_ATOL and ok_det
        text = (f"{label}: raw max |diff| {diff:.2e} (tolerance {RAW_ATOL:g} + {RAW_RTOL:g}*|x|), "
                f"detections max |diff| {worst:.2e}")
    if not ok:
        return Verification("MISMATCH", f"{text}: MISMATCH", count)
    if count == 0:
        return Verification("unverified", f"{text}: detections unverified (the model finds nothing in these images; "
                            "pass --verify-images with pictures of its classes)", 0)
    return Verification("ok", f"{text}: ok", count)


@torch.no_grad()
def int8_agreement(model: nn.Module, runner: Runner, images: Tensor, min_score: float = 0.3,
                   **postprocess_overrides: float) -> str:
    """How closely a quantized file follows fp32 PyTorch on ``images`` (``uint8[B, 3, S, S]``), as one line.

    INT8 never matches fp32 to a tight tolerance, so instead of pass/fail this reports the share of PyTorch's
    detections scoring >= ``min_score`` that the file also finds (same label, IoU >= 0.5, score >= ``min_score``).
    """
    from torchvision.ops import box_iou

    model = model.eval().cpu().float()
    meta = runner.metadata
    x = normalize(images, model.spec.mean, model.spec.std)
    got = runner(images if meta.get("input", {}).get("dtype") == "uint8" else x)
    size = model.spec.image_size
    sizes = torch.tensor([[size, size]] * len(images))
    core = InferenceCore(model, device="cpu", precision="fp32", **postprocess_overrides)
    reference = core.detect_batch(x, sizes)
    if meta.get("with_nms"):
        boxes, scores, labels, num = (torch.from_numpy(np.asarray(a)) for a in got)
        dets = [{"boxes": boxes[i, : int(n)] * size, "scores": scores[i, : int(n)], "labels": labels[i, : int(n)]}
                for i, n in enumerate(num.tolist())]
    else:
        dets = core.postprocess((torch.from_numpy(got[0]), torch.from_numpy(got[1])), sizes)
    found = total = 0
    for g, r in zip(dets, reference):
        g_keep, r_keep = g["scores"] >= min_score, r["scores"] >= min_score
        rb, rl, gb, gl = r["boxes"][r_keep], r["labels"][r_keep], g["boxes"][g_keep], g["labels"][g_keep]
        total += len(rb)
        if len(rb) and len(gb):
            iou = box_iou(rb, gb) * (rl[:, None] == gl[None, :])  # (R, G), zero across labels
            found += int((iou.max(dim=1).values >= 0.5).sum())
    share = f"{100 * found / total:.1f}%" if total else "n/a (PyTorch finds nothing)"
    return (f"{runner.format} INT8 vs fp32 PyTorch ({len(images)} images): {found} of {total} PyTorch detections "
            f"(score >= {min_score:g}) found with the same label at IoU >= 0.5: {share}")
