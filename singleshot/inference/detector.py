"""``singleshot.Detector``: a trained detector behind one call, for scripts and services.

    detector = Detector.from_checkpoint("runs/exp/best.pt")           # CUDA if available, else CPU
    result = detector.predict("street.jpg", score_threshold=0.3)
    result["boxes"]   # Tensor[K, 4] xyxy, pixels of street.jpg; also "scores", "labels" (1..K), "names"
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from singleshot.accelerator import capabilities, default_device
from singleshot.box.factory import build_postprocessor
from singleshot.checkpoint import model_from_checkpoint
from singleshot.inference.inputs import expand_image_paths, is_path_pattern
from singleshot.inference.preprocess import ImageInput, preprocess, to_uint8_rgb
from singleshot.interop import read_checkpoint
from singleshot.precision import autocast


class Detector:
    """A model plus everything needed to go from images to labelled boxes.

    Attributes:
        model: the underlying ``nn.Module`` in eval mode; ``model(x)`` with ``x: float[B, 3, S, S]`` normalized
            gives the raw ``(bbox_regression [B, A, 4], cls_logits [B, A, C])``.
        spec: the model's :class:`~singleshot.models.DetectorSpec` (``image_size`` S, anchors, normalization).
        classes: the K class names; label ``k`` is ``classes[k - 1]``.
        label_to_category_id: label -> dataset category id (for COCO results files).
        device: where the model runs.
        half: fp16 autocast for the forward (default on CUDA).
    """

    def __init__(
        self,
        model: nn.Module,
        classes: Sequence[str],
        *,
        label_to_category_id: dict[int, int] | None = None,
        device: str | torch.device | None = None,
        half: bool | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.spec = model.spec
        self.classes = list(classes)
        self.label_to_category_id = dict(label_to_category_id or {i: i for i in range(1, len(self.classes) + 1)})
        self.half = capabilities(self.device).fp16_training if half is None else half
        self.channels_last = capabilities(self.device).channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device | None = None) -> Detector:
        """Load a singleshot (or MLPerf / NVIDIA SSD300) checkpoint, or a ``.safetensors`` file written by
        ``singleshot export``; ``device`` defaults to CUDA when available."""
        ckpt = read_checkpoint(Path(path))
        model = model_from_checkpoint(ckpt)
        l2c = {int(k): int(v) for k, v in (ckpt.get("label_to_category_id") or {}).items()}
        return cls(model, ckpt["classes"], label_to_category_id=l2c or None, device=device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        half = "fp16" if capabilities(self.device).fp16_training else "bf16"
        return autocast(self.device, half if self.half else "fp32")

    @torch.no_grad()
    def predict_tensors(
        self, images: Sequence[Tensor], score_threshold: float = 0.3, max_detections: int | None = None
    ) -> list[dict[str, Any]]:
        """One batch of ``uint8[3, H, W]`` RGB images -> one result dict per image (see :meth:`predict`)."""
        if not images:
            return []
        overrides: dict[str, Any] = {"score_threshold": float(score_threshold)}
        if max_detections is not None:
            overrides["max_detections"] = int(max_detections)
        post = build_postprocessor(self.spec, **overrides)
        x = preprocess(images, self.spec.image_size, self.spec.mean, self.spec.std, self.device, self.channels_last)
        with self._autocast():
            bbox_regression, cls_logits = self.model(x)
        sizes = torch.tensor([[im.shape[-2], im.shape[-1]] for im in images], device=self.device)  # (B, 2) (H, W)
        dets = post(bbox_regression.float(), cls_logits.float(), sizes)
        return [self._result(d) for d in dets]

    def _result(self, det: dict[str, Tensor]) -> dict[str, Any]:
        labels = det["labels"].cpu()
        return {
            "boxes": det["boxes"].cpu(),
            "scores": det["scores"].cpu(),
            "labels": labels,
            "names": [self.classes[i - 1] for i in labels.tolist()],
        }

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        score_threshold: float = 0.3,
        batch_size: int = 8,
        max_detections: int | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Detect objects in one image or a list of images.

        Args:
            images: a path, PIL image, NumPy ``uint8`` HWC array or ``uint8`` CHW tensor, or a list of them (mixed
                types and sizes are fine); a folder or a glob pattern (``"photos/*.jpg"``, ``"data/**/*.png"``)
                stands for its image files, sorted, and gives a list. Preprocessing is the validation transform:
                resize to the model's square input, ImageNet normalization.
            score_threshold: keep detections scoring above this (0.3 by default; evaluation uses the preset's 0.05).
            batch_size: images per forward pass.
            max_detections: per image; default the preset's (200 for SSD300).
        Returns:
            For a single image a dict, for a list a list of dicts (torchvision's convention): ``boxes`` float32
            ``[K, 4]`` xyxy in the original image's pixels, ``scores`` ``[K]`` descending, ``labels`` int64 ``[K]``
            in 1..num_classes-1, ``names`` list of K class names. Tensors are on the CPU.
        Raises:
            singleshot.data.errors.BadImageError: an unreadable file (named in the message).
            FileNotFoundError: a path, folder or pattern that names no image.
        """
        single = not isinstance(images, (list, tuple)) and not is_path_pattern(images)
        items = [images] if single else _expand(images if isinstance(images, (list, tuple)) else [images])
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):
            chunk = [to_uint8_rgb(im) for im in items[start : start + batch_size]]
            results += self.predict_tensors(chunk, score_threshold, max_detections)
        return results[0] if single else results

    def __repr__(self) -> str:
        return (f"Detector({self.spec.name}, {len(self.classes)} classes, input {self.spec.image_size}px, "
                f"device={self.device}, half={self.half})")


def _expand(items: Sequence[ImageInput]) -> list[ImageInput]:
    """Folders and glob patterns in ``items`` -> their image files; everything else as it is."""
    out: list[ImageInput] = []
    for item in items:
        if is_path_pattern(item):
            files, errors = expand_image_paths([item])
            if errors or not files:
                raise FileNotFoundError(errors[0] if errors else f"{item}: no image files in this folder")
            out += files
        else:
            out.append(item)
    return out
