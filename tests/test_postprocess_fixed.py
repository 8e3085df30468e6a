"""The fixed-shape post-processing path (what CUDA runs) on CPU tensors: the same detections as the list path (numba),
its Triton NMS kernel (run by Triton's interpreter) keeping the same boxes as the numba kernel, an op count and a
single kernel launch that do not grow with the batch or the class count, and no host read before the final split."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from dispatch_helpers import HOST_WAITS, OpNames

from singleshot.box import (
    SSD300_ANCHORS,
    PostprocessConfig,
    PostProcessor,
    SSDAnchorSpec,
    nms_triton,
    postprocess_fixed,
)
from singleshot.box import coder as coder_module
from singleshot.box import nms as nms_module
from singleshot.box.nms import group_score_order, grouped_nms, padded_nms

# a small SSD (4 levels, 285 anchors): Triton's interpreter runs the kernel in Python, so its tests stay small
SMALL_ANCHORS = SSDAnchorSpec(image_size=96, feature_sizes=(8, 4, 2, 1), steps=(12, 24, 48, 96),
                              scales=(12, 30, 50, 70, 90), aspect_ratios=((2,), (2, 3), (2,), (2,)))  # fmt: skip


def outputs(batch: int, anchors: int, channels: int, seed: int, spread: float = 0.5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, anchors, 4, generator=g) * spread, torch.randn(batch, anchors, channels, generator=g) * 2


def run(post: PostProcessor, path: str, reg: torch.Tensor, logits: torch.Tensor, sizes: torch.Tensor,
        monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:  # fmt: skip
    monkeypatch.setattr(coder_module, "_SYNC_FREE", "1" if path == "fixed" else "0")
    return post(reg, logits, sizes)


def assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(x[key], y[key]), key


@pytest.fixture
def interpreted_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Triton kernel on CPU tensors: conftest sets TRITON_INTERPRET=1 on machines without CUDA (it must be set
    before triton is imported); with a GPU the kernel runs compiled in the gpu tests instead."""
    if nms_triton.triton is None:
        pytest.skip("triton is not installed")
    if not nms_triton._interpreting():
        pytest.skip("TRITON_INTERPRET is not set (a CUDA machine: the gpu tests run the compiled kernel)")
    monkeypatch.setattr(nms_module, "_PADDED_BACKEND", "triton")


@pytest.mark.parametrize("classifier", ["softmax", "sigmoid"])
@pytest.mark.parametrize(
    ("cap_kind", "per_class", "threshold", "nms_iou", "max_dets"),
    [
        ("before_nms", 200, 0.05, 0.5, 100_000),  # MLPerf's limits, every kept box compared
        ("before_nms", 200, 0.05, 0.45, 200),  # NVIDIA's IoU, the per-image cut
        ("before_nms", 5, 0.05, 0.5, 100_000),  # the cap binds in every group
        ("after_nms", 100, 1e-8, 0.6, 100),  # SSD320's TF limits
        ("after_nms", 20, 1e-8, 0.05, 100_000),  # heavy suppression: groups redone with 4x more
    ],
)
def test_fixed_path_equals_list_path(monkeypatch: pytest.MonkeyPatch, classifier: str, cap_kind: str, per_class: int,
                                     threshold: float, nms_iou: float, max_dets: int) -> None:  # fmt: skip
    monkeypatch.setattr(nms_module, "_PADDED_BACKEND", "torch")
    reg, logits = outputs(3, 8732, 81 if classifier == "softmax" else 80, seed=2, spread=0.1 if nms_iou < 0.1 else 0.5)
    sizes = torch.tensor([[480, 640], [300, 300], [100, 800]])
    cfg = PostprocessConfig(score_threshold=threshold, nms_iou=nms_iou, candidates_per_class=per_class,
                            max_detections=max_dets, per_class_cap=cap_kind)  # fmt: skip
    post = PostProcessor(SSD300_ANCHORS, classifier=classifier, config=cfg)
    rounds: list[int] = []
    groups = postprocess_fixed._groups
    monkeypatch.setattr(postprocess_fixed, "_groups", lambda *a, **kw: rounds.append(a[4]) or groups(*a, **kw))
    fixed = run(post, "fixed", reg, logits, sizes, monkeypatch)
    listed = run(post, "list", reg, logits, sizes, monkeypatch)
    assert min(len(d["scores"]) for d in listed) > 50  # a real workload
    assert_same(fixed, listed)
    if nms_iou < 0.1:
        assert rounds == [40, 160]  # the redo round really ran


def test_fixed_path_without_detections(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.zeros(2, 8732, 81)
    logits[..., 0] = 20.0  # everything is background
    dets = run(PostProcessor(SSD300_ANCHORS), "fixed", torch.zeros(2, 8732, 4), logits,
               torch.tensor([[10, 10], [20, 30]]), monkeypatch)  # fmt: skip
    assert [d["boxes"].shape for d in dets] == [(0, 4), (0, 4)]


def clustered_groups(sizes: list[int], width: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Padded groups of boxes jittered around two centres (many overlaps), each in descending score order."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.zeros(len(sizes), width, 4)
    for i, n in enumerate(sizes):
        centres = torch.rand(2, 2, generator=g) * 200
        cxcy = centres[torch.randint(0, 2, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
        wh = torch.rand(n, 2, generator=g) * 40 + 10
        boxes[i, :n] = torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1)
    return boxes, torch.tensor(sizes)


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_triton_kernel_keeps_what_numba_keeps(interpreted_triton: None, thr: float) -> None:
    sizes = [0, 1, 7, 24, 13, 24, 2]
    boxes, counts = clustered_groups(sizes, 24, seed=int(thr * 10))
    keep = padded_nms(boxes, counts, thr)
    assert keep.shape == (7, 24) and not keep[torch.arange(24) >= counts[:, None]].any()  # padding never kept
    # The list form over the same groups, flattened: numba and torchvision's per-group NMS
    inside = torch.arange(24) < counts[:, None]
    flat, groups = boxes[inside], torch.arange(7).repeat_interleave(counts)
    scores = torch.linspace(1, 0.01, flat.shape[0])  # the padded rows are already in descending score order
    assert torch.equal(group_score_order(groups, scores), torch.arange(flat.shape[0]))
    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setattr(nms_module, "_BACKEND", "numba")
        ref = grouped_nms(flat, scores, groups, thr)
    finally:
        monkeypatch.undo()
    assert 0 < ref.numel() < flat.shape[0]  # the case really suppresses
    assert torch.equal(keep[inside].nonzero().flatten(), ref)
    assert torch.equal(nms_module._torch_padded_nms(boxes, counts, thr), keep)


def test_op_count_and_one_launch_whatever_the_batch_and_classes(interpreted_triton: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The portable list path calls torchvision's NMS more often as the batch grows (3,999 times for 64 dense SSD300
    images); the fixed path launches one NMS kernel and the same torch ops for 1 image x 2 classes and 4 x 9."""
    launches: list[tuple[int, ...]] = []
    kernel = nms_triton.triton_padded_nms
    monkeypatch.setattr(nms_triton, "triton_padded_nms",
                        lambda boxes, *a: launches.append(tuple(boxes.shape)) or kernel(boxes, *a))  # fmt: skip
    cfg = PostprocessConfig(candidates_per_class=8, max_detections=20)
    counts = []
    for batch, channels in [(1, 3), (4, 10)]:
        reg, logits = outputs(batch, 285, channels, seed=batch)
        post = PostProcessor(SMALL_ANCHORS, config=cfg)
        scale = torch.tensor([[96.0, 96.0, 96.0, 96.0]]).repeat(batch, 1)
        postprocess_fixed.fixed_shape_detections(post, reg, logits, scale)  # builds the default-box cache once
        launches.clear()
        with OpNames() as counter:
            boxes, scores, labels, found = postprocess_fixed.fixed_shape_detections(post, reg, logits, scale)
        counts.append(counter.counts)
        assert launches == [(batch * (channels - 1), 8, 4)]  # one launch, every (image, class) group in it
        assert int(found.sum()) > 0
        # nothing the host must wait for before the split: no data-dependent shapes, no scalar reads, no tensor made
        # from host numbers (on CUDA a copy that waits)
        assert not HOST_WAITS & counter.names
        listed = run(post, "list", reg, logits, torch.tensor([[96, 96]] * batch), monkeypatch)
        assert [len(d["scores"]) for d in listed] == found.tolist()
        assert_same([{"boxes": b[:n], "scores": s[:n], "labels": lb[:n]} for b, s, lb, n in
                     zip(boxes, scores, labels, found.tolist())], listed)  # fmt: skip
    assert counts[0] == counts[1]


def test_auto_takes_the_fixed_path_on_accelerators_only() -> None:
    assert os.environ.get("SINGLESHOT_SYNC_FREE", "auto") == coder_module._SYNC_FREE
    if coder_module._SYNC_FREE == "auto":
        assert not coder_module.sync_free(torch.device("cpu"))
        assert coder_module.sync_free(torch.device("cuda"))
        assert not nms_triton.triton_available(torch.device("cpu")) or nms_triton._interpreting()


@pytest.mark.gpu
def test_triton_kernel_on_cuda_keeps_what_numba_keeps() -> None:
    boxes, counts = clustered_groups([0, 1, 7, 200, 13, 150, 2] * 50, 200, seed=3)
    keep = padded_nms(boxes.cuda(), counts.cuda(), 0.5).cpu()
    assert torch.equal(keep, nms_module._torch_padded_nms(boxes, counts, 0.5))  # same float64 arithmetic


@pytest.mark.gpu
def test_fixed_path_on_cuda_without_a_host_sync() -> None:
    reg, logits = outputs(8, 8732, 81, seed=5)
    sizes = torch.tensor([[480, 640]] * 8)
    post = PostProcessor(SSD300_ANCHORS)
    cpu = post(reg, logits, sizes)  # the list path (numba)
    reg_c, logits_c, sizes_c = reg.cuda(), logits.cuda(), sizes.cuda()
    scale = sizes_c.float().flip(-1).repeat(1, 2)
    postprocess_fixed.fixed_shape_detections(post, reg_c, logits_c, scale)  # compiles the kernel
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = postprocess_fixed.fixed_shape_detections(post, reg_c, logits_c, scale)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    gpu = post(reg_c, logits_c, sizes_c)
    assert int(out[3].sum()) == sum(len(d["scores"]) for d in gpu)
    # CUDA's exp and logsumexp may round differently from the CPU's in the last bit, which can reorder near-equal
    # scores: compare what is found, not the order
    for c, g in zip(cpu, gpu):
        assert len(g["scores"]) == len(c["scores"]) == 200
        torch.testing.assert_close(g["scores"].cpu().sort().values, c["scores"].sort().values, rtol=1e-5, atol=1e-6)
        assert torch.equal(g["labels"].cpu().bincount(minlength=81), c["labels"].bincount(minlength=81))


def test_a_kernel_that_cannot_run_falls_back_to_the_torch_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the Triton kernel cannot be built where ``auto`` picks it (a driver or Triton mismatch), post-processing
    warns once and goes on with the torch loop, with the same result; a kernel that ran once is not second-guessed."""

    def broken(*args: Any) -> torch.Tensor:
        raise RuntimeError("PTX version mismatch")

    monkeypatch.setattr(nms_module, "_PADDED_BACKEND", "auto")
    monkeypatch.setattr(nms_module, "_triton_state", "untried")
    monkeypatch.setattr(nms_triton, "triton_available", lambda device: True)
    monkeypatch.setattr(nms_triton, "triton_padded_nms", broken)
    boxes, counts = clustered_groups([3, 7, 0], 8, seed=1)
    with pytest.warns(UserWarning, match="PTX version mismatch"):
        keep = padded_nms(boxes, counts, 0.5)
    assert torch.equal(keep, nms_module._torch_padded_nms(boxes, counts, 0.5))
    assert nms_module._triton_state == "failed"
    assert torch.equal(padded_nms(boxes, counts, 0.5), keep)  # no second try, no second warning
