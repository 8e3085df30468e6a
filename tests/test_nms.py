"""Grouped greedy NMS (numba kernel and the torchvision fallback) against torchvision.ops.nms run group by group."""

import pytest
import torch
from torchvision.ops import nms

from singleshot.box import nms as nms_module
from singleshot.box.nms import group_score_order, grouped_nms


def clustered_boxes(n_groups: int, seed: int = 0):
    """Groups of 0-60 boxes jittered around a few centres (so many overlap), sorted by (group, -score)."""
    g = torch.Generator().manual_seed(seed)
    boxes, scores, groups = [], [], []
    for gid in range(n_groups):
        n = int(torch.randint(0, 61, (1,), generator=g))
        centres = torch.rand(3, 2, generator=g) * 500
        pick = torch.randint(0, 3, (n,), generator=g)
        cxcy = centres[pick] + torch.randn(n, 2, generator=g) * 8
        wh = torch.rand(n, 2, generator=g) * 60 + 20
        boxes.append(torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1))
        scores.append(torch.rand(n, generator=g))
        groups.append(torch.full((n,), gid, dtype=torch.long))
    boxes, scores, groups = torch.cat(boxes), torch.cat(scores), torch.cat(groups)
    order = group_score_order(groups, scores)
    return boxes[order], scores[order], groups[order]


def per_group_reference(boxes, scores, groups, thr):
    kept = []
    for gid in groups.unique():
        idx = (groups == gid).nonzero().flatten()
        kept.append(idx[nms(boxes[idx], scores[idx], thr)])
    return torch.cat(kept).sort().values if kept else torch.zeros(0, dtype=torch.long)


@pytest.mark.parametrize("backend", ["numba", "torchvision"])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_grouped_nms_equals_torchvision_per_group(monkeypatch, backend, thr):
    monkeypatch.setattr(nms_module, "_BACKEND", backend)
    boxes, scores, groups = clustered_boxes(40, seed=int(thr * 10))
    keep = grouped_nms(boxes, scores, groups, thr)
    ref = per_group_reference(boxes, scores, groups, thr)
    assert 0 < ref.numel() < boxes.shape[0]  # the case really suppresses
    assert torch.equal(keep, ref)
    assert torch.equal(grouped_nms(boxes.double(), scores, groups, thr), ref)
    half = boxes.bfloat16()
    assert torch.equal(grouped_nms(half, scores, groups, thr), per_group_reference(half.float(), scores, groups, thr))


def test_auto_takes_the_numba_kernel_for_large_inputs(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(nms_module, "_BACKEND", "auto")
    monkeypatch.setattr(nms_module, "_compiled", None)  # as in a fresh process
    small = clustered_boxes(5)
    grouped_nms(*small, 0.5)
    assert nms_module._compiled is None  # small input: torchvision, no kernel load
    monkeypatch.setattr(nms_module, "_NUMBA_MIN_CANDIDATES", small[0].shape[0])
    keep = grouped_nms(*small, 0.5)
    assert nms_module._compiled is not None
    assert torch.equal(keep, per_group_reference(*small, 0.5))


@pytest.mark.parametrize("backend", ["numba", "torchvision"])
def test_grouped_nms_edge_cases(monkeypatch, backend):
    monkeypatch.setattr(nms_module, "_BACKEND", backend)
    empty = grouped_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long
    # Identical boxes: the first of each group survives. Zero-area boxes (IoU 0/0) suppress nothing.
    same = torch.tensor([[0.0, 0, 10, 10]] * 3 + [[5.0, 5, 5, 5]] * 2)
    keep = grouped_nms(same, torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([0, 0, 1, 2, 2]), 0.5)
    assert keep.tolist() == [0, 2, 3, 4]


def test_group_score_order_is_a_stable_lexsort():
    g = torch.Generator().manual_seed(0)
    groups = torch.randint(0, 50, (5000,), generator=g)
    scores = torch.randint(0, 20, (5000,), generator=g).float() / 19  # many ties, 0.0 and 1.0 included
    scores[scores == 0] = -0.0  # sign bit set: must still sort as 0
    order = group_score_order(groups, scores)
    by_score = (-scores).argsort(stable=True)
    expected = by_score[groups[by_score].argsort(stable=True)]
    assert torch.equal(order, expected)
