"""The device input path (``data.backend=device``): loader workers read JPEG bytes and draw each sample's
augmentation from the image's size alone; decoding, crop, resize, flip, colour jitter and normalization run batched
on the training device (``torchvision.io.decode_jpeg(..., device="cuda")``: nvJPEG on a GPU).

The augmentation is the transform's own :meth:`~singleshot.data.transforms._Resize.plan`, drawn from the same
per-sample ``random.Random`` as on the CPU path, and its pixels go through the same
:func:`~singleshot.data.transforms.apply_plan` and colour affine: the same boxes, draws and sampler position as the
built-in loader, so resume is exact and only where the pixels are computed differs (equal on a CPU device; a GPU's
JPEG decoder and resize may differ by rounding).

Images that are not plain JPEGs (PNG, CMYK, ...) are decoded by the worker as the built-in loader does and only
finished on the device. A JPEG the device decoder refuses is decoded again on the CPU; one that no decoder reads is a
bad image, named, and raised or skipped as ``data.on_bad_image`` says.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from singleshot.data.base import DetectionDataset, decode_file
from singleshot.data.errors import BadImageError, DataLoadError
from singleshot.data.loader import BadSample, collate_targets, load_sample
from singleshot.data.photometric import DevicePhotometric, photometric_params
from singleshot.data.transforms import Plan, apply_plan


@dataclass
class EncodedSample:
    """One sample before its pixels: ``jpeg`` bytes (uint8[n]) or an already decoded ``image`` (uint8[3, H, W]), its
    file ``path``, its :class:`Plan` and its target (boxes moved by the plan, xyxy normalized)."""

    jpeg: Tensor | None
    image: Tensor | None
    path: str
    plan: Plan
    target: dict[str, Any]


class EncodedDataset(Dataset):
    """A :class:`DetectionDataset` read as :class:`EncodedSample`\\ s, indexed like
    :class:`~singleshot.data.loader.TransformedDataset` by ``(index, sample_seed)``; ``transform`` needs a ``plan``
    method (the training and validation transforms of :mod:`singleshot.data.transforms` have one)."""

    def __init__(self, dataset: DetectionDataset, transform: Any) -> None:
        if not callable(getattr(transform, "plan", None)):
            raise TypeError(f"{type(transform).__name__} has no plan(height, width, target, rng): the device input "
                            "path needs the augmentation drawn without the pixels")  # fmt: skip
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> EncodedSample | BadSample:
        index, seed = key if isinstance(key, tuple) else (key, key)
        return load_sample(self.dataset, index, lambda: self._encoded(index, random.Random(seed)))

    def _encoded(self, index: int, rng: random.Random) -> EncodedSample:
        jpeg, image, (h, w) = self.dataset.read_encoded(index)
        plan, target = self.transform.plan(h, w, self.dataset.target(index, h, w), rng)
        return EncodedSample(jpeg, image, self.dataset.image_path(index), plan, target)


def collate_encoded(samples: Sequence[EncodedSample | BadSample]) -> dict[str, Any]:
    """:class:`EncodedSample`\\ s -> the target part of a batch (:func:`~singleshot.data.loader.collate_targets`)
    plus ``encoded`` (per sample the JPEG bytes or the decoded image), ``paths``, ``plans`` and ``photometric:
    float32[B, 11]`` (the colour draws; the channel means are filled in on the device)."""
    good = [s for s in samples if isinstance(s, EncodedSample)]
    batch = collate_targets([s.target for s in good], [s for s in samples if isinstance(s, BadSample)])
    batch["encoded"] = [s.jpeg if s.jpeg is not None else s.image for s in good]
    batch["paths"] = [s.path for s in good]
    batch["plans"] = [s.plan for s in good]
    draws = [photometric_params((0.0, 0.0, 0.0), *(s.plan.jitter or (None, None))) for s in good]
    batch["photometric"] = torch.stack(draws) if draws else torch.zeros(0, 11)
    return batch


class DeviceDecode(DevicePhotometric):
    """Finishes a :func:`collate_encoded` batch on ``device``: JPEGs decoded there in one batched call, each image's
    plan applied (crop, resize, flip), the channel means taken, then :class:`DevicePhotometric`'s colour jitter +
    normalization; the batch comes out as the built-in loader's (``images: float32[B, 3, S, S]`` normalized, on
    ``device``). Samples that no decoder reads come back in ``bad`` (see
    :class:`~singleshot.data.loader.DetectionLoader`)."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        encoded, paths, plans = batch.pop("encoded"), batch.pop("paths"), batch.pop("plans")
        decoded, bad = self._decode(encoded, paths)
        keep = [i for i in range(len(encoded)) if i not in bad]
        images = [im for im in decoded if im is not None]
        if bad:
            index = torch.tensor(keep, dtype=torch.long)
            batch = {k: v.index_select(0, index) if isinstance(v, Tensor) else v for k, v in batch.items()}
            batch["bad"] = [*batch.get("bad", []), *bad.values()]
            plans, paths = [plans[i] for i in keep], [paths[i] for i in keep]
        for image, path, size in zip(images, paths, batch["orig_sizes"].tolist()):  # sizes from the headers (host)
            if list(image.shape[-2:]) != size:
                raise DataLoadError(f"{path}: decoded to {tuple(image.shape[-2:])} pixels, but its header says "
                                    f"{tuple(size)}")  # fmt: skip
        if images:
            pixels = torch.stack([apply_plan(image, plan) for image, plan in zip(images, plans)])  # (B, 3, S, S)
        else:
            pixels = torch.zeros(0, 3, 1, 1, dtype=torch.uint8, device=self.device)
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
        out["photometric"][:, 0:3] = pixels.float().mean(dim=(2, 3))  # channel means of each planned image
        out["images"] = pixels
        return super().__call__(out)

    def _decode(self, encoded: list[Tensor], paths: list[str]) -> tuple[list[Tensor | None], dict[int, BadSample]]:
        """Per sample an ``uint8[3, H, W]`` image on the device, and the samples no decoder reads (by position)."""
        jpegs = [i for i, e in enumerate(encoded) if e.dim() == 1]
        images: list[Tensor | None] = [None if e.dim() == 1 else e.to(self.device, non_blocking=True) for e in encoded]
        if jpegs:
            try:
                decoded = decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one of them is refused: decode one by one to find which
                decoded = [self._decode_one(encoded[i]) for i in jpegs]
            for i, image in zip(jpegs, decoded):
                images[i] = image
        bad: dict[int, BadSample] = {}
        for i in jpegs:
            if images[i] is not None:
                continue
            try:  # the device decoder refused it: the CPU's libjpeg-turbo (or Pillow) may still read it
                images[i] = decode_file(encoded[i].numpy().tobytes(), paths[i]).to(self.device)
            except BadImageError as e:
                bad[i] = BadSample(-1, paths[i], str(e), True)
        return images, bad  # None at the bad positions

    def _decode_one(self, jpeg: Tensor) -> Tensor | None:
        try:
            return decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            return None
