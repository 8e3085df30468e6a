"""The dense candidate path (an early-training SSD300 at MLPerf's 0.05: most anchors can pass, ~1 class each) lists
exactly the sparse path's candidates, so decoding gives bit-identical detections."""

from __future__ import annotations

import pytest
import torch

from singleshot.box import SSD300_ANCHORS, PostProcessor
from singleshot.box import postprocess as postprocess_module


def dense_ssd300_outputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    a = 8732
    logits = torch.randn(batch, a, 81, generator=g)
    logits[..., 0] += 4.0
    for i in range(batch):
        logits[i, torch.randperm(a, generator=g)[:300], torch.randint(1, 81, (300,), generator=g)] += 7.0
    return torch.randn(batch, a, 4, generator=g) * 0.3, logits


def test_dense_threshold_path_equals_sparse_path(monkeypatch: pytest.MonkeyPatch) -> None:
    reg, logits = dense_ssd300_outputs(2)
    sizes = torch.tensor([[480, 640], [300, 300]])
    post = PostProcessor(SSD300_ANCHORS)
    monkeypatch.setattr(post, "_topk_candidates", lambda *a: pytest.fail("the dense case must not need top-k"))
    passing = (logits[..., 1:].amax(-1) > logits[..., 0] + torch.tensor(0.05).log()).float().mean()
    assert passing > postprocess_module._DENSE_FRACTION  # this input does leave the sparse path
    dense = post(reg, logits, sizes)
    cands = post.candidates(logits)
    monkeypatch.setattr(postprocess_module, "_DENSE_FRACTION", 2.0)  # never dense
    sparse_cands = post.candidates(logits)
    for ours, ref in zip(cands, sparse_cands):
        assert torch.equal(ours, ref)
    assert cands[0].numel() > 2 * 5000  # thousands of (box, class) candidates per image
    sparse = post(reg, logits, sizes)
    for d, s in zip(dense, sparse):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(d[key], s[key])
