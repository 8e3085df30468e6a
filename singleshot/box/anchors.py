"""Default boxes (anchors) for SSD-style and FPN-style detectors.

Every function here returns boxes as ``Tensor[A, 4]`` in **normalized (cx, cy, w, h)** format: centres and sizes
are fractions of the input image side, so the same anchors serve any image resolution after resizing.

Two generators cover the published models:

* :class:`SSDAnchorSpec`: the SSD300 rule shared by the MLPerf reference and NVIDIA SSD300 v1.1. Per level the
  box *types* come first, then positions row-major, so anchor ``type * H * W + row * W + col`` of a level is the
  one predicted by head channel group ``type`` at ``(row, col)`` (the layout of the reference checkpoints).
* :class:`MultiscaleAnchorSpec`: the RetinaNet/SSD-FPN rule of NVIDIA SSD320 v1.2 (TF object-detection API's
  multiscale grid generator): per level ``anchor_scale * stride * 2**(i / scales_per_octave)`` times each aspect
  ratio, ordered the same way (type-major, then row-major positions) so both heads share one output layout.

Anchors are computed in float64 and cached per (spec, device, dtype): building them is a one-time cost.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch._guards import detect_fake_mode
from torchvision.ops import box_convert


@dataclass(frozen=True)
class SSDAnchorSpec:
    """SSD300-style default boxes.

    Attributes:
        image_size: input side in pixels (300 for SSD300).
        feature_sizes: side of each feature map, e.g. (38, 19, 10, 5, 3, 1).
        steps: pixel stride used to place centres, e.g. (8, 16, 32, 64, 100, 300). Centres are at
            ``(col + 0.5) / (image_size / step)``, exactly as the reference computes them (note 300 / 8 = 37.5, not 38).
        scales: box side per level in pixels plus one extra for the last level's geometric mean,
            e.g. (21, 45, 99, 153, 207, 261, 315).
        aspect_ratios: per level, the extra ratios ``a``; each gives boxes ``(s*sqrt(a), s/sqrt(a))`` and its swap.
        clip: clamp the (cx, cy, w, h) values to [0, 1] as the reference does.
    """

    image_size: int
    feature_sizes: tuple[int, ...]
    steps: tuple[int, ...]
    scales: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    clip: bool = True

    def __post_init__(self) -> None:
        n = len(self.feature_sizes)
        if not (len(self.steps) == n and len(self.aspect_ratios) == n and len(self.scales) == n + 1):
            raise ValueError(
                f"SSDAnchorSpec: need len(steps) == len(aspect_ratios) == len(feature_sizes) == {n} and "
                f"len(scales) == {n + 1}; got steps={len(self.steps)}, aspect_ratios={len(self.aspect_ratios)}, "
                f"scales={len(self.scales)}"
            )

    @property
    def num_anchors_per_location(self) -> tuple[int, ...]:
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    def resized(self, image_size: int, feature_sizes: tuple[int, ...]) -> SSDAnchorSpec:
        """The same default boxes relative to the image, for inputs of ``image_size`` pixels whose feature maps are
        ``feature_sizes``: box sides keep their fraction of the image (the SSD convention: ``scales`` x new / old
        size), centres sit at the middle of each feature cell (step = image_size / feature size)."""
        if len(feature_sizes) != len(self.feature_sizes):
            raise ValueError(f"{len(feature_sizes)} feature maps given for a spec of {len(self.feature_sizes)}")
        ratio = image_size / self.image_size
        return dataclasses.replace(
            self,
            image_size=image_size,
            feature_sizes=tuple(feature_sizes),
            steps=tuple(image_size / f for f in feature_sizes),
            scales=tuple(s * ratio for s in self.scales),
        )

    def box_sizes(self, level: int) -> list[tuple[float, float]]:
        """Normalized (w, h) of each box type at ``level``, in head-channel order."""
        sk = self.scales[level] / self.image_size
        sk_next = self.scales[level + 1] / self.image_size
        sizes = [(sk, sk), (math.sqrt(sk * sk_next),) * 2]
        for a in self.aspect_ratios[level]:
            w, h = sk * math.sqrt(a), sk / math.sqrt(a)
            sizes += [(w, h), (h, w)]
        return sizes

    def build(self) -> Tensor:
        """Return ``Tensor[A, 4]`` float64, normalized (cx, cy, w, h)."""
        out = []
        for level, fsize in enumerate(self.feature_sizes):
            fk = self.image_size / self.steps[level]
            idx = torch.arange(fsize, dtype=torch.float64)
            cy, cx = torch.meshgrid((idx + 0.5) / fk, (idx + 0.5) / fk, indexing="ij")  # (H, W) each
            for w, h in self.box_sizes(level):
                wh = torch.tensor([w, h], dtype=torch.float64).expand(fsize * fsize, 2)
                out.append(torch.cat([torch.stack([cx.reshape(-1), cy.reshape(-1)], 1), wh], 1))
        boxes = torch.cat(out)
        return boxes.clamp_(0, 1) if self.clip else boxes


@dataclass(frozen=True)
class MultiscaleAnchorSpec:
    """RetinaNet/SSD-FPN anchors over pyramid levels ``min_level..max_level`` (stride ``2**level``).

    Attributes:
        image_size: square input side in pixels (320 for SSD320).
        min_level, max_level: pyramid levels (3..7 gives strides 8..128).
        anchor_scale: base anchor side in units of the level's stride (4.0 in the published config).
        aspect_ratios: width/height... expressed as in the TF API: ``w = s * sqrt(a)``, ``h = s / sqrt(a)``.
        scales_per_octave: intermediate scales ``2**(i / n)`` per level.
    """

    image_size: int
    min_level: int = 3
    max_level: int = 7
    anchor_scale: float = 4.0
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    scales_per_octave: int = 2

    @property
    def feature_sizes(self) -> tuple[int, ...]:
        return tuple(math.ceil(self.image_size / 2**lvl) for lvl in range(self.min_level, self.max_level + 1))

    @property
    def num_anchors_per_location(self) -> tuple[int, ...]:
        n = self.scales_per_octave * len(self.aspect_ratios)
        return (n,) * (self.max_level - self.min_level + 1)

    def resized(self, image_size: int, feature_sizes: tuple[int, ...]) -> MultiscaleAnchorSpec:
        """The grid for inputs of ``image_size`` pixels (anchor sides stay in units of each level's stride, as the
        TF generator defines them); ``feature_sizes`` must be the ones this spec computes for that size.

        Raises:
            ValueError: the model's feature maps at that size are not ``ceil(image_size / stride)``.
        """
        out = dataclasses.replace(self, image_size=image_size)
        if tuple(feature_sizes) != out.feature_sizes:
            raise ValueError(f"feature maps {tuple(feature_sizes)} at {image_size} px, the anchor grid expects "
                             f"{out.feature_sizes}")
        return out

    def build(self) -> Tensor:
        """Return ``Tensor[A, 4]`` float64, normalized (cx, cy, w, h)."""
        out = []
        for level, fsize in zip(range(self.min_level, self.max_level + 1), self.feature_sizes):
            stride = 2.0**level
            # TF's grid generator puts centres at stride/2 + i*stride when the image divides evenly, else at i*stride.
            offset = stride / 2 if self.image_size % stride == 0 else 0.0
            idx = torch.arange(fsize, dtype=torch.float64) * stride + offset
            cy, cx = torch.meshgrid(idx / self.image_size, idx / self.image_size, indexing="ij")
            centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)
            for octave, ratio in itertools.product(range(self.scales_per_octave), self.aspect_ratios):
                side = self.anchor_scale * stride * 2.0 ** (octave / self.scales_per_octave) / self.image_size
                wh = torch.tensor([side * math.sqrt(ratio), side / math.sqrt(ratio)], dtype=torch.float64)
                out.append(torch.cat([centres, wh.expand(fsize * fsize, 2)], 1))
        return torch.cat(out)


AnchorSpec = SSDAnchorSpec | MultiscaleAnchorSpec


_CACHE: dict[tuple, object] = {}


def cached(key: tuple, build: Callable[[], Any]) -> Any:
    """Memoize ``build()`` under ``key``; under export tracing (fake tensors) read the cache but never fill it, so a
    fake tensor cannot leak into later eager calls while real cached tensors still become graph constants."""
    if key in _CACHE:
        return _CACHE[key]
    value = build()
    if detect_fake_mode() is None:
        _CACHE[key] = value
    return value


def default_boxes(spec: AnchorSpec, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Default boxes of ``spec`` as ``Tensor[A, 4]`` normalized (cx, cy, w, h), built once per device and dtype.

    The returned tensor is shared between callers: treat it as read-only.
    """
    device = torch.device(device)
    return cached(("cxcywh", spec, device, dtype), lambda: spec.build().to(device=device, dtype=dtype))


def default_boxes_xyxy(
    spec: AnchorSpec, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """The default boxes of ``spec`` as ``Tensor[A, 4]`` xyxy normalized (cached like :func:`default_boxes`)."""
    device = torch.device(device)
    return cached(
        ("xyxy", spec, device, dtype), lambda: box_convert(default_boxes(spec, device, dtype), "cxcywh", "xyxy")
    )


@dataclass(frozen=True)
class GridLevel:
    """The separable extents of one level's default boxes (xyxy, normalized).

    Anchor ``start + t * f * f + row * f + col`` spans ``x1[t, col]..x2[t, col]`` by ``y1[t, row]..y2[t, row]``.
    """

    start: int
    num_types: int
    size: int
    x1: Tensor  # (T, f)
    x2: Tensor  # (T, f)
    y1: Tensor  # (T, f)
    y2: Tensor  # (T, f)


def _grid_levels(spec: AnchorSpec, device: torch.device, dtype: torch.dtype) -> tuple[GridLevel, ...]:
    xyxy = default_boxes_xyxy(spec, device, dtype)
    levels, start = [], 0
    for f, t in zip(spec.feature_sizes, spec.num_anchors_per_location):
        blk = xyxy[start : start + t * f * f].view(t, f, f, 4)  # (T, row, col, 4)
        levels.append(
            GridLevel(
                start,
                t,
                f,
                blk[:, 0, :, 0].contiguous(),
                blk[:, 0, :, 2].contiguous(),
                blk[:, :, 0, 1].contiguous(),
                blk[:, :, 0, 3].contiguous(),
            )
        )
        start += t * f * f
    return tuple(levels)


def grid_levels(spec: AnchorSpec, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Per-level separable x/y extents of ``default_boxes(spec)`` (both specs place boxes on a grid whose x extent
    depends only on (type, col) and y extent only on (type, row)); cached per device and dtype."""
    device = torch.device(device)
    return cached(("grid", spec, device, dtype), lambda: _grid_levels(spec, device, dtype))


SSD300_ANCHORS = SSDAnchorSpec(
    image_size=300,
    feature_sizes=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    scales=(21, 45, 99, 153, 207, 261, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)
