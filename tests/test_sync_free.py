"""The fixed-shape (sync-free) forms of target encoding and the multibox loss, what accelerators run: the same
matches and targets as the list forms (exactly), the same loss and gradients (to float rounding), and a training step
that asks the host for nothing (no ``nonzero``, no scalar read, no tensor from host numbers), checked on the CPU by
operator names."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from dispatch_helpers import HOST_WAITS, OpNames

from singleshot.box import MLPERF_MATCH, SSD300_ANCHORS, TF_ARGMAX_MATCH, FocalLoss, MultiBoxLoss, TargetEncoder
from singleshot.box import coder as coder_module
from singleshot.box.coder import match_dense, match_positives


def gt_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded gt with an empty image, a crowded one, two identical boxes (they share a best anchor) and a tiny box."""
    g = torch.Generator().manual_seed(seed)
    b, m = 5, 12
    boxes, labels = torch.zeros(b, m, 4), torch.full((b, m), -1, dtype=torch.long)
    for i, n in enumerate([3, 0, 12, 5, 2]):
        xy = torch.rand(n, 2, generator=g) * 0.7
        wh = torch.rand(n, 2, generator=g) * 0.4 + 0.05
        boxes[i, :n] = torch.cat([xy, (xy + wh).clamp(max=1.0)], 1)
        labels[i, :n] = torch.randint(1, 81, (n,), generator=g)
    boxes[3, 1] = boxes[3, 0]  # a tie for the forced match
    boxes[4, 1] = torch.tensor([0.5, 0.5, 0.505, 0.504])  # matched only by being forced
    return boxes, labels


def with_sync_free(on: bool, fn: Any, *args: Any) -> Any:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(coder_module, "_SYNC_FREE", "1" if on else "0")
    try:
        return fn(*args)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("rule", [MLPERF_MATCH, TF_ARGMAX_MATCH], ids=["mlperf", "tf"])
@pytest.mark.parametrize("seed", [0, 1])
def test_dense_matching_equals_the_list_form(rule: Any, seed: int) -> None:
    boxes, labels = gt_batch(seed)
    valid = labels > 0
    listed = match_positives(boxes, valid, SSD300_ANCHORS, rule=rule)[0].clone()
    dense = match_dense(boxes, valid, SSD300_ANCHORS, rule)
    assert torch.equal(dense, listed)
    assert (dense[1] == -1).all() and (dense >= 0).sum() > 20  # the empty image, and real positives
    encoder = TargetEncoder(SSD300_ANCHORS, rule=rule)
    offsets_a, labels_a = with_sync_free(False, encoder, boxes, labels)
    offsets_b, labels_b = with_sync_free(True, encoder, boxes, labels)
    assert torch.equal(labels_a, labels_b) and torch.equal(offsets_a, offsets_b)


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_dense_loss_equals_the_sparse_form_with_gradients(box_loss: str) -> None:
    boxes, labels = gt_batch(2)
    offsets, target = TargetEncoder(SSD300_ANCHORS)(boxes, labels)
    g = torch.Generator().manual_seed(3)
    reg, logits = torch.randn(5, 8732, 4, generator=g) * 0.5, torch.randn(5, 8732, 81, generator=g)
    results = []
    for on in (False, True):
        r, lg = reg.clone().requires_grad_(), logits.clone().requires_grad_()
        out = with_sync_free(on, MultiBoxLoss(box_loss=box_loss), r, lg, offsets, target)
        out["loss"].backward()
        results.append((out, r.grad, lg.grad))
    (a, ra, la), (b, rb, lb) = results
    for key in ("loss", "box", "cls"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-7)
    assert a["loss"] > 0


def test_dense_loss_makes_a_bad_unselected_anchor_visible() -> None:
    """The list form never touches an unselected anchor; the dense form computes it, and a non-finite value there
    must not turn into a NaN gradient behind a finite loss: the loss shows it, so the step's guard skips the step."""
    boxes, labels = gt_batch(4)
    offsets, target = TargetEncoder(SSD300_ANCHORS)(boxes, labels)
    background = int((target[0] == 0).nonzero()[0])
    reg = torch.randn(5, 8732, 4)
    reg[0, background] = float("inf")
    out = with_sync_free(True, MultiBoxLoss(box_loss="giou"), reg, torch.randn(5, 8732, 81), offsets, target)
    assert not torch.isfinite(out["loss"])


def test_focal_loss_one_hot_without_a_host_read() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 50), generator=g)
    logits, reg, treg = torch.randn(2, 50, 4, generator=g), torch.randn(2, 50, 4, generator=g), torch.zeros(2, 50, 4)
    with OpNames() as ops:
        out = FocalLoss()(reg, logits, treg, target)
    assert not HOST_WAITS & ops.names and torch.isfinite(out["loss"])


def test_a_training_step_asks_the_host_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole step with the real encoder and multibox loss, as an accelerator runs it (sync-free forms forced
    on the CPU): no operator that makes the host wait, after the first step (the focal loss: see above)."""
    from singleshot import build_model
    from singleshot.box.factory import build_encoder, build_loss
    from singleshot.engine.schedule import LRScheduler, build_schedule
    from singleshot.engine.step import TrainStep
    from singleshot.precision import autocast

    monkeypatch.setattr(coder_module, "_SYNC_FREE", "1")
    torch.manual_seed(0)
    net = build_model("ssd_tiny", num_classes=6)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    schedule = build_schedule(kind="constant", peak_lr=1e-3, steps_per_epoch=10, total_steps=100)
    step = TrainStep(model=net, params=list(net.parameters()), encoder=build_encoder(net.spec),
                     loss_fn=build_loss(net.spec), optimizer=optimizer, scheduler=LRScheduler(optimizer, schedule),
                     scaler=torch.amp.GradScaler("cpu", enabled=False),
                     autocast=functools.partial(autocast, torch.device("cpu"), "fp32"))  # fmt: skip
    size = net.spec.image_size
    boxes, labels = gt_batch(5)
    batch = {"images": torch.randn(5, 3, size, size), "boxes": boxes, "labels": labels.clamp(max=5)}
    step(batch, False)
    with OpNames() as ops:
        step(batch, False)
    assert not HOST_WAITS & ops.names, HOST_WAITS & ops.names
    assert step.read().steps == 2


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_training_step_on_cuda_without_a_host_sync(precision: str) -> None:
    """The real encoder, loss, fused SGD and (fp16) gradient scaler on CUDA: no step after the first synchronizes."""
    from singleshot import build_model
    from singleshot.box.factory import build_encoder, build_loss
    from singleshot.engine.schedule import LRScheduler, build_schedule
    from singleshot.engine.step import TrainStep
    from singleshot.precision import autocast

    device = torch.device("cuda")
    torch.manual_seed(0)
    net = build_model("ssd_tiny", num_classes=81).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, fused=True)
    schedule = build_schedule(kind="constant", peak_lr=1e-3, steps_per_epoch=10, total_steps=100)
    step = TrainStep(model=net, params=list(net.parameters()), encoder=build_encoder(net.spec),
                     loss_fn=build_loss(net.spec), optimizer=optimizer, scheduler=LRScheduler(optimizer, schedule),
                     scaler=torch.amp.GradScaler("cuda", enabled=precision == "fp16"),
                     autocast=functools.partial(autocast, device, precision))  # fmt: skip
    boxes, labels = gt_batch(6)
    size = net.spec.image_size
    batch = {"images": torch.randn(5, 3, size, size, device=device).contiguous(memory_format=torch.channels_last),
             "boxes": boxes.to(device), "labels": labels.to(device)}  # fmt: skip
    step(batch, False)
    step(batch, False)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step(batch, False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.read().steps == 5
