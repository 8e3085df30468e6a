"""Drawing labelled detections (torchvision's ``draw_bounding_boxes``) and saving pictures (JPEG/PNG)."""

from __future__ import annotations

import colorsys
import functools
import os
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.io import encode_jpeg, encode_png
from torchvision.utils import draw_bounding_boxes

_FONT_CANDIDATES = ("DejaVuSans.ttf", "Arial.ttf", "LiberationSans-Regular.ttf")


@functools.lru_cache(maxsize=1)
def _font() -> str | None:
    """A scalable TrueType font Pillow can find on this system, or None (Pillow's default font, fixed size)."""
    from PIL import ImageFont

    for name in _FONT_CANDIDATES:
        try:
            ImageFont.truetype(name, 10)
            return name
        except OSError:
            continue
    return None


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per label (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def label_name(label: int, class_names: Sequence[str]) -> str:
    """The name of label ``label`` (1..K: ``class_names[label - 1]``); ``"class N"`` for a label outside the list.
    The one label -> name rule: pictures and :class:`~singleshot.inference.Detector`'s results."""
    return class_names[label - 1] if 1 <= label <= len(class_names) else f"class {label}"


def draw_detections(
    image_uint8_chw: Tensor,
    boxes_xyxy_pixels: Tensor,
    labels: Tensor | Sequence[int],
    scores: Tensor | Sequence[float] | None,
    class_names: Sequence[str],
) -> Tensor:
    """Draw boxes with ``"name 0.87"`` captions onto a copy of an image.

    Args:
        image_uint8_chw: ``uint8[3, H, W]`` RGB (``[1, H, W]`` grayscale is drawn as RGB).
        boxes_xyxy_pixels: ``float[K, 4]`` xyxy in that image's pixels (K may be 0).
        labels: ``K`` labels in 1..len(class_names) (0-based names: label ``k`` is ``class_names[k - 1]``).
        scores: ``K`` scores, or None to print names only.
        class_names: the dataset's K class names.
    Returns:
        ``uint8[3, H, W]`` with the drawing; line width and font size scale with the image.
    """
    image = image_uint8_chw.detach().cpu()
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 [3, H, W] image, got {image.dtype} {tuple(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    boxes = torch.as_tensor(boxes_xyxy_pixels, dtype=torch.float32).detach().cpu().reshape(-1, 4)
    label_list = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
    if len(label_list) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(label_list)} labels")
    if len(boxes) == 0:
        return image.clone()
    score_list = None if scores is None else [float(v) for v in torch.as_tensor(scores).reshape(-1).tolist()]
    captions = []
    for i, label in enumerate(label_list):
        name = label_name(label, class_names)
        captions.append(name if score_list is None else f"{name} {score_list[i]:.2f}")
    h, w = image.shape[-2:]
    side = min(h, w)
    font = _font()
    return draw_bounding_boxes(
        image.contiguous(),
        boxes,
        labels=captions,
        colors=[class_color(label) for label in label_list],
        width=max(1, round(side / 250)),
        font=font,
        font_size=max(8, round(side / 40)) if font else None,
        label_colors="white",
        fill_labels=True,
    )


def save_image(image_uint8_chw: Tensor, path: str | os.PathLike[str], quality: int = 90) -> None:
    """Write ``uint8[3, H, W]`` RGB as PNG (``.png``) or JPEG (anything else), creating parent folders."""
    path = os.fspath(path)
    image = image_uint8_chw.detach().cpu().contiguous()
    data = encode_png(image) if path.lower().endswith(".png") else encode_jpeg(image, quality=quality)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.numpy().tobytes())


def save_detections(
    path: str | os.PathLike[str],
    image_uint8_chw: Tensor,
    boxes_xyxy_pixels: Tensor,
    labels: Tensor | Sequence[int],
    scores: Tensor | Sequence[float] | None,
    class_names: Sequence[str],
) -> None:
    """:func:`draw_detections` written to ``path`` by :func:`save_image` (PNG for ``.png``, else JPEG)."""
    save_image(draw_detections(image_uint8_chw, boxes_xyxy_pixels, labels, scores, class_names), path)


def crop_boxes(image_uint8_chw: Tensor, boxes_xyxy_pixels: Tensor) -> list[Tensor]:
    """The pixels inside each box, as ``singleshot predict --save-crop`` writes them.

    Args:
        image_uint8_chw: ``uint8[3, H, W]``.
        boxes_xyxy_pixels: ``float[K, 4]`` xyxy in that image's pixels; edges are widened to whole pixels
            (``floor`` of x1/y1, ``ceil`` of x2/y2), clipped to the image, and a crop is at least 1x1.
    Returns:
        K views ``uint8[3, h_k, w_k]`` of the image (not copies).
    """
    h, w = image_uint8_chw.shape[-2:]
    boxes = torch.as_tensor(boxes_xyxy_pixels, dtype=torch.float32).detach().cpu().reshape(-1, 4)
    x0 = boxes[:, 0].floor().clamp(0, w - 1).long().tolist()
    y0 = boxes[:, 1].floor().clamp(0, h - 1).long().tolist()
    x1 = boxes[:, 2].ceil().clamp(1, w).long().tolist()
    y1 = boxes[:, 3].ceil().clamp(1, h).long().tolist()
    return [image_uint8_chw[:, a : max(b, a + 1), c : max(d, c + 1)] for c, a, d, b in zip(x0, y0, x1, y1)]


def save_prediction_pictures(
    image_uint8_chw: Tensor,
    boxes_xyxy_pixels: Tensor,
    labels: Tensor | Sequence[int],
    scores: Tensor | Sequence[float] | None,
    class_names: Sequence[str],
    *,
    picture: str | os.PathLike[str] | None = None,
    crops_dir: str | os.PathLike[str] | None = None,
    stem: str = "image",
) -> list[str]:
    """The pictures ``singleshot predict`` writes for one image: the drawn detections at ``picture`` (see
    :func:`save_detections`) and, with ``crops_dir``, detection ``k``'s pixels (:func:`crop_boxes`) at
    ``crops_dir/<class name>/<stem>_<k>.jpg`` (k counts the image's detections from 0, highest score first).

    Args: as :func:`draw_detections`; ``boxes_xyxy_pixels`` ``float[K, 4]`` xyxy in the image's pixels.
    Returns:
        The crop files written, relative to ``crops_dir`` (``/``-separated).
    """
    if picture is not None:
        save_detections(picture, image_uint8_chw, boxes_xyxy_pixels, labels, scores, class_names)
    if crops_dir is None:
        return []
    written = []
    label_list = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
    for k, (label, crop) in enumerate(zip(label_list, crop_boxes(image_uint8_chw, boxes_xyxy_pixels))):
        folder = label_name(label, class_names).replace("/", "_").replace("\\", "_").strip(". ") or f"class {label}"
        written.append(f"{folder}/{stem}_{k}.jpg")
        save_image(crop.contiguous(), os.path.join(crops_dir, written[-1]))
    return written
