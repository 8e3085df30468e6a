"""SSD augmentation: the MLPerf reference's IoU-constrained random crop, flip, resize, colour jitter, normalize.

Samples go in as the dataset contract (``image: Tensor[3, H, W] uint8``, ``target["boxes"]: Tensor[N, 4] xyxy
absolute pixels``) and come out as ``image: Tensor[3, S, S]`` uint8, ``target["boxes"]: Tensor[N, 4] xyxy
normalized to [0, 1]`` and ``target["photometric"]: Tensor[11]``, the image's colour-jitter draw. A transform does
geometry and draws the colours; the pixels' colour work and normalization are the loader's (one batched affine per
image, in the collate on the CPU or on the accelerator: :func:`singleshot.data.loader.build_loader`,
:mod:`singleshot.data.photometric`).

Speed (see benchmarks/bench_data.py): the crop window is chosen from the boxes alone, the uint8 image is sliced
and resized once (torchvision's uint8 antialiased kernel, which is nearly as cheap as plain bilinear at these
ratios and matches the reference's PIL resize), and brightness, contrast, saturation, hue and normalization are
folded into one 3x3 affine per image applied in a single matmul.

All randomness comes from the ``random.Random`` passed in, which the loader seeds per (seed, epoch, index), so a
sample's augmentation does not depend on worker count, rank count or order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import clip_boxes_to_image
from torchvision.transforms.v2 import functional as TF

from singleshot.data.photometric import normalize, photometric_params

# The seven choices of the reference: no crop, minimum IoU 0.1 ... 0.9, and crop without an IoU constraint.
CROP_CHOICES: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -math.inf)


def crop_iou(boxes: np.ndarray, window: tuple[float, float, float, float]) -> np.ndarray:
    """IoU of each box with one crop window.

    Args:
        boxes: ``float[N, 4]`` xyxy, normalized (any units, as long as ``window`` uses the same).
        window: ``(left, top, right, bottom)`` in the same units.

    Returns:
        ``float[N]``. Hand-written in NumPy: for one window and a handful of boxes it is ~5x faster than
        ``torchvision.ops.box_iou`` (no tensor dispatch), and the crop search calls it several times per image.
    """
    left, top, right, bottom = window
    iw = np.clip(np.minimum(boxes[:, 2], right) - np.maximum(boxes[:, 0], left), 0.0, None)
    ih = np.clip(np.minimum(boxes[:, 3], bottom) - np.maximum(boxes[:, 1], top), 0.0, None)
    inter = iw * ih
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (areas + (right - left) * (bottom - top) - inter)


def sample_ssd_crop(
    boxes: np.ndarray, rng: random.Random, attempts: int = 1
) -> tuple[tuple[float, float, float, float], np.ndarray] | None:
    """Choose an SSD crop window the way the MLPerf reference does.

    Draw a choice uniformly from :data:`CROP_CHOICES`; "no crop" returns None. Otherwise make ``attempts``
    attempts: width and height uniform in [0.3, 1] of the image's, rejected unless w/h is in [0.5, 2]; position
    uniform inside the image; accepted only if every box has IoU with the window above the minimum and at least one
    box centre lies strictly inside it. If no attempt is accepted, draw a new choice. An image without boxes accepts
    any window that passes the aspect test (there is nothing to constrain it).

    Args:
        boxes: ``float[N, 4]`` xyxy normalized to [0, 1] of the image.
        rng: the sample's random generator.
        attempts: windows tried per choice (MLPerf's ``max_samples``: 1 in the reference, 50 the other value the
            rules allow).

    Returns:
        None (no crop) or ``((left, top, right, bottom) normalized, keep bool[N])`` where ``keep`` marks the boxes
        whose centres are inside the window.
    """
    centers_x = (boxes[:, 0] + boxes[:, 2]) * 0.5
    centers_y = (boxes[:, 1] + boxes[:, 3]) * 0.5
    while True:
        min_iou = rng.choice(CROP_CHOICES)
        if min_iou is None:
            return None
        for _ in range(attempts):
            w, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
            if not 0.5 <= w / h <= 2.0:
                continue
            left, top = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
            window = (left, top, left + w, top + h)
            if len(boxes) == 0:
                return window, np.zeros(0, dtype=bool)
            if not (crop_iou(boxes, window) > min_iou).all():
                continue
            keep = (centers_x > window[0]) & (centers_x < window[2]) & (centers_y > window[1]) & (centers_y < window[3])
            if keep.any():
                return window, keep


def hflip_boxes(boxes: Tensor) -> Tensor:
    """Mirror boxes horizontally: ``Tensor[N, 4]`` xyxy normalized to [0, 1] -> same format."""
    return torch.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], dim=1)


@dataclass(frozen=True)
class ColorJitterParams:
    """Ranges of torchvision's ``ColorJitter(brightness, contrast, saturation, hue)``; the reference's defaults."""

    brightness: float = 0.125
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.05

    def sample(self, rng: random.Random) -> tuple[tuple[float, float, float, float], list[int]]:
        """Factors ``(brightness, contrast, saturation, hue)`` and a random order of the four ops, as ColorJitter."""
        factors = (
            rng.uniform(1.0 - self.brightness, 1.0 + self.brightness),
            rng.uniform(max(0.0, 1.0 - self.contrast), 1.0 + self.contrast),
            rng.uniform(max(0.0, 1.0 - self.saturation), 1.0 + self.saturation),
            rng.uniform(-self.hue, self.hue),
        )
        order = [0, 1, 2, 3]
        rng.shuffle(order)
        return factors, order


def resize_square(image: Tensor, size: int) -> Tensor:
    """``uint8[3, h, w]`` (any strides) -> ``uint8[3, size, size]`` (channels-last memory), antialiased bilinear: the
    one resize of training, evaluation, ``Detector``, INT8 calibration and the report pictures."""
    # The uint8 kernel is vectorized only for channels-last memory, and a crop of the decoder's HWC buffer is not
    # channels-last-contiguous: one cheap uint8 copy makes the resize ~1.6x faster.
    hwc = image.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    return TF.resize(hwc, [size, size], antialias=True)


def inference_batch(
    images: Sequence[Tensor],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    *,
    channels_last: bool = False,
    pin_memory: bool = False,
) -> Tensor:
    """``B`` images ``uint8[3, H_i, W_i]`` -> ``float32[B, 3, size, size]`` normalized on ``device``: the validation
    transform for images that no loader read (``Detector``, the report's pictures). The uint8 resize
    (:func:`resize_square`) runs on the CPU; the uint8 batch moves (``pin_memory``: page-locked first, so the copy is
    asynchronous) and is normalized there (:func:`~singleshot.data.photometric.normalize`)."""
    batch = torch.stack([resize_square(im, size) for im in images])  # (B, 3, S, S) uint8
    if pin_memory:
        batch = batch.pin_memory()
    x = normalize(batch.to(device, non_blocking=True), mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass(frozen=True)
class Plan:
    """What a transform does to one image's pixels, drawn without them (so it can be drawn where the file is read and
    applied where the image is decoded, e.g. on the GPU): crop to ``window`` (``(x0, y0, x1, y1)`` integer pixels,
    x1/y1 exclusive; None = whole image), resize to ``size x size``, mirror if ``flip``, and the colour draw
    ``jitter`` (``(factors, order)`` or None) that the loader applies with the normalization."""

    window: tuple[int, int, int, int] | None
    size: int
    flip: bool = False
    jitter: tuple[tuple[float, float, float, float], list[int]] | None = None


def apply_plan(image: Tensor, plan: Plan) -> Tensor:
    """``uint8[3, H, W]`` (any device) -> ``uint8[3, S, S]``: the crop, resize and flip of ``plan``."""
    if plan.window is not None:
        x0, y0, x1, y1 = plan.window
        image = image[:, y0:y1, x0:x1]
    image = resize_square(image, plan.size)
    return image.flip(-1) if plan.flip else image


class _Resize:
    """Shared tail: a transform draws a :class:`Plan` and the output boxes from the image's size alone
    (:meth:`plan`); ``__call__`` applies the plan to the pixels and attaches the image's colour draw."""

    def __init__(self, size: int) -> None:
        self.size = size

    def plan(
        self, height: int, width: int, target: dict[str, Any], rng: random.Random
    ) -> tuple[Plan, dict[str, Any]]:
        """The geometry and colour draw for an image of ``height x width`` pixels, and ``target`` with its boxes
        moved accordingly (xyxy normalized to [0, 1]) and its labels filtered; the pixels are not needed."""
        raise NotImplementedError

    def __call__(
        self, image: Tensor, target: dict[str, Any], rng: random.Random | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        plan, target = self.plan(int(image.shape[-2]), int(image.shape[-1]), target, rng or random.Random(0))
        return self.finish(apply_plan(image, plan), target, plan.jitter)

    def finish(self, image: Tensor, target: dict[str, Any], jitter: Any) -> tuple[Tensor, dict[str, Any]]:
        """``uint8[3, S, S]`` -> the same image and ``target["photometric"]: float32[11]``, the channel means and the
        colour-jitter draw (identity when ``jitter`` is None) that the loader applies with the normalization."""
        channel_mean = image.float().mean(dim=(1, 2)).tolist()
        factors, order = jitter if jitter is not None else (None, None)
        return image, {**target, "photometric": photometric_params(channel_mean, factors, order)}


class SSDTrainTransform(_Resize):
    """The MLPerf reference's SSD training augmentation, boxes moving with the pixels (``SSDTransformer`` and
    ``SSDCropping`` in mlcommons/training ``retired_benchmarks/ssd-v1/ssd/utils.py``).

    Order: IoU-constrained random crop -> horizontal flip (p=0.5) -> resize to ``size x size`` -> ColorJitter(0.125,
    0.5, 0.5, 0.05) -> normalization (the last two drawn here, applied by the loader). ``crop=False`` leaves the crop
    out (``data.augment=light``).

    Colour jitter is "a color-jitter implementation of similar distribution" (allowed by the MLPerf rules): the same
    factor ranges and random op order as torchvision's ColorJitter, but the ops are composed into one affine map
    with a single clamp at the end, and hue is a rotation about the grey axis of RGB space instead of an HSV shift
    (see :mod:`singleshot.data.photometric`).

    Call: ``(image uint8[3, H, W], target with boxes xyxy pixels, rng) -> (image uint8[3, S, S], target with boxes
    float32[N, 4] xyxy normalized to [0, 1] and photometric float32[11], the colour draw)``.
    """

    def __init__(
        self,
        size: int,
        *,
        crop_attempts: int = 1,
        flip_prob: float = 0.5,
        jitter: ColorJitterParams | None = ColorJitterParams(),
        crop: bool = True,
    ) -> None:
        super().__init__(size)
        self.crop = crop
        self.crop_attempts = crop_attempts
        self.flip_prob = flip_prob
        self.jitter = jitter

    def plan(
        self, height: int, width: int, target: dict[str, Any], rng: random.Random
    ) -> tuple[Plan, dict[str, Any]]:
        h, w = height, width
        boxes = target["boxes"].numpy() / np.array([w, h, w, h], dtype=np.float32)  # (N, 4) xyxy normalized
        labels = target["labels"]
        crop = sample_ssd_crop(boxes, rng, self.crop_attempts) if self.crop else None
        window = None
        if crop is not None:
            (fx0, fy0, fx1, fy1), keep = crop
            # Pixel window truncated to integers as the reference does; boxes are re-expressed relative to this
            # integer window (not the float one) so they stay exact to the pixels actually kept.
            x0, y0 = int(fx0 * w), int(fy0 * h)
            x1, y1 = max(int(fx1 * w), x0 + 1), max(int(fy1 * h), y0 + 1)
            window = (x0, y0, x1, y1)
            scale = np.array([w / (x1 - x0), h / (y1 - y0)] * 2, dtype=np.float32)
            offset = np.array([x0 / w, y0 / h] * 2, dtype=np.float32)
            boxes = np.clip((boxes[keep] - offset) * scale, 0.0, 1.0)
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels = boxes[valid], labels[torch.from_numpy(np.flatnonzero(keep)[valid])]
        out_boxes = torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32))
        flip = rng.random() < self.flip_prob
        if flip:
            out_boxes = hflip_boxes(out_boxes)
        jitter = self.jitter.sample(rng) if self.jitter is not None else None
        return Plan(window, self.size, flip, jitter), {**target, "boxes": out_boxes, "labels": labels}


def sample_area_crop(
    width: int,
    height: int,
    rng: random.Random,
    area: tuple[float, float] = (0.75, 1.0),
    aspect: tuple[float, float] = (0.75, 3.0),
    max_attempts: int = 100,
) -> tuple[int, int, int, int] | None:
    """Choose a crop window by area and aspect ratio, the sampling of ``tf.image.sample_distorted_bounding_box`` as
    NVIDIA's SSD320 v1.2 uses it (``random_crop_image`` with ``min_object_covered`` 0, so boxes do not constrain it).

    Each attempt draws an aspect ratio (width / height, in pixels) uniformly from ``aspect``, then an integer height
    uniformly between the heights that give the smallest and the largest allowed area at that ratio (capped so the
    crop fits the image), rounds the width, nudges the height by one pixel if rounding left the area just outside
    ``area``, and accepts the window if it fits; the position is uniform inside the image.

    Args:
        width, height: image size in pixels.
        area: allowed crop area as a fraction of the image's area.
        aspect: allowed crop width / height.
        max_attempts: attempts before giving up (100, as TF).

    Returns:
        ``(x0, y0, x1, y1)`` integer pixels (x1, y1 exclusive), or None when no attempt fits (use the whole image).
    """
    min_area, max_area = area[0] * width * height, area[1] * width * height
    for _ in range(max_attempts):
        ratio = rng.uniform(*aspect)
        lo = round(math.sqrt(min_area / ratio))
        hi = min(round(math.sqrt(max_area / ratio)), height, math.floor((width + 0.5) / ratio))
        h = rng.randint(min(lo, hi), hi) if hi > 0 else 0
        w = round(h * ratio)
        if w * h < min_area:
            h, w = h + 1, round((h + 1) * ratio)
        elif w * h > max_area:
            h, w = h - 1, round((h - 1) * ratio)
        if not (min_area <= w * h <= max_area and 0 < w <= width and 0 < h <= height):
            continue
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - h)
        return x0, y0, x0 + w, y0 + h
    return None


def crop_boxes(boxes: Tensor, window: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    """Boxes ``Tensor[N, 4]`` xyxy pixels -> ``(boxes [K, 4] xyxy pixels of the crop, clipped to it, keep [K] indices
    into the input)``; boxes left with no area inside the window are dropped."""
    x0, y0, x1, y1 = window
    clipped = clip_boxes_to_image(boxes - torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype), (y1 - y0, x1 - x0))
    keep = ((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])).nonzero().flatten()
    return clipped[keep], keep


class AreaCropTrainTransform(_Resize):
    """NVIDIA SSD320 v1.2's training augmentation: random crop of 75-100% of the area with aspect 0.75-3
    (:func:`sample_area_crop`), horizontal flip (p=0.5), resize to ``size x size``, normalization (by the loader); no
    colour jitter.

    The TF config flips before cropping; cropping first is the same distribution (the window's position is uniform,
    so mirror-symmetric) and flips fewer pixels. Boxes are clipped to the window; boxes left without area are dropped.

    Call: as :class:`SSDTrainTransform` (``photometric`` holds the identity colour map).
    """

    def __init__(
        self,
        size: int,
        *,
        area: tuple[float, float] = (0.75, 1.0),
        aspect: tuple[float, float] = (0.75, 3.0),
        flip_prob: float = 0.5,
    ) -> None:
        super().__init__(size)
        self.area, self.aspect, self.flip_prob = area, aspect, flip_prob

    def plan(
        self, height: int, width: int, target: dict[str, Any], rng: random.Random
    ) -> tuple[Plan, dict[str, Any]]:
        h, w = height, width
        boxes, labels = target["boxes"].float(), target["labels"]
        window = sample_area_crop(w, h, rng, self.area, self.aspect)
        if window is not None:
            boxes, keep = crop_boxes(boxes, window)
            labels = labels[keep]
            h, w = window[3] - window[1], window[2] - window[0]
        boxes = boxes / torch.tensor([w, h, w, h], dtype=torch.float32)
        flip = rng.random() < self.flip_prob
        if flip:
            boxes = hflip_boxes(boxes)
        return Plan(window, self.size, flip), {**target, "boxes": boxes, "labels": labels}


class SSDValTransform(_Resize):
    """Validation: resize to ``size x size`` (normalized by the loader); boxes become xyxy normalized to [0, 1].

    Call: ``(image uint8[3, H, W], target with boxes xyxy pixels, rng ignored) -> (uint8[3, S, S], target with
    photometric float32[11], the identity colour map)``.
    """

    def plan(
        self, height: int, width: int, target: dict[str, Any], rng: random.Random | None = None
    ) -> tuple[Plan, dict[str, Any]]:
        boxes = target["boxes"] / torch.tensor([width, height, width, height], dtype=torch.float32)
        return Plan(None, self.size), {**target, "boxes": boxes}
