"""Training-step throughput for ``singleshot bench train``: forward + loss + backward + SGD step on a fixed
synthetic batch already on the device (no data loading), eager or with a compiled model; fp16 autocast with
GradScaler on CUDA by default, fp32 on CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from singleshot.accelerator import capabilities, use_channels_last
from singleshot.box.factory import build_encoder, build_loss
from singleshot.inference.bench import BenchRow, make_row, time_calls
from singleshot.precision import autocast


def synthetic_targets(batch: int, boxes_per_image: int, num_classes: int, generator: torch.Generator) -> tuple:
    """``(boxes [B, M, 4] xyxy normalized, labels [B, M] int64 in 1..num_classes-1)``, random but valid."""
    centre = torch.rand(batch, boxes_per_image, 2, generator=generator) * 0.6 + 0.2
    half = torch.rand(batch, boxes_per_image, 2, generator=generator) * 0.15 + 0.05
    boxes = torch.cat([centre - half, centre + half], dim=-1).clamp(0, 1)
    labels = torch.randint(1, num_classes, (batch, boxes_per_image), generator=generator)
    return boxes, labels


def train_bench(model: nn.Module, backend: str, device: torch.device, precision: str, batch_sizes: Sequence[int],
                min_seconds: float) -> list[BenchRow]:
    """One row per batch size; the model is trained in place (pass a throwaway model)."""
    model.train()
    net: nn.Module = torch.compile(model) if backend == "compile" else model
    loss_fn = build_loss(model.spec)
    encoder = build_encoder(model.spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and capabilities(device).fp16_training)
    size = model.spec.image_size
    g = torch.Generator().manual_seed(0)
    rows = []
    for b in batch_sizes:
        x = torch.randn(b, 3, size, size, generator=g).to(device)
        if use_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        boxes, labels = synthetic_targets(b, 4, model.num_classes, g)
        offsets, target_labels = encoder(boxes.to(device), labels.to(device))

        def step(x: torch.Tensor = x, offsets: torch.Tensor = offsets, target_labels: torch.Tensor = target_labels):
            with autocast(device, precision):
                bbox_regression, cls_logits = net(x)
            loss = loss_fn(bbox_regression, cls_logits, offsets, target_labels)["loss"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        times = time_calls(step, device, min_seconds, warmup=3 if backend == "compile" else 2)
        rows.append(make_row("train", backend, device, precision, b, times))
    return rows
