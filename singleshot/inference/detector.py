"""``singleshot.Detector``: a trained detector behind one call, for scripts and services.

    detector = Detector.from_checkpoint("runs/exp/best.pt")           # CUDA if available, else CPU
    result = detector.predict("street.jpg", score_threshold=0.3)
    result["boxes"]   # Tensor[K, 4] xyxy, pixels of street.jpg; also "scores", "labels" (1..K), "names"

Any file :func:`singleshot.load_model` opens works: checkpoints (singleshot, MLPerf, NVIDIA), ``.safetensors``, and
raw-output ``.onnx`` (INT8 included), ``.torchscript.pt`` and ``.pt2`` exports (these run on the CPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from singleshot.accelerator import default_device
from singleshot.data.errors import BadImageError
from singleshot.inference.core import InferenceCore
from singleshot.inference.draw import label_name
from singleshot.inference.images import ImageInput, expand_image_paths, is_path_pattern, to_uint8_rgb
from singleshot.inference.loading import load_model


class Detector:
    """A model plus everything needed to go from images to labelled boxes.

    Attributes:
        model: the underlying module in eval mode; ``model(x)`` with ``x: float[B, 3, S, S]`` normalized gives the
            raw ``(bbox_regression [B, A, 4], cls_logits [B, A, C])``.
        core: its :class:`~singleshot.inference.core.InferenceCore` (preprocessing, precision, post-processing).
        spec: the model's :class:`~singleshot.models.DetectorSpec` (``image_size`` S, anchors, normalization).
        classes: the K class names; label ``k`` is ``classes[k - 1]``.
        label_to_category_id: label -> dataset category id (for COCO results files).
        device: where the model runs.
    """

    def __init__(
        self,
        model: nn.Module,
        classes: Sequence[str],
        *,
        label_to_category_id: dict[int, int] | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.model = InferenceCore.prepare(model, self.device)
        self.core = InferenceCore(self.model, device=self.device, precision=precision)
        self.spec = self.core.spec
        self.classes = list(classes)
        self.label_to_category_id = dict(label_to_category_id or {i: i for i in range(1, len(self.classes) + 1)})

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], device: str | torch.device | None = None, precision: str = "auto"
    ) -> Detector:
        """Open any model file (see the module docstring) with :func:`singleshot.load_model`; ``device`` defaults to
        CUDA when available (exported graphs: the CPU)."""
        loaded = load_model(path, device=device)
        return cls(loaded.module, loaded.classes, label_to_category_id=loaded.label_to_category_id,
                   device=loaded.device, precision=precision)

    def predict_tensors(
        self, images: Sequence[Tensor], score_threshold: float = 0.3, max_detections: int | None = None
    ) -> list[dict[str, Any]]:
        """One batch of ``uint8[3, H, W]`` RGB images -> one result dict per image (see :meth:`predict`)."""
        dets = self.core.detect(images, score_threshold=float(score_threshold), max_detections=max_detections)
        return [self._result(d) for d in dets]

    def _result(self, det: dict[str, Tensor]) -> dict[str, Any]:
        labels = det["labels"].cpu()
        return {
            "boxes": det["boxes"].cpu(),
            "scores": det["scores"].cpu(),
            "labels": labels,
            "names": [label_name(i, self.classes) for i in labels.tolist()],
        }

    def stream(
        self,
        items: Iterable[ImageInput],
        score_threshold: float = 0.3,
        batch_size: int = 8,
        max_detections: int | None = None,
        on_error: Callable[[ImageInput, BadImageError], None] | None = None,
    ) -> Iterator[tuple[ImageInput, Tensor, dict[str, Any]]]:
        """Detections for many images, read and run ``batch_size`` at a time: yields ``(item, image uint8[3, H, W],
        result)`` in order. An unreadable file raises, or with ``on_error`` is passed to it and skipped."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pending: list[tuple[ImageInput, Tensor]] = []
        for item in [*items, None]:
            if item is not None:
                try:
                    pending.append((item, to_uint8_rgb(item)))
                except BadImageError as exc:
                    if on_error is None:
                        raise
                    on_error(item, exc)
            if pending and (item is None or len(pending) == batch_size):
                images = [image for _, image in pending]
                for (it, image), result in zip(pending, self.predict_tensors(images, score_threshold, max_detections)):
                    yield it, image, result
                pending = []

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
        results = [r for _, _, r in self.stream(items, score_threshold, batch_size, max_detections)]
        return results[0] if single else results

    def __repr__(self) -> str:
        return (f"Detector({self.spec.name}, {len(self.classes)} classes, input {self.spec.image_size}px, "
                f"device={self.device}, precision={self.core.precision})")


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
