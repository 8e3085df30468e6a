"""Colour jitter + normalization folded into one affine map per image, applied per image on the CPU or batched on
the training device.

torchvision's ``ColorJitter`` applies brightness, contrast, saturation and hue in a random order, each followed by a
clamp to [0, 1], and its HSV hue shift costs ~6 ms per 300x300 image on one core. Here each op is an affine map of
RGB, so the four ops in the drawn order plus the ImageNet normalization compose into one ``3x4`` matrix, applied
with one matmul and one clamp (at the end only, which is the one distributional difference besides hue):

* brightness b: ``x -> b x``;
* contrast c: ``x -> c x + (1 - c) mean(gray(x))``, where the grey mean is exact, tracked through the composition
  from the image's per-channel means;
* saturation s: ``x -> s x + (1 - s) gray(x)`` with torchvision's grey weights;
* hue h: rotation by ``2 pi h`` of the chroma (I, Q) plane of YIQ space, a linear stand-in for the HSV hue shift
  with the same range ("any color-jitter implementation of similar distribution" is allowed by the MLPerf rules).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = np.array([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def color_affine(
    channel_mean: Sequence[float],
    factors: Sequence[float] | None,
    order: Sequence[int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """The ``float32[3, 4]`` affine ``[A | t]`` taking uint8 RGB values (0..255) to jittered, normalized values.

    Args:
        channel_mean: per-channel mean of the image in 0..255 units (needed for contrast).
        factors: ``(brightness, contrast, saturation, hue)`` as drawn by ColorJitter, or None for no jitter.
        order: the order of the four ops as indices into ``factors``.
        mean, std: normalization, in [0, 1] units.

    The result must be followed by a clamp to the normalized images of 0 and 1 (:func:`apply_color_affine`).
    """
    a, t = np.eye(3), np.zeros(3)  # current colour = a @ x + t, x in [0, 1]
    mu = np.asarray(channel_mean, dtype=np.float64) / 255.0
    if factors is not None and order is not None:
        for op in order:
            f = factors[op]
            if op == 0:  # brightness
                a, t = f * a, f * t
            elif op == 1:  # contrast: blend with the grey mean of the current image
                grey_mean = _GRAY @ (a @ mu + t)
                a, t = f * a, f * t + (1.0 - f) * grey_mean
            elif op == 2:  # saturation: blend with the grey image
                m = f * np.eye(3) + (1.0 - f) * np.outer(np.ones(3), _GRAY)
                a, t = m @ a, m @ t
            else:  # hue: rotate chroma in YIQ
                c, s = math.cos(2.0 * math.pi * f), math.sin(2.0 * math.pi * f)
                rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
                m = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ
                a, t = m @ a, m @ t
    inv_std = 1.0 / np.asarray(std, dtype=np.float64)
    a = a * (inv_std / 255.0)[:, None]
    t = (t - np.asarray(mean, dtype=np.float64)) * inv_std
    return torch.from_numpy(np.concatenate([a, t[:, None]], axis=1).astype(np.float32))


@functools.lru_cache(maxsize=16)
def _clamp_bounds(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    m, s = torch.tensor(mean), torch.tensor(std)
    return (-m / s).view(1, 3, 1).to(device), ((1.0 - m) / s).view(1, 3, 1).to(device)


def apply_color_affine(
    pixels: Tensor,
    affine: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Apply per-image colour affines and clamp: ``pixels float[B, 3, P]`` (0..255 values, P pixels) and
    ``affine float[B, 3, 4]`` -> ``float[B, 3, P]`` normalized, clamped to the normalized range of [0, 1]."""
    out = torch.baddbmm(affine[:, :, 3:], affine[:, :, :3], pixels)  # (B, 3, 3) @ (B, 3, P) + (B, 3, 1)
    lo, hi = _clamp_bounds(tuple(mean), tuple(std), out.device)
    return out.clamp_(min=lo.to(out.dtype), max=hi.to(out.dtype))


class DevicePhotometric:
    """Finishes a collated batch on the training device: the GPU side of ``defer_photometric=True``.

    ``batch = finisher(batch)`` moves every tensor to ``device`` (non-blocking, from pinned memory) and, if the
    batch carries ``color: float32[B, 3, 4]`` (deferred photometric work), turns ``images: uint8[B, 3, S, S]`` into
    ``float32[B, 3, S, S]`` normalized with one batched matmul. Batches already normalized pass through, so the
    engine can call it unconditionally.
    """

    def __init__(
        self,
        device: torch.device | str,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.channels_last = channels_last

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
        color = out.pop("color", None)
        images = out["images"]
        if color is not None:
            b, c, h, w = images.shape
            pixels = images.reshape(b, c, h * w).float()
            images = apply_color_affine(pixels, color, self.mean, self.std).view(b, c, h, w)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out["images"] = images
        return out
