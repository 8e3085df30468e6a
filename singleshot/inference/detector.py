"""``singleshot.Detector``: a trained detector behind one call, for scripts and services.

    detector = Detector.from_checkpoint("runs/exp/best.pt")           # CUDA if available, else CPU
    result = detector.predict("street.jpg", score_threshold=0.3)
    result["boxes"]   # Tensor[K, 4] xyxy, pixels of street.jpg; also "scores", "labels" (1..K), "names", and
                      # "class_ids": the dataset's own ids (0-based for a YOLO data.yaml, COCO category ids for COCO)

Any file :func:`singleshot.load_model` opens works: checkpoints (singleshot, MLPerf, NVIDIA), ``.safetensors``, and
raw-output ``.onnx`` (INT8 included), ``.torchscript.pt`` and ``.pt2`` exports (these run on the CPU).

Images are what a user has: a file; a folder (its image and video files, sorted, not recursive, as Ultralytics); a glob
pattern (``*``, ``?``, ``[``, ``**`` recursive) (:func:`expand_image_paths`); a video (``.mp4``, ``.avi``, ``.mov``,
``.mkv``, ``.webm``, ...: every frame, read with PyAV, the ``video`` extra) or an animated GIF / WebP / PNG or a
multi-page TIFF (every frame, Pillow), each frame a :class:`Frame` decoded when its batch needs it; a PIL image, a
NumPy ``uint8`` array ``[H, W]``, ``[H, W, 1|3|4]``, or a tensor ``uint8 [3|1, H, W]`` / ``[H, W]`` (float tensors in
[0, 1] too, the torchvision convention); grayscale becomes RGB, an alpha channel is dropped (:func:`to_uint8_rgb`).
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from singleshot._extras import MissingExtraError, require
from singleshot.accelerator import default_device
from singleshot.data.base import read_image
from singleshot.data.errors import BadImageError
from singleshot.inference.core import InferenceCore
from singleshot.inference.draw import label_name
from singleshot.inference.loading import load_model

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | Tensor
ErrorHandler = Callable[[Any, Exception], None]


class Frame(NamedTuple):
    """One frame of a video or a multi-frame image file: its ``path`` and ``index`` (0 is the first frame)."""

    path: Path
    index: int


class Detector:
    """A model plus everything needed to go from images to labelled boxes.

    Attributes:
        model: the underlying module in eval mode; ``model(x)`` with ``x: float[B, 3, S, S]`` normalized gives the
            raw ``(bbox_regression [B, A, 4], cls_logits [B, A, C])``.
        core: its :class:`~singleshot.inference.core.InferenceCore` (preprocessing, precision, post-processing).
        spec: the model's :class:`~singleshot.models.DetectorSpec` (``image_size`` S, anchors, normalization).
        classes: the K class names; label ``k`` is ``classes[k - 1]``.
        label_to_category_id: label -> the dataset's own class id (``class_ids`` of the results; the category ids
            of COCO results files): what the dataset reader stored in the checkpoint (0-based for a YOLO data.yaml,
            the category ids of a COCO file, 1-based for VOC).
        device: where the model runs.
        score_threshold: detections scoring above this are kept unless a call says otherwise (0.3 by default;
            evaluation uses the preset's 0.05).
    """

    def __init__(
        self,
        model: nn.Module,
        classes: Sequence[str],
        *,
        label_to_category_id: dict[int, int] | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        score_threshold: float = 0.3,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.model = InferenceCore.prepare(model, self.device)
        self.score_threshold = float(score_threshold)
        self.core = InferenceCore(self.model, device=self.device, precision=precision,
                                  score_threshold=self.score_threshold)  # fmt: skip
        self.spec = self.core.spec
        self.classes = list(classes)
        self.label_to_category_id = dict(label_to_category_id or {i: i for i in range(1, len(self.classes) + 1)})
        self._names = [label_name(k, self.classes) for k in range(len(self.classes) + 1)]  # label -> name, once
        # label -> class id, once; a label the checkpoint does not map keeps its own number
        self._class_ids = torch.tensor([self.label_to_category_id.get(k, k) for k in range(len(self.classes) + 1)])

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], device: str | torch.device | None = None, precision: str = "auto",
        score_threshold: float = 0.3,
    ) -> Detector:  # fmt: skip
        """Open any model file (see the module docstring) with :func:`singleshot.load_model`; ``device`` defaults to
        CUDA when available (exported graphs: the CPU)."""
        loaded = load_model(path, device=device)
        return cls(loaded.module, loaded.classes, label_to_category_id=loaded.label_to_category_id,
                   device=loaded.device, precision=precision, score_threshold=score_threshold)

    def predict_tensors(
        self, images: Sequence[Tensor], score_threshold: float | None = None, max_detections: int | None = None
    ) -> list[dict[str, Any]]:
        """One batch of ``uint8[3, H, W]`` RGB images -> one result dict per image (see :meth:`predict`)."""
        dets = self.core.detect(images, score_threshold=score_threshold, max_detections=max_detections)
        return [self._result(d) for d in dets]

    def _result(self, det: dict[str, Tensor]) -> dict[str, Any]:
        labels = det["labels"].cpu()
        return {
            "boxes": det["boxes"].cpu(),
            "scores": det["scores"].cpu(),
            "labels": labels,
            "names": [self._names[i] for i in labels.tolist()],
            "class_ids": self._class_ids[labels],
        }

    def stream(
        self,
        items: Iterable[ImageInput],
        score_threshold: float | None = None,
        batch_size: int = 8,
        max_detections: int | None = None,
        on_error: ErrorHandler | None = None,
    ) -> Iterator[tuple[ImageInput, Tensor, dict[str, Any]]]:
        """Detections for many images, read and run ``batch_size`` at a time: yields ``(item, image uint8[3, H, W],
        result)`` in order. A folder or glob pattern in ``items`` stands for its files; a video or multi-frame image
        file for its frames, each yielded as a :class:`Frame` (only ``batch_size`` frames are held at a time). An
        unreadable file (:class:`~singleshot.data.errors.BadImageError`, also part-way through a video), a video
        without PyAV (:class:`~singleshot._extras.MissingExtraError`) or a name that matches nothing
        (``FileNotFoundError``) raises, or with ``on_error`` is passed to it and skipped."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pending: list[tuple[ImageInput, Tensor]] = []
        for item_image in itertools.chain(_read_all(items, on_error), [None]):  # None: run what is pending
            if item_image is not None:
                pending.append(item_image)
            if pending and (item_image is None or len(pending) == batch_size):
                images = [image for _, image in pending]
                for (it, image), result in zip(pending, self.predict_tensors(images, score_threshold, max_detections)):
                    yield it, image, result
                pending = []

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        score_threshold: float | None = None,
        batch_size: int = 8,
        max_detections: int | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Detect objects in one image or a list of images.

        Args:
            images: a path, PIL image, NumPy ``uint8`` HWC array or ``uint8`` CHW tensor, or a list of them (mixed
                types and sizes are fine); a folder or a glob pattern (``"photos/*.jpg"``, ``"data/**/*.png"``)
                stands for its image and video files, sorted, and gives a list, as does a video or a multi-frame
                image (one result per frame). Preprocessing is the validation transform: resize to the model's
                square input, ImageNet normalization.
            score_threshold: keep detections scoring above this (default: the detector's, 0.3 unless set).
            batch_size: images per forward pass.
            max_detections: per image; default the preset's (200 for SSD300).
        Returns:
            For a single image a dict, for a list a list of dicts (torchvision's convention): ``boxes`` float32
            ``[K, 4]`` xyxy in the original image's pixels, ``scores`` ``[K]`` descending, ``labels`` int64 ``[K]``
            in 1..num_classes-1, ``names`` list of K class names, ``class_ids`` int64 ``[K]`` the dataset's ids
            (:attr:`label_to_category_id`). Tensors are on the CPU.
        Raises:
            singleshot.data.errors.BadImageError: an unreadable file (named in the message).
            singleshot._extras.MissingExtraError: a video, and PyAV is not installed.
            FileNotFoundError: a path, folder or pattern that names no image.
        """
        single = not isinstance(images, (list, tuple)) and not is_path_pattern(images)
        items = [images] if single else list(images) if isinstance(images, (list, tuple)) else [images]
        out = list(self.stream(items, score_threshold, batch_size, max_detections))
        if single and out and not isinstance(out[0][0], Frame):
            return out[0][2]
        return [r for _, _, r in out]

    def __repr__(self) -> str:
        return (f"Detector({self.spec.name}, {len(self.classes)} classes, input {self.spec.image_size}px, "
                f"device={self.device}, precision={self.core.precision}, score_threshold={self.score_threshold})")


def _expand(items: Iterable[ImageInput], on_error: ErrorHandler | None = None) -> Iterator[ImageInput]:
    """Folders and glob patterns in ``items`` -> their image and video files; a path that does not exist -> an
    error (raised, or given to ``on_error`` and left out); everything else as it is."""
    for item in items:
        if not isinstance(item, (str, os.PathLike)) or Path(item).is_file():
            yield item
            continue
        files, errors = expand_image_paths([item], IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        if errors or not files:
            error = FileNotFoundError(errors[0] if errors else f"{os.fspath(item)}: no image files in this folder")
            if on_error is None:
                raise error
            on_error(item, error)
        yield from files


def _read_all(items: Iterable[ImageInput], on_error: ErrorHandler | None) -> Iterator[tuple[ImageInput, Tensor]]:
    """``(item, uint8[3, H, W])`` for every image of ``items``: one per still image, one per frame (item a
    :class:`Frame`) of a video or multi-frame file, read lazily. A file that fails (part-way through a video too:
    its frames so far are kept) raises, or is given to ``on_error`` and the next one is read."""
    for item in _expand(items, on_error):
        try:
            if isinstance(item, (str, os.PathLike)):
                yield from _file_images(item)
            else:
                yield item, to_uint8_rgb(item)
        except (BadImageError, MissingExtraError) as exc:
            if on_error is None:
                raise
            on_error(item, exc)


def _file_images(item: str | os.PathLike[str]) -> Iterator[tuple[ImageInput, Tensor]]:
    """The images of one file: ``(item, image)`` for a still image, ``(Frame(path, i), frame i)`` for every frame
    of a video or a multi-frame image."""
    path = Path(item)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        yield from _video_frames(path)
        return
    if suffix in MULTI_FRAME_SUFFIXES and _frame_count(path) > 1:
        yield from _pil_frames(path)
        return
    image = read_image(path)
    if image.dim() == 4:  # an animated GIF under another suffix: torchvision decoded all its frames [N, 3, H, W]
        for i, frame in enumerate(image):
            yield Frame(path, i), frame
    else:
        yield item, image


def _frame_count(path: Path) -> int:
    """Frames in an image file (Pillow reads the header; GIFs are scanned); 1 when Pillow cannot tell (the reader
    that follows names the problem)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except (OSError, ValueError):
        return 1


def _pil_frames(path: Path) -> Iterator[tuple[Frame, Tensor]]:
    """Every frame of an animated GIF / WebP / PNG or multi-page TIFF as RGB (Pillow composes GIF frames)."""
    from PIL import Image, ImageSequence

    index = -1
    try:
        with Image.open(path) as im:
            for index, frame in enumerate(ImageSequence.Iterator(im)):
                yield Frame(path, index), _from_pil(frame)
    except (OSError, ValueError, EOFError) as exc:
        where = "" if index < 0 else f" (after frame {index})"
        raise BadImageError(f"cannot decode image {path}{where}: {exc}") from None


def _video_frames(path: Path) -> Iterator[tuple[Frame, Tensor]]:
    """Every frame of the first video stream of ``path`` as RGB, decoded one at a time by PyAV (FFmpeg)."""
    av = require("av", "video", f"reading the video {path}")
    index = -1
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise BadImageError(f"cannot decode video {path}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads
            for index, frame in enumerate(container.decode(stream)):
                rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                yield Frame(path, index), torch.from_numpy(rgb).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    except av.error.FFmpegError as exc:
        where = "cannot open video" if index < 0 else f"cannot decode video (after frame {index})"
        raise BadImageError(f"{where} {path}: {exc}") from None


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
MULTI_FRAME_SUFFIXES = {".gif", ".webp", ".png", ".tif", ".tiff"}  # checked for more than one frame
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".asf", ".ts", ".flv"}
_GLOB_CHARS = set("*?[")


def is_image_file(path: Path, suffixes: set[str] = IMAGE_SUFFIXES) -> bool:
    return path.is_file() and path.suffix.lower() in suffixes


def expand_image_paths(
    items: Sequence[str | os.PathLike[str]], suffixes: set[str] = IMAGE_SUFFIXES
) -> tuple[list[Path], list[str]]:
    """Files as given; folders -> their files with one of ``suffixes`` (sorted, not recursive, as Ultralytics);
    glob patterns (``*``, ``?``, ``[``, ``**`` recursive) -> the matching files with one of ``suffixes`` (sorted).

    Returns:
        ``(files, errors)``: errors name each item that is neither an existing path nor a pattern matching a file.
    """
    files: list[Path] = []
    errors: list[str] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if is_image_file(p, suffixes))
        elif path.exists():
            files.append(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if is_image_file(Path(p), suffixes))
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
