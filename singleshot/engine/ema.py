"""Exponential moving average of the model's weights, the copy that is evaluated, exported and deployed.

``ema = decay_t * ema + (1 - decay_t) * weights`` after every optimizer step, with ``decay_t = decay * (1 -
exp(-t / warmup))`` so the average follows the fast-changing weights of the first steps and smooths the rest. The
averaging itself is :class:`torch.optim.swa_utils.AveragedModel` (parameters and, with ``use_buffers``, BatchNorm
statistics); only the step-dependent decay is ours.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class ModelEMA:
    """An averaged copy of ``model`` (same structure, no gradients), updated with :meth:`update`.

    ``state_dict()`` / ``load_state_dict()`` carry the averaged weights and the update count, so a resumed run
    continues the same average.
    """

    def __init__(self, model: nn.Module, decay: float, warmup_steps: float = 100.0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup_steps = decay, warmup_steps
        self.updates = 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._avg, use_buffers=True)
        self.averaged.requires_grad_(False)
        self.averaged.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged model (an instance of the trained model's class, with its ``spec``)."""
        return self.averaged.module

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.warmup_steps))

    @torch.no_grad()
    def _avg(self, ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        d = self.current_decay()
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            e_list, p_list = zip(*floats)
            torch._foreach_lerp_(list(e_list), list(p_list), 1.0 - d)
        for e, p in zip(ema_params, params):  # integer buffers (BatchNorm's num_batches_tracked) are copied
            if not e.is_floating_point():
                e.copy_(p)

    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (the one the optimizer steps) into the average."""
        self.updates += 1
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        # AveragedModel copies (rather than averages) while its own count is 0: restore the count as well.
        self.averaged.n_averaged.fill_(self.updates)
