"""Converted MLPerf / NVIDIA checkpoints give the originals' raw outputs and detections (issue 6).

The originals are stood in for by tests/interop_reference.py (their module structure and forward, rebuilt from
torchvision). Random weights and random BatchNorm statistics, eval mode, fp32.
"""

from __future__ import annotations

import pytest
import torch
from interop_reference import (
    MLPerfSSD300,
    NvidiaSSD300,
    calibrate_heads,
    randomize,
    reference_decode,
    reference_default_boxes,
)

import singleshot
from singleshot.checkpoint import make_checkpoint, model_from_checkpoint
from singleshot.interop import COCO_CLASSES, from_foreign, to_foreign
from singleshot.models import get_spec

REFERENCES = {"mlperf": MLPerfSSD300, "nvidia": NvidiaSSD300}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 300, 300, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=["mlperf", "nvidia"])
def pair(request: pytest.FixtureRequest, images: torch.Tensor) -> tuple[str, torch.nn.Module, torch.nn.Module]:
    """(kind, reference model, singleshot model converted from the reference's checkpoint), both in eval mode."""
    kind = request.param
    gen = torch.Generator().manual_seed(6 if kind == "mlperf" else 7)
    ref = REFERENCES[kind]()
    randomize(ref, gen)
    ref.eval()
    calibrate_heads(ref, images[:1])
    ckpt = from_foreign({"model": ref.state_dict(), "epoch": 3}, kind)
    ours = model_from_checkpoint(ckpt).eval()
    return kind, ref, ours


@pytest.fixture(scope="module")
def outputs(pair, images) -> dict[str, torch.Tensor]:
    _, ref, ours = pair
    with torch.no_grad():
        locs, confs = ref(images)  # [N, 4, A], [N, C, A]
        bbox_regression, cls_logits = ours(images)  # [N, A, 4], [N, A, C]
    return {"locs": locs, "confs": confs, "bbox": bbox_regression, "cls": cls_logits}


@pytest.mark.parametrize("name", ["ssd300_resnet34", "ssd300_resnet50"])
def test_default_boxes_are_the_references(name: str) -> None:
    ref = reference_default_boxes()
    got = singleshot.default_boxes(get_spec(name).anchors, "cpu", torch.float64)
    assert got.shape == ref.shape == (8732, 4)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_raw_outputs_equal_the_reference(outputs) -> None:
    locs, confs = outputs["locs"], outputs["confs"]
    assert locs.shape == (2, 4, 8732) and confs.shape == (2, 81, 8732)
    ours_locs = outputs["bbox"].transpose(1, 2)  # (N, A, 4) -> (N, 4, A)
    ours_confs = outputs["cls"].transpose(1, 2)  # (N, A, C) -> (N, C, A)
    # The outputs must carry signal, or equality would prove nothing.
    assert locs.std() > 0.1 and confs.std() > 0.1
    for got, ref in ((ours_locs, locs), (ours_confs, confs)):
        # 1e-5 relative to the output's scale (element-wise relative error is meaningless near zero).
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def _assert_same_detections(det: dict[str, torch.Tensor], ref: tuple[torch.Tensor, ...], wh: torch.Tensor) -> None:
    """One-to-one match of our detections (pixels) with the reference's (normalized, unclipped): same label, score
    within float rounding, same box. Matched per label, not by position: scores that tie to within rounding may come
    out in either order (singleshot computes softmax in log space)."""
    ref_boxes, ref_scores, ref_labels = ref
    assert len(det["scores"]) == len(ref_scores)
    assert torch.all(det["scores"][:-1] >= det["scores"][1:]), "detections not sorted by score"
    torch.testing.assert_close(det["scores"], ref_scores, rtol=1e-5, atol=1e-6)  # same sorted score sequence
    boxes = det["boxes"] / wh  # (K, 4) pixels -> normalized
    for label in ref_labels.unique():
        a, b = det["labels"] == label, ref_labels == label
        assert a.sum() == b.sum(), f"label {int(label)}: {int(a.sum())} detections vs {int(b.sum())}"
        score_ok = (det["scores"][a, None] - ref_scores[None, b]).abs() <= 1e-6 + 1e-5 * ref_scores[None, b]
        box_ok = (boxes[a, None] - ref_boxes[b].clamp(0, 1)[None]).abs().amax(-1) <= 1e-5  # (Ka, Kb)
        match = score_ok & box_ok
        assert torch.all(match.sum(0) == 1) and torch.all(match.sum(1) == 1), f"label {int(label)}: no 1:1 match"


SIZES = torch.tensor([[300, 300], [480, 640]])  # (H, W) of the two images: one square, one not
CAPS = (200, 20_000)  # the published cap per image, and one high enough that the 0.05 threshold decides


@pytest.fixture(scope="module")
def detections(pair, outputs) -> dict[int, list[dict[str, torch.Tensor]]]:
    """singleshot's post-processing of our raw outputs, per cap (computed once: it is the slow part on CPU)."""
    spec = pair[2].spec
    return {
        cap: singleshot.build_postprocessor(spec, max_detections=cap)(outputs["bbox"], outputs["cls"], SIZES)
        for cap in CAPS
    }


def _compare_detections(outputs, detections, clip_before_nms: bool) -> None:
    scale = SIZES.flip(-1).repeat(1, 2)  # (B, 4) as (W, H, W, H)
    for cap in CAPS:
        refs = reference_decode(outputs["locs"], outputs["confs"], max_output=cap, clip_before_nms=clip_before_nms)
        for det, ref, wh in zip(detections[cap], refs, scale):
            assert len(ref[1]) >= min(cap, 200), "too few detections for a meaningful comparison"
            _assert_same_detections(det, ref, wh)
        if cap > 200:
            assert all(len(r[1]) < cap for r in refs), "cap reached: the score threshold was not exercised"


def test_detections_equal_the_reference_decoding(outputs, detections) -> None:
    _compare_detections(outputs, detections, clip_before_nms=False)


def test_round_trip_reproduces_the_reference_state_dict(pair) -> None:
    kind, ref, ours = pair
    ckpt = make_checkpoint(ours, COCO_CLASSES)
    back = to_foreign(ckpt, kind)["model"]
    original = ref.state_dict()
    assert list(back) == list(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    # ...and loads into the reference model strictly.
    REFERENCES[kind]().load_state_dict(back, strict=True)
