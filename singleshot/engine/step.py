"""One optimizer step: finish the batch on the device, encode box targets, forward under autocast, loss, NaN/Inf
guard, backward through the gradient scaler, SGD step, learning-rate schedule."""

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
    """What every rank agrees on after a step (the values are means over ranks)."""

    skipped: bool  # the loss was NaN/Inf on some rank: no update anywhere
    stop: bool  # some rank received SIGTERM/SIGINT
    loss: float
    box: float
    cls: float


class TrainStep:
    """Callable ``step(batch, stop_requested) -> StepResult`` over the training objects.

    Args:
        model: what runs forward (DDP-wrapped and/or compiled); ``params`` are the plain model's, for clipping.
        finish: moves a collated batch to the device and completes it (:class:`DevicePhotometric`).
        encoder: ``(boxes [B, M, 4] xyxy normalized, labels [B, M]) -> (offsets [B, A, 4], labels [B, A])``.
        loss_fn: ``(bbox_regression, cls_logits, offsets, labels) -> {"loss", "box", "cls"}``.
        autocast: zero-argument factory of the autocast context.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        params: list[nn.Parameter],
        finish: Callable[[dict[str, Any]], dict[str, Any]],
        encoder: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        scaler: torch.amp.GradScaler,
        autocast: Callable[[], Any],
        grad_clip: float | None = None,
        timer: SectionTimer | None = None,
    ) -> None:
        self.model, self.params, self.finish, self.encoder, self.loss_fn = model, params, finish, encoder, loss_fn
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.autocast, self.grad_clip = autocast, grad_clip
        self.timer = timer or SectionTimer(False)

    def __call__(self, batch: dict[str, Any], stop_requested: bool) -> StepResult:
        timer = self.timer
        with timer("to_device"):
            batch = self.finish(batch)
        with timer("encode"):
            target_offsets, target_labels = self.encoder(batch["boxes"], batch["labels"])
        with timer("forward"), self.autocast():
            bbox_regression, cls_logits = self.model(batch["images"])
        with timer("loss"):
            losses = self.loss_fn(bbox_regression, cls_logits, target_offsets, target_labels)
            loss = losses["loss"]
        with timer("guard"):
            # One all-reduce carries [non-finite, stop requested, loss, box, cls] so that all ranks skip or stop
            # together (a rank skipping backward alone would hang the others in DDP's gradient all-reduce).
            # Its .tolist() is the step's one host sync; the progress display needs the loss anyway.
            detached = loss.detach().float()
            flags = torch.stack([
                (~torch.isfinite(detached)).float(), detached.new_tensor(float(stop_requested)),
                detached, losses["box"].float(), losses["cls"].float(),
            ])  # fmt: skip
            bad, stop, mean_loss, box, cls = all_reduce_mean(flags).tolist()
        with timer("zero_grad"):
            self.optimizer.zero_grad(set_to_none=True)
        if not bad:
            with timer("backward"):
                self.scaler.scale(loss).backward()
            with timer("optimizer"):
                if self.grad_clip is not None:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
                self.scaler.step(self.optimizer)  # skips the update itself if fp16 gradients overflowed
                self.scaler.update()
        with timer("optimizer"):
            self.scheduler.step()
        return StepResult(bad > 0, stop > 0, mean_loss, box, cls)
