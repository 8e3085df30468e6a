"""Prediction heads and the shared reshape from per-level conv maps to ``[B, A, K]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def flatten_level(x: Tensor, num_types: int, k: int) -> Tensor:
    """Per-level head output -> per-anchor rows, in the reference checkpoints' layout.

    ``x`` is ``[B, k * num_types, H, W]`` where channel ``c`` is value ``c // num_types`` of box type
    ``c % num_types``; the result is ``[B, num_types * H * W, k]`` with anchor ``type * H * W + row * W + col``,
    matching :class:`~singleshot.box.anchors.SSDAnchorSpec` order.
    """
    b = x.shape[0]
    # (B, k*T, H, W) -> (B, k, T*H*W) -> (B, T*H*W, k)
    return x.reshape(b, k, -1).transpose(1, 2)


class SSDHead(nn.Module):
    """One plain 3x3 conv (with bias) per level for box offsets and one for class logits, as in SSD300."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_outputs: int) -> None:
        super().__init__()
        self.num_anchors = list(num_anchors)
        self.num_outputs = num_outputs
        self.loc = nn.ModuleList(nn.Conv2d(c, 4 * n, 3, padding=1) for c, n in zip(in_channels, num_anchors))
        self.conf = nn.ModuleList(nn.Conv2d(c, num_outputs * n, 3, padding=1) for c, n in zip(in_channels, num_anchors))

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """features: per level ``[B, C_l, H_l, W_l]`` -> ``([B, A, 4], [B, A, num_outputs])``."""
        locs = [flatten_level(head(f), n, 4) for head, f, n in zip(self.loc, features, self.num_anchors)]
        confs = [
            flatten_level(head(f), n, self.num_outputs) for head, f, n in zip(self.conf, features, self.num_anchors)
        ]
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)
