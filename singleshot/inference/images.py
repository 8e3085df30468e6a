"""What a user names as images, turned into what the model's core takes: ``uint8[3, H, W]`` RGB tensors.

Names: a file, a folder (its image files, sorted, not recursive) or a glob pattern (``*``, ``?``, ``[``, ``**``
recursive) stand for image files (:func:`expand_image_paths`). Image objects: a file path (``str``/``os.PathLike``),
a PIL image, a NumPy ``uint8`` array ``[H, W]``, ``[H, W, 1|3|4]``, or a tensor ``uint8 [3|1, H, W]`` / ``[H, W]``
(float tensors in [0, 1] are accepted too, the torchvision convention); grayscale becomes RGB, an alpha channel is
dropped (:func:`to_uint8_rgb`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from singleshot.data.base import read_image

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | Tensor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
_GLOB_CHARS = set("*?[")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def expand_image_paths(items: list[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    """Files as given; folders -> their image files (sorted, not recursive); glob patterns (``*``, ``?``, ``[``,
    ``**`` recursive) -> the matching image files (sorted).

    Returns:
        ``(files, errors)``: errors name each item that is neither an existing path nor a pattern matching an image.
    """
    files: list[Path] = []
    errors: list[str] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if is_image_file(p))
        elif path.exists():
            files.append(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if is_image_file(Path(p)))
            if matches:
                files += matches
            else:
                errors.append(f"{text}: no image file matches this pattern")
        else:
            errors.append(f"{text}: no such file or folder")
    return files, errors


def is_path_pattern(item: object) -> bool:
    """True for a string/path naming a folder or a glob pattern (an input that stands for several images)."""
    if not isinstance(item, (str, os.PathLike)):
        return False
    text = os.fspath(item)
    return Path(text).is_dir() or (bool(_GLOB_CHARS & set(text)) and not Path(text).exists())


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
