"""Box functions and the post-processor take any strides: the MLPerf / NVIDIA heads give ``[B, C, A]`` logits and
``[B, 4, A]`` offsets, which a caller transposes to ``[B, A, C]`` / ``[B, A, 4]`` views. Every public box module gives
on such a view exactly what it gives on the same values laid out contiguously."""

from __future__ import annotations

import pytest
import torch

from singleshot.box import BoxCoder, default_boxes, group_score_order, grouped_nms, match_dense, match_positives
from singleshot.box.coder import MLPERF_MATCH
from singleshot.box.factory import build_encoder, build_loss, build_postprocessor
from singleshot.models import get_spec

MODELS = ["ssd300_resnet34", "ssd320_resnet50_fpn"]  # softmax + multibox, sigmoid + focal


def transposed(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x [B, A, C]``, as the transposed view of a ``[B, C, A]`` tensor (non-contiguous)."""
    view = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert not view.is_contiguous() and torch.equal(view, x)
    return view


def outputs(name: str, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    a = default_boxes(get_spec(name).anchors).shape[0]
    g = torch.Generator().manual_seed(seed)
    bbox = torch.randn(batch, a, 4, generator=g) * 0.5
    logits = torch.randn(batch, a, 81, generator=g) * 3.0
    return bbox, logits


def ground_truth(batch: int = 2, objects: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(batch, objects, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(batch, objects, 2, generator=g) * 0.3], dim=-1)
    labels = torch.randint(1, 81, (batch, objects), generator=g)
    labels[:, -1] = 0
    return boxes, labels


def same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()  # type: ignore[union-attr]
        for k in a:
            same(a[k], b[k])  # type: ignore[index]
    else:
        assert len(a) == len(b)  # type: ignore[arg-type]
        for x, y in zip(a, b):  # type: ignore[call-overload]
            same(x, y)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("threshold", [0.05, 0.5])  # dense and sparse candidate paths
def test_post_processor_takes_transposed_heads(name: str, threshold: float) -> None:
    bbox, logits = outputs(name)
    post = build_postprocessor(get_spec(name), score_threshold=threshold)
    sizes = torch.tensor([[300, 300], [480, 640]])
    same(post(bbox, logits, sizes), post(transposed(bbox), transposed(logits), sizes))


@pytest.mark.parametrize("name", MODELS)
def test_encoder_and_loss_take_transposed_inputs(name: str) -> None:
    spec = get_spec(name)
    bbox, logits = outputs(name)
    boxes, labels = ground_truth()
    encoder, loss = build_encoder(spec), build_loss(spec)
    offsets, target_labels = encoder(boxes, labels)
    t_boxes, t_labels = boxes.transpose(1, 2).contiguous().transpose(1, 2), labels.t().contiguous().t()
    same((offsets, target_labels), encoder(t_boxes, t_labels))
    same(loss(bbox, logits, offsets, target_labels), loss(transposed(bbox), transposed(logits), transposed(offsets),
                                                          target_labels.t().contiguous().t()))  # fmt: skip


def test_coder_matching_and_nms_take_transposed_inputs() -> None:
    spec = get_spec("ssd300_resnet34")
    anchors = spec.anchors
    bbox, _ = outputs("ssd300_resnet34")
    coder = BoxCoder()
    dboxes = default_boxes(anchors)
    same(coder.decode(bbox, dboxes), coder.decode(transposed(bbox), dboxes))
    same(coder.decode(bbox, dboxes), coder.decode(bbox, dboxes.t().contiguous().t()))
    boxes, labels = ground_truth()
    valid = labels > 0
    t_boxes = boxes.transpose(1, 2).contiguous().transpose(1, 2)
    same(match_dense(boxes, valid, anchors, MLPERF_MATCH), match_dense(t_boxes, valid, anchors, MLPERF_MATCH))
    same(match_positives(boxes, valid, anchors, rule=MLPERF_MATCH),
         match_positives(t_boxes, valid, anchors, rule=MLPERF_MATCH))  # fmt: skip
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(300, 2, generator=g)
    nms_boxes = torch.cat([xy, xy + 0.2], dim=1)
    scores = torch.rand(300, generator=g)
    groups = torch.randint(0, 4, (300,), generator=g)
    order = group_score_order(groups, scores)
    nms_boxes, scores, groups = nms_boxes[order], scores[order], groups[order]
    t_nms = nms_boxes.t().contiguous().t()
    t_scores = torch.stack([scores, scores], 1)[:, 0]  # a strided view
    assert not t_nms.is_contiguous() and not t_scores.is_contiguous()
    same(grouped_nms(nms_boxes, scores, groups, 0.5), grouped_nms(t_nms, t_scores, groups, 0.5))
