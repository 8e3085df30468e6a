"""SGD with momentum (the recipes) or AdamW, with the NVIDIA recipe's option of no weight decay on 1-D parameters
(BN) and biases."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    """Parameter groups: one with ``weight_decay``; with ``no_decay_bn_bias``, a second (decay 0) holding every
    bias and every 1-D parameter (BatchNorm weights and biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "sgd",
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
    no_decay_bn_bias: bool = False,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (``name="sgd"``) or ``torch.optim.AdamW`` (``"adamw"``, betas ``(momentum, 0.999)``)
    over ``model``'s trainable parameters (see :func:`param_groups`); ``fused``: the fused kernel (None: when every
    parameter is on CUDA), else foreach."""
    groups = param_groups(model, weight_decay, no_decay_bn_bias)
    if name not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")
    # CUDA: the fused kernel, one launch per step, which also takes the fp16 gradient scaler's overflow flag (and
    # the NaN guard's, engine/step.py) on the device; with foreach, GradScaler reads that flag on the host every
    # step and a skipped step needs a snapshot. Elsewhere foreach=True: one launch per group instead of one per
    # tensor (same maths; the CPU keeps it so that runs there stay bit-identical to earlier ones).
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    kind = {"fused": True} if fused else {"foreach": True}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **kind)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kind)
