"""The dataset base class shared by the COCO, VOC and YOLO readers, and image decoding.

Every reader parses its annotation files once, into flat NumPy arrays (no per-image Python objects, so forked
loader workers do not copy the index page by page through reference counting), and yields the sample contract
of docs/ARCHITECTURE.md::

    image:  Tensor[3, H, W] uint8 RGB
    target: {"boxes": Tensor[N, 4] float32 xyxy absolute pixels, "labels": Tensor[N] int64 in 1..K,
             "image_id": int, "orig_size": (H, W)}
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import to_dtype

from singleshot.data.errors import BadImageError, Problem

BAD_IMAGE_POLICIES = ("raise", "skip")


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an image file. Raises :class:`BadImageError` naming it when it is missing, unreadable or
    empty."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise BadImageError(f"cannot read image {os.fspath(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    if not raw:
        raise BadImageError(f"cannot decode image {os.fspath(path)}: file is empty")
    return raw


def jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """``(H, W)`` of a JPEG with 1 or 3 components (what ``torchvision.io.decode_jpeg`` decodes on a GPU), from its
    header (Pillow reads only that); None for other formats, CMYK JPEGs and files Pillow cannot open."""
    from PIL import Image, UnidentifiedImageError

    if raw[:2] != b"\xff\xd8":
        return None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return (im.height, im.width) if im.format == "JPEG" and im.mode in ("RGB", "L") else None
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def read_image(path: str | os.PathLike[str]) -> Tensor:
    """Decode an image file to ``Tensor[3, H, W] uint8`` RGB.

    JPEG (grayscale and CMYK included), PNG, WebP and GIF go through ``torchvision.io.decode_image`` (libjpeg-turbo);
    other formats (BMP, TIFF, ...) fall back to Pillow. Grayscale, palette, alpha and CMYK images are converted to
    RGB; 16-bit images are scaled to 8 bits (``value >> 8``, not clipped); 32-bit integer and float images are
    refused. Pixels are used as stored: an EXIF orientation tag is not applied, as the COCO and VOC annotation
    tools and their evaluation code did not (``singleshot data check`` warns about such images). The result may be
    a channels-last strided view; call ``.contiguous()`` if you need NCHW memory.

    Raises:
        BadImageError: the file is missing, empty, truncated, corrupt or in an unknown format; the message names it.
    """
    return decode_file(read_file(path), path)


def decode_file(raw: bytes, path: str | os.PathLike[str]) -> Tensor:
    """:func:`read_image` on bytes already read from ``path`` (named in errors, and read again by the Pillow
    fallback)."""
    try:
        image = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.RGB)
        # 16-bit PNGs decode to uint16; normalizing those as 8-bit values would give a near-white image.
        return image if image.dtype == torch.uint8 else to_dtype(image, torch.uint8, scale=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        reason = first.split(", ")[-1] if ".cpp:" in first else first
        if "Unsupported image file" not in first:
            raise BadImageError(f"cannot decode image {os.fspath(path)}: {reason}") from None
    return _read_with_pil(path)


def _read_with_pil(path: str | os.PathLike[str]) -> Tensor:
    """Pillow fallback for the formats torchvision cannot decode; same contract as :func:`read_image`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):  # Pillow's convert("RGB") would clip 16-bit values to 255
                gray = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
                rgb = np.repeat(gray[..., None], 3, axis=2)
            elif im.mode in ("I", "F"):
                kind = "integer" if im.mode == "I" else "float"
                raise BadImageError(
                    f"cannot decode image {os.fspath(path)}: mode {im.mode!r} (32-bit {kind}) pixels have no defined "
                    "8-bit range; convert the image to 8 or 16 bits per channel"
                )
            else:
                rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"cannot decode image {os.fspath(path)}: {e}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def sanitize_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to the image and find the degenerate ones.

    Args:
        boxes: ``float[N, 4]`` xyxy in pixels (or normalized, with ``width = height = 1``).
        width, height: image size in the same units.

    Returns:
        ``(clipped float32[N, 4] xyxy, keep bool[N], changed bool[N])``: ``keep`` is False for boxes with zero or
        negative width or height after clipping (including boxes wholly outside the image or with NaNs);
        ``changed`` marks kept boxes that clipping moved.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0.0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0.0, height, out=clipped[:, 1::2])
    with np.errstate(invalid="ignore"):
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        changed = keep & np.any(clipped != boxes, axis=1)
    return clipped, keep, changed


class DetectionDataset(Dataset):
    """Map-style detection dataset over a parsed index; subclasses only parse their annotation format.

    Indexing returns the raw sample ``(image, target)`` (see the module docstring); augmentation and the per-sample
    seed are applied by :class:`singleshot.data.loader.TransformedDataset`.

    Attributes:
        root: the dataset folder or annotation file it was read from.
        classes: the K class names; label ``k`` (1..K) is ``classes[k - 1]``, 0 is background.
        label_to_category_id: ``{label: original category id}`` for writing COCO-format results.
        on_bad_image: "raise" (stop the run at the first unreadable image, naming it) or "skip" (the loader drops
            the sample and counts it). Direct indexing always raises :class:`BadImageError`.
        problems: everything repaired or rejected while parsing, as :class:`Problem` records.
        stats: counters (``images``, ``boxes``, ``boxes_clipped``, ``boxes_dropped``, ``images_skipped_empty``, ...).
    """

    format: str = "?"

    def __init__(
        self,
        *,
        root: str,
        paths: Sequence[str],
        image_ids: Sequence[int],
        sizes: np.ndarray,
        boxes: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        classes: Sequence[str],
        label_to_category_id: dict[int, int],
        normalized_boxes: bool = False,
        on_bad_image: str = "raise",
        problems: Sequence[Problem] = (),
        stats: Counter[str] | None = None,
    ) -> None:
        """Build from per-image records.

        Args:
            paths: image file per record.
            image_ids: integer id per record (the COCO ``image_id``; positional for other formats).
            sizes: ``int64[N, 2]`` (H, W) per record as the annotations state it, -1 where unknown.
            boxes: per record ``float32[n_i, 4]`` xyxy, in pixels, or normalized to [0, 1] if
                ``normalized_boxes`` (scaled by the decoded size at load time); already clipped and filtered.
            labels: per record ``int64[n_i]`` in 1..K.
        """
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        self.root = root
        self.classes = list(classes)
        self.label_to_category_id = dict(label_to_category_id)
        self.on_bad_image = on_bad_image
        self.normalized_boxes = normalized_boxes
        self.problems = list(problems)
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._paths = np.array(list(paths), dtype=np.str_)
        self._image_ids = np.asarray(image_ids, dtype=np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        counts = np.array([len(b) for b in boxes], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes] or [np.zeros((0, 4))])
        self._boxes = self._boxes.astype(np.float32, copy=False)
        self._labels = np.concatenate([np.asarray(lb, np.int64) for lb in labels] or [np.zeros(0)]).astype(np.int64)
        if not len(self._paths) == len(self._image_ids) == len(self._sizes) == len(counts):
            raise ValueError("paths, image_ids, sizes and boxes must have one entry per image")
        self.stats["images"] = len(self._paths)
        self.stats["boxes"] = int(counts.sum())

    @property
    def num_classes(self) -> int:
        """K + 1: the dataset classes plus background."""
        return len(self.classes) + 1

    def __len__(self) -> int:
        return len(self._paths)

    def image_path(self, index: int) -> str:
        """The image file of record ``index``."""
        return str(self._paths[index])

    def image_id(self, index: int) -> int:
        """The integer image id of record ``index``."""
        return int(self._image_ids[index])

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` in pixels as the annotations state it, ``(-1, -1)`` where unknown (e.g. YOLO)."""
        h, w = self._sizes[index]
        return int(h), int(w)

    def head(self, n: int) -> DetectionDataset:
        """The first ``n`` records as a dataset of the same kind (shares the parsed annotations)."""
        if n >= len(self):
            return self
        records = [self.annotation(i) for i in range(n)]
        part = DetectionDataset(
            root=self.root,
            paths=self._paths[:n],
            image_ids=self._image_ids[:n],
            sizes=self._sizes[:n],
            boxes=[b for b, _ in records],
            labels=[lb for _, lb in records],
            classes=self.classes,
            label_to_category_id=self.label_to_category_id,
            normalized_boxes=self.normalized_boxes,
            on_bad_image=self.on_bad_image,
        )
        part.format = self.format
        return part

    def annotation(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes float32[n, 4], labels int64[n])`` of record ``index`` as parsed, without reading the image.

        Boxes are xyxy in pixels, or normalized to [0, 1] when ``self.normalized_boxes``.
        """
        lo, hi = self._offsets[index], self._offsets[index + 1]
        return self._boxes[lo:hi], self._labels[lo:hi]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        """Read record ``index``: ``(image uint8[3, H, W], target)`` with boxes xyxy in absolute pixels.

        Boxes are clipped to the decoded image (which can differ from the size the annotations state) and
        degenerate ones dropped.
        """
        image = read_image(self._paths[index])
        return image, self.target(index, int(image.shape[-2]), int(image.shape[-1]))

    def read_encoded(self, index: int) -> tuple[Tensor | None, Tensor | None, tuple[int, int]]:
        """Record ``index``'s image for decoding elsewhere: ``(jpeg uint8[n], None, (H, W))`` for a JPEG that
        ``torchvision.io.decode_jpeg`` decodes on a GPU (size from its header), else ``(None, image uint8[3, H, W],
        (H, W))`` decoded here as :meth:`__getitem__` does. Raises :class:`BadImageError` as :func:`read_image`."""
        path = self._paths[index]
        raw = read_file(path)
        size = jpeg_size(raw)
        if size is not None:
            return torch.frombuffer(bytearray(raw), dtype=torch.uint8), None, size
        image = decode_file(raw, path)
        return None, image, (int(image.shape[-2]), int(image.shape[-1]))

    def target(self, index: int, h: int, w: int) -> dict[str, Any]:
        """Record ``index``'s target for its image decoded at ``h x w`` pixels (see :meth:`__getitem__`)."""
        boxes, labels = self.annotation(index)
        if self.normalized_boxes:
            boxes = boxes * np.array([w, h, w, h], dtype=np.float32)
        elif (h, w) != tuple(self._sizes[index]):
            boxes, keep, _ = sanitize_boxes(boxes, w, h)
            boxes, labels = boxes[keep], labels[keep]
        return {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),
            "image_id": int(self._image_ids[index]),
            "orig_size": (h, w),
        }

    def repairs_summary(self, first: int = 2) -> str | None:
        """One line on what parsing dropped or changed (None if nothing): counts by kind, then the first problems.

        Crowd and difficult boxes and images without boxes are left out by convention and not listed here.
        """
        kinds = (("boxes_unknown_category", "boxes with an unknown category dropped"),
                 ("boxes_unknown_image", "boxes of an unknown image dropped"),
                 ("boxes_dropped", "boxes with no area inside the image dropped"),
                 ("boxes_clipped", "boxes clipped to the image"),
                 ("records_invalid", "malformed records skipped"))  # fmt: skip
        counts = [f"{self.stats[k]} {text}" for k, text in kinds if self.stats.get(k)]
        errors = sum(p.severity == "error" for p in self.problems)
        if errors and not self.stats.get("records_invalid"):
            counts.append(f"{errors} malformed records skipped")
        if not counts:
            return None
        shown = "; ".join(str(p) for p in self.problems[:first])
        return (f"{', '.join(counts)}" + (f" (first: {shown})" if shown else "")
                + f"; `singleshot data check {self.root}` lists every one")

    def summary(self) -> str:
        """One line: format, images, boxes, classes and repairs."""
        s = self.stats
        text = f"{self.format} dataset {self.root}: {s['images']} images, {s['boxes']} boxes"
        text += f", {len(self.classes)} classes"
        extras = [f"{k}={v}" for k, v in sorted(s.items()) if k not in ("images", "boxes") and v]
        return text + (f" ({', '.join(extras)})" if extras else "")
