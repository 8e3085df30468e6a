"""One optimizer step without a host sync, on a batch the loader put on the device: encode box targets, forward under
autocast, loss, backward through the gradient scaler, an SGD step that a non-finite loss undoes on the device,
learning-rate schedule.

Why no sync: reading the loss (``.item()``/``.tolist()``) makes the host wait for the forward pass before it can
queue backward, which drains a GPU's queue once per step. Here every per-step decision stays on the device:

* the NaN/Inf guard: one small all-reduce carries ``[non-finite, stop requested, loss, box, cls]`` so that every
  rank agrees; backward and the optimizer step always run, and a non-finite step is exactly a skipped step. A fused
  optimizer (``fused=True``: CUDA, or the CPU where asked) skips it itself: its kernel takes a ``found_inf`` flag on
  the device (the gradient scaler's contract), so the flag is handed to it (fp32) or the scaler is made to find it
  (fp16: one gradient set to NaN, which its overflow check sees), and nothing is copied. Any other optimizer steps,
  and its parameters and state are put back to a snapshot taken before the step (``torch.where`` on the flag);
* loss accounting: sums over the good steps, consecutive-bad-step counters and the stop flag accumulate in device
  tensors; :meth:`TrainStep.read` brings them to the host in one transfer, which the trainer does every
  ``train.log_every`` steps (and before checkpoints).

With fp16 the gradient scaler's own overflow check still reads a flag per step unless the optimizer is fused
(``torch.optim.SGD(fused=True)`` / ``AdamW(fused=True)``, used on CUDA), whose step takes that flag on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from singleshot.engine.distributed import all_reduce_mean
from singleshot.engine.runtime import SectionTimer
from singleshot.engine.schedule import LRScheduler


@dataclass
class StepResult:
    """What every rank agrees on about the steps since the last :meth:`TrainStep.read` (means over ranks)."""

    steps: int  # steps in this window
    skipped: int  # of them, skipped because the loss was NaN/Inf on some rank (no update anywhere)
    bad_in_row: int  # consecutive skipped steps at the end of the window (a run may continue from earlier windows)
    limit_step: int  # 1-based step in the window at which the run of skips first reached the limit; 0 = never
    stop: bool  # some rank received SIGTERM/SIGINT during the window
    loss: float  # mean over the good steps (nan when there were none)
    box: float
    cls: float


class TrainStep:
    """Callable ``step(batch, stop_requested)`` over the training objects; :meth:`read` returns a
    :class:`StepResult` for the steps since the previous read. The batch arrives on the model's device, finished
    (the loader's job: :func:`singleshot.data.loader.build_loader`).

    Args:
        model: what runs forward (DDP-wrapped and/or compiled); ``params`` are the plain model's, for clipping.
        encoder: ``(boxes [B, M, 4] xyxy normalized, labels [B, M]) -> (offsets [B, A, 4], labels [B, A])``.
        loss_fn: ``(bbox_regression, cls_logits, offsets, labels) -> {"loss", "box", "cls"}``.
        autocast: zero-argument factory of the autocast context.
        max_bad_steps: the run of consecutive skips whose step :attr:`StepResult.limit_step` reports.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        params: list[nn.Parameter],
        encoder: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        scaler: torch.amp.GradScaler,
        autocast: Callable[[], Any],
        grad_clip: float | None = None,
        timer: SectionTimer | None = None,
        max_bad_steps: int = 5,
    ) -> None:
        self.model, self.params, self.encoder, self.loss_fn = model, params, encoder, loss_fn
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.autocast, self.grad_clip = autocast, grad_clip
        self.timer = timer or SectionTimer(False)
        self.max_bad_steps = max_bad_steps
        self._stats: torch.Tensor | None = None  # see _account
        self._in_row: torch.Tensor | None = None  # consecutive skipped steps so far (carried across windows)
        self._steps = 0
        self._saved: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._lazy: list[torch.Tensor] = []
        self._flag_values: torch.Tensor | None = None  # [0., 1.] on the device, see _stop_flag
        # A fused optimizer skips a flagged step in its own kernel: no snapshot to take or put back.
        self.skips_on_device = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        self._state_ready = False  # see _skip_on_device

    def __call__(self, batch: dict[str, Any], stop_requested: bool) -> None:
        timer = self.timer
        with timer("encode"):
            target_offsets, target_labels = self.encoder(batch["boxes"], batch["labels"])
        with timer("forward"), self.autocast():
            bbox_regression, cls_logits = self.model(batch["images"])
        with timer("loss"):
            losses = self.loss_fn(bbox_regression, cls_logits, target_offsets, target_labels)
            loss = losses["loss"]
        with timer("guard"):
            # One all-reduce carries [non-finite, stop requested, loss, box, cls] so that all ranks skip or stop
            # together; nothing here waits for it on the host.
            detached = loss.detach().float()
            flags = torch.stack([
                (~torch.isfinite(detached)).float(), self._stop_flag(stop_requested, detached),
                detached, losses["box"].detach().float(), losses["cls"].detach().float(),
            ])  # fmt: skip
            flags = all_reduce_mean(flags)
            bad = flags[_NONFINITE] > 0
        with timer("zero_grad"):
            self.optimizer.zero_grad(set_to_none=True)
        with timer("backward"):
            self.scaler.scale(loss).backward()
        with timer("optimizer"):
            if self.skips_on_device:
                self._skip_on_device(bad)
            else:
                self._snapshot()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.scaler.step(self.optimizer)  # skips the update itself if fp16 gradients overflowed
            self.scaler.update()
            if self.skips_on_device:
                self.optimizer.__dict__.pop("found_inf", None)
            else:
                self._undo_if(bad)
            self.scheduler.step()
        with timer("guard"):
            self._account(flags, bad)

    def _stop_flag(self, stop_requested: bool, like: torch.Tensor) -> torch.Tensor:
        """``stop_requested`` as a 0-d float on ``like``'s device, picked from two values put there once: a tensor
        made from a Python number each step is a host-to-device copy that waits for the GPU's queue."""
        if self._flag_values is None or self._flag_values.device != like.device:
            self._flag_values = torch.tensor([0.0, 1.0], device=like.device)
        return self._flag_values[int(stop_requested)]

    # ------------------------------------------------------------------------------------------ skip on the device
    @torch.no_grad()
    def _skip_on_device(self, bad: torch.Tensor) -> None:
        """Make a fused optimizer's step skip where ``bad`` (a device bool) is set, with nothing copied: with the
        gradient scaler on, one gradient becomes NaN where ``bad`` (the scaler's overflow check then skips the step
        and backs off its scale, as for an fp16 overflow); with it off, ``bad`` goes to the kernel as ``found_inf``
        (popped after the step)."""
        if not self._state_ready:  # once: SGD momentum buffers that exist before the first step (see _state_tensors)
            self._state_tensors()
            self._state_ready = True
        if self.scaler.is_enabled():
            grad = next(p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None)
            grad.masked_fill_(bad, float("nan"))  # a Python number: a kernel argument, not a copy
        else:
            self.optimizer.found_inf = bad.float()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------ masked update
    def _state_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The tensors an optimizer step changes: parameters with gradients and their optimizer state (SGD momentum,
        Adam moments, ...), and the parameters whose state does not exist yet (the step itself creates it)."""
        params: list[torch.Tensor] = []
        state_tensors: list[torch.Tensor] = []
        lazy: list[torch.Tensor] = []
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                params.append(p)
                state = self.optimizer.state[p]
                if isinstance(self.optimizer, torch.optim.SGD) and group.get("momentum", 0.0) != 0.0 \
                        and state.get("momentum_buffer") is None:
                    # A zero buffer gives exactly the first step's (buf = grad, no dampening) and exists before the
                    # step, so a skipped first step can be undone too (and a fused first step that is skipped
                    # leaves no uninitialized buffer behind).
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if not state:
                    lazy.append(p)
                state_tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return params, state_tensors, lazy

    @torch.no_grad()
    def _snapshot(self) -> None:
        params, state_tensors, self._lazy = self._state_tensors()
        tensors = params + state_tensors
        if self._saved is None or len(self._saved[1]) != len(tensors):
            self._saved = (tensors, [torch.empty_like(t) for t in tensors])
        else:
            self._saved = (tensors, self._saved[1])
        if hasattr(torch, "_foreach_copy_"):  # grouped launches instead of one per tensor
            torch._foreach_copy_(self._saved[1], tensors)
        else:
            for dst, src in zip(self._saved[1], tensors):
                dst.copy_(src)

    @torch.no_grad()
    def _undo_if(self, bad: torch.Tensor) -> None:
        """Put every stepped tensor back to its snapshot where ``bad`` (a device bool) is set."""
        assert self._saved is not None
        if self._lazy:  # an optimizer's first step creates its state: decide on the host, once per run
            if bool(bad):
                for p in self._lazy:
                    self.optimizer.state.pop(p, None)
                for now, before in zip(*self._saved):
                    now.copy_(before)
            return
        flags = {bad.device: bad}
        for now, before in zip(*self._saved):
            if now.device not in flags:  # e.g. Adam's step counters kept on the CPU: costs a transfer
                flags[now.device] = bad.to(now.device)
            torch.where(flags[now.device], before, now, out=now)  # NaN-safe, unlike blending with a 0/1 weight

    # ------------------------------------------------------------------------------------------ accounting
    @torch.no_grad()
    def _account(self, flags: torch.Tensor, bad: torch.Tensor) -> None:
        """Accumulate the window's ``[loss, box, cls sums, good steps, skipped steps, stop, limit step]`` on the
        device (one tensor, so that :meth:`read` is one transfer; the slots are named below the class)."""
        if self._stats is None or self._stats.device != flags.device:
            self._stats = torch.zeros(_STATS_LEN, dtype=torch.float32, device=flags.device)
            self._in_row = torch.zeros((), dtype=torch.float32, device=flags.device)
        assert self._in_row is not None
        self._steps += 1
        good = (~bad).float()
        stats, losses = self._stats, flags[_LOSSES]
        stats[_SUMS] += torch.where(bad, torch.zeros_like(losses), losses)
        stats[_GOOD] += good
        stats[_SKIPPED] += 1.0 - good
        stats[_STOP] = torch.maximum(stats[_STOP], (flags[_STOP_FLAG] > 0).float())
        self._in_row.mul_(1.0 - good).add_(1.0 - good)
        reached = (self._in_row >= self.max_bad_steps) & (stats[_LIMIT] == 0)
        stats[_LIMIT] = torch.where(reached, torch.full_like(stats[_LIMIT], self._steps), stats[_LIMIT])

    def read(self) -> StepResult:
        """Bring the window's numbers to the host (the one sync) and start a new window."""
        if self._stats is None or self._in_row is None:
            return StepResult(0, 0, 0, 0, False, float("nan"), float("nan"), float("nan"))
        values = torch.cat([self._stats, self._in_row[None]]).tolist()
        loss, box, cls, good, skipped, stop, limit_step, in_row = values
        steps = self._steps
        self._stats.zero_()
        self._steps = 0
        n = max(good, 1.0)
        nan = float("nan")
        return StepResult(
            steps, round(skipped), round(in_row), round(limit_step), stop > 0,
            loss / n if good else nan, box / n if good else nan, cls / n if good else nan,
        )  # fmt: skip


# The guard's all-reduced vector: [non-finite, stop requested, loss, box, cls]
_NONFINITE, _STOP_FLAG, _LOSSES = 0, 1, slice(2, 5)
# TrainStep._stats: [loss, box, cls sums over good steps, good steps, skipped steps, stop seen, limit step]
_SUMS, _GOOD, _SKIPPED, _STOP, _LIMIT, _STATS_LEN = slice(0, 3), 3, 4, 5, 6, 7
