"""Turning user images into network input: the validation transform (square resize + ImageNet normalization).

Accepted image types: a file path (``str``/``os.PathLike``), a PIL image, a NumPy ``uint8`` array ``[H, W]``,
``[H, W, 1|3|4]``, or a tensor ``uint8 [3|1, H, W]`` / ``[H, W]`` (float tensors in [0, 1] are accepted too, the
torchvision convention). Grayscale becomes RGB; an alpha channel is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from singleshot.accelerator import capabilities
from singleshot.data.base import read_image
from singleshot.data.photometric import normalize
from singleshot.data.transforms import resize_square

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | Tensor


def _from_pil(image: Any) -> Tensor:
    rgb = np.asarray(image.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def _from_array(array: np.ndarray) -> Tensor:
    if array.dtype != np.uint8:
        raise TypeError(f"numpy images must be uint8 [H, W] or [H, W, C], got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"numpy images must be [H, W] or [H, W, 1|3|4] (HWC), got shape {tuple(array.shape)}")
    return _channels_to_rgb(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))  # HWC -> CHW


def _from_tensor(tensor: Tensor) -> Tensor:
    if tensor.is_floating_point():
        tensor = (tensor.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        raise TypeError(f"tensor images must be uint8 (0..255) or float (0..1), got {tensor.dtype}")
    if tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ValueError(f"tensor images must be [C, H, W] with C in 1, 3, 4, got shape {tuple(tensor.shape)}")
    return _channels_to_rgb(tensor.cpu())


def _channels_to_rgb(chw: Tensor) -> Tensor:
    """``uint8[1|3|4, H, W]`` -> ``uint8[3, H, W]`` (grey replicated, alpha dropped)."""
    if chw.shape[0] == 1:
        return chw.expand(3, -1, -1)
    return chw[:3]


def to_uint8_rgb(image: ImageInput) -> Tensor:
    """Any accepted image -> ``Tensor[3, H, W] uint8`` RGB on the CPU (see the module docstring).

    Raises:
        singleshot.data.errors.BadImageError: an unreadable file (the message names it).
        TypeError / ValueError: an unsupported object, dtype or shape (the message says which).
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Tensor):
        return _from_tensor(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image without importing PIL eagerly
        return _from_pil(image)
    raise TypeError(f"unsupported image type {type(image).__name__}: pass a path, PIL image, numpy array or tensor")


def preprocess(
    images: Sequence[Tensor],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    channels_last: bool = False,
) -> Tensor:
    """``B`` images ``uint8[3, H_i, W_i]`` -> ``float32[B, 3, size, size]`` ImageNet-normalized on ``device``.

    The resize runs on the CPU in uint8 (:func:`~singleshot.data.transforms.resize_square`, the transforms' resize,
    so predictions match evaluation); the uint8 batch is then moved (pinned where that helps) and normalized on the
    device (:func:`~singleshot.data.photometric.normalize`).
    """
    batch = torch.stack([resize_square(im, size) for im in images])  # (B, 3, S, S) uint8
    if capabilities(device).pin_memory:
        batch = batch.pin_memory()
    batch = normalize(batch.to(device, non_blocking=True), mean, std)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch
