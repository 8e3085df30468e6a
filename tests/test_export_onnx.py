"""ONNX export: raw outputs match PyTorch (atol 1e-4 + rtol 1e-3) at several batch sizes of one graph; the graph
with decoding + NMS inside gives the same detections as the PyTorch post-processor (a random model at score
threshold 0.2 finds boxes on noise; the trained model on real images is in test_export_formats.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import nms

import singleshot
from singleshot.checkpoint import atomic_save, make_checkpoint
from singleshot.inference.core import InferenceCore
from singleshot.inference.export import DetectionGraph, export_onnx, grouped_nms, run_onnx
from singleshot.inference.verify import RAW_ATOL, RAW_RTOL

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return singleshot.build_model("ssd_tiny", num_classes=5).eval()


@pytest.fixture(scope="module")
def raw_onnx(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "raw.onnx")


@pytest.fixture(scope="module")
def nms_onnx(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "nms.onnx", with_nms=True, score_threshold=0.2)


@pytest.mark.parametrize("batch", [1, 3])
def test_raw_outputs_match_pytorch(model, raw_onnx, batch) -> None:
    x = torch.randn(batch, 3, 160, 160)
    with torch.no_grad():
        expected = model(x)
    got = run_onnx(raw_onnx, x)
    for g, e in zip(got, expected):
        assert g.shape == tuple(e.shape)
        np.testing.assert_allclose(g, e.numpy(), atol=RAW_ATOL, rtol=RAW_RTOL)


def test_nms_graph_matches_the_pytorch_postprocessor(model, nms_onnx) -> None:
    x = torch.randn(3, 3, 160, 160)
    boxes, scores, labels, num = run_onnx(nms_onnx, x)
    assert boxes.shape == (3, 200, 4) and scores.shape == (3, 200) and labels.shape == (3, 200)
    post = singleshot.build_postprocessor(model.spec, score_threshold=0.2)
    with torch.no_grad():
        reference = post(*model(x), torch.tensor([[160, 160]] * 3))
    for i, ref in enumerate(reference):
        n = int(num[i])
        assert n == len(ref["scores"]) and n > 0
        assert (scores[i, n:] == 0).all() and (labels[i, n:] == 0).all() and (boxes[i, n:] == 0).all()
        np.testing.assert_allclose(scores[i, :n], ref["scores"].numpy(), atol=1e-5)  # both sorted by score
        # Scores equal to float rounding may come in either order: match each detection to an unused reference
        # detection of the same label, score (1e-5) and box (2e-3 px).
        want = list(zip(ref["scores"].tolist(), ref["labels"].tolist(), ref["boxes"].numpy()))
        for score, label, box in zip(scores[i, :n], labels[i, :n], boxes[i, :n] * 160):
            hit = next((j for j, (s, lb, bx) in enumerate(want)
                        if lb == label and abs(s - score) <= 1e-5 and np.abs(bx - box).max() <= 2e-3), None)
            assert hit is not None, (i, score, label, box)
            want.pop(hit)


def test_nms_graph_eager_is_not_fake(model) -> None:
    with torch.no_grad():
        post = InferenceCore(model, device="cpu", precision="fp32", score_threshold=0.2).postprocessor()
        eager = DetectionGraph(model, post)(torch.randn(1, 3, 160, 160))
    assert eager[0].shape == (1, 200, 4) and not isinstance(eager[0], torch._subclasses.FakeTensor)


def test_grouped_nms_equals_per_group_nms() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(4, 30, 2, generator=g)
    boxes = torch.cat([xy, xy + torch.rand(4, 30, 2, generator=g) * 0.4], dim=-1)
    scores = torch.rand(4, 30, generator=g)
    got = grouped_nms(boxes, scores, 0.5, 0.3)
    expected = []
    for grp in range(4):
        cand = torch.nonzero(scores[grp] > 0.3).squeeze(1)
        keep = cand[nms(boxes[grp, cand], scores[grp, cand], 0.5)]
        expected += [(grp, int(k)) for k in keep.sort().values]
    assert [tuple(r) for r in got.tolist()] == expected


def test_export_cli(tmp_path, capsys) -> None:
    from singleshot.cli import main

    ckpt = tmp_path / "m.pt"
    torch.manual_seed(0)
    net = singleshot.build_model("ssd_tiny", num_classes=3).eval()
    atomic_save(make_checkpoint(net, ["a", "b"]), ckpt)
    # The check's default images (seeded noise, as export draws them): a threshold just under the random model's
    # 4th-best score keeps a few well-separated detections, so the comparison compares something.
    noise = torch.randint(0, 256, (2, 3, 160, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(net.spec.mean).view(1, 3, 1, 1), torch.tensor(net.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = net((noise.float() / 255 - mean) / std)[1].softmax(-1)[..., 1:]
    threshold = float(probs.flatten().topk(4).values[-1]) - 1e-6
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--score-threshold", f"{threshold:.7f}"]) == 0
    out = capsys.readouterr().out
    assert "onnx vs PyTorch" in out and ": ok" in out and (tmp_path / "m.onnx").stat().st_size > 100_000
