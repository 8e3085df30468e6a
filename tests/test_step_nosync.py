"""TrainStep without a per-step host sync: a non-finite step is undone on the device exactly (parameters and optimizer
state), the window counters are right, and on a GPU no step synchronizes with the host."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from dispatch_helpers import HOST_WAITS, OpNames
from torch import nn

from singleshot.engine.schedule import LRScheduler, build_schedule
from singleshot.engine.step import TrainStep


class _Head(nn.Module):
    """Stands in for a detector: ``images [B, 3, 2, 2] -> (bbox_regression [B, 1, 4], cls_logits [B, 1, 3])``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 7)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.fc(images.flatten(1))[:, None]
        return out[..., :4], out[..., 4:]


class _Loss(nn.Module):
    """A smooth loss that is NaN (odd calls) or Inf (even calls) on the listed calls."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, bbox: torch.Tensor, cls: torch.Tensor, offsets: torch.Tensor, labels: Any) -> dict:
        box = ((bbox - offsets) ** 2).mean()
        c = cls.logsumexp(-1).mean()
        loss = box + c
        if self.calls in self.bad:
            loss = loss * (float("nan") if self.calls % 2 else float("inf"))
        self.calls += 1
        return {"loss": loss, "box": box.detach(), "cls": c.detach()}


def _make(
    optimizer: str, bad: set[int], device: str = "cpu", max_bad: int = 3, scaler: bool = False
) -> tuple[TrainStep, nn.Module]:
    """``optimizer``: "sgd" | "adamw", "_fused" appended for the fused kernel (always fused on CUDA); ``scaler``:
    the gradient scaler on (as with fp16; the maths here stays fp32, so its power-of-two scale is exact)."""
    torch.manual_seed(0)
    model = _Head().to(device)
    kind = {"fused": True} if optimizer.endswith("_fused") or device == "cuda" else {"foreach": True}
    if optimizer.startswith("sgd"):
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3,
                                                     **kind)  # fmt: skip
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, **kind)
    schedule = build_schedule(kind="constant", peak_lr=opt.param_groups[0]["lr"], steps_per_epoch=10, total_steps=100)
    step = TrainStep(
        model=model, params=list(model.parameters()), encoder=lambda boxes, labels: (boxes, labels),
        loss_fn=_Loss(bad), optimizer=opt, scheduler=LRScheduler(opt, schedule),
        scaler=torch.amp.GradScaler(device, enabled=scaler), autocast=contextlib.nullcontext, max_bad_steps=max_bad,
    )  # fmt: skip
    return step, model


def _batches(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"images": torch.randn(4, 3, 2, 2, generator=g), "boxes": torch.randn(4, 1, 4, generator=g),
             "labels": torch.ones(4, 1, dtype=torch.int64)} for _ in range(n)]  # fmt: skip


def _state(step: TrainStep, model: nn.Module) -> list[torch.Tensor]:
    out = [p.detach().clone() for p in model.parameters()]
    for st in step.optimizer.state.values():
        out += [v.clone() for v in st.values() if isinstance(v, torch.Tensor)]
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "sgd_fused", "adamw_fused"])
@pytest.mark.parametrize("scaler", [False, True], ids=["fp32", "scaler"])
@pytest.mark.parametrize("bad_calls", [{1, 2}, {0}])  # mid-run, and the optimizer's very first step
def test_skipped_steps_are_exactly_undone(optimizer: str, scaler: bool, bad_calls: set[int]) -> None:
    """A non-finite step leaves no trace: undone from a snapshot (foreach optimizers) or skipped inside the fused
    kernel (no snapshot taken)."""
    batches = _batches(5)
    poisoned, model_a = _make(optimizer, bad_calls, scaler=scaler)
    for b in batches:
        poisoned(b, False)
    assert poisoned.skips_on_device is optimizer.endswith("_fused")
    assert (poisoned._saved is None) is poisoned.skips_on_device
    clean, model_b = _make(optimizer, set(), scaler=scaler)
    for i, b in enumerate(batches):
        if i not in bad_calls:
            clean(b, False)
    a, b = _state(poisoned, model_a), _state(clean, model_b)
    assert len(a) == len(b) and len(a) > 2
    for x, y in zip(a, b):
        assert torch.equal(x, y)  # bit-exact: a skipped step leaves no trace
    result = poisoned.read()
    assert result.steps == 5 and result.skipped == len(bad_calls) and result.bad_in_row == 0
    assert result.loss == pytest.approx(clean.read().loss, rel=1e-6)


def test_window_counters_and_the_limit_step() -> None:
    step, _ = _make("sgd", bad={2, 3, 4, 5}, max_bad=3)
    batches = _batches(7)
    for b in batches[:3]:
        step(b, False)
    first = step.read()
    assert (first.steps, first.skipped, first.bad_in_row, first.limit_step, first.stop) == (3, 1, 1, 0, False)
    for b in batches[3:]:
        step(b, True)
    second = step.read()
    # calls 2, 3, 4 are three in a row: the limit is reached at the window's 2nd step (call 4)
    assert (second.steps, second.skipped, second.bad_in_row, second.limit_step, second.stop) == (4, 3, 0, 2, True)
    assert second.loss == second.loss  # one good step (call 6) in the window: a finite mean


@pytest.mark.gpu
def test_no_host_sync_per_step_on_cuda() -> None:
    step, _ = _make("sgd", bad={3}, device="cuda")
    batches = [{k: v.cuda() for k, v in b.items()} for b in _batches(6)]
    step(batches[0], False)  # first call: caches, allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for b in batches[1:]:
            step(b, False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.read().skipped == 1


@pytest.mark.parametrize("stop", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "sgd_fused"])
def test_a_step_makes_no_tensor_from_host_numbers(stop: bool, optimizer: str) -> None:
    """A tensor made from a Python number (``lift_fresh``) is, on CUDA, a host-to-device copy that waits for the
    queue: after the first step, none is made, whatever the stop flag says (checked on the CPU by op names)."""
    step, _ = _make(optimizer, bad=set())
    batches = _batches(3)
    step(batches[0], False)
    with OpNames() as ops:
        step(batches[1], stop)
    assert not HOST_WAITS & ops.names
    assert step.read().stop is stop


@pytest.mark.parametrize("scaler", [False, True], ids=["fp32", "scaler"])
def test_a_fused_optimizer_step_copies_nothing_for_the_guard(scaler: bool) -> None:
    """Counted on the CPU: the fused path's optimizer section dispatches no copy (the snapshot and its put-back are
    gone) and fewer operators than the foreach path with its snapshot, for the same model and batch."""
    counts = {}
    for optimizer in ("sgd", "sgd_fused"):
        step, _ = _make(optimizer, bad=set(), scaler=scaler)
        batches = _batches(3)
        step(batches[0], False)
        with OpNames() as ops:
            step(batches[1], False)
        counts[optimizer] = ops.counts
    assert counts["sgd_fused"]["aten._foreach_copy_"] == 0 and counts["sgd"]["aten._foreach_copy_"] == 1
    # the put-back: one where per stepped tensor (2 parameters + 2 momentum buffers); the rest is the accounting
    assert counts["sgd"]["aten.where"] - counts["sgd_fused"]["aten.where"] == 4
    assert sum(counts["sgd_fused"].values()) < sum(counts["sgd"].values())
