"""The built-in synthetic dataset: coloured shapes on textured backgrounds, in COCO format, deterministic by seed.

Layout written by :func:`generate` (loadable by ``pycocotools.coco.COCO`` unchanged)::

    DIR/train/000000.jpg ...            DIR/annotations/instances_train.json
    DIR/val/000000.jpg ...              DIR/annotations/instances_val.json

Six classes, each a shape drawn in its own hue family (so a shape is recognisable by outline and colour):
circle (red), triangle (yellow), square (green), hexagon (cyan), star (blue), cross (magenta). Objects (1-6 per
image by default) are mostly medium or large, with a small minority under 32 px; later objects may overlap earlier
ones, but every object keeps at least ``min_visible`` of its area visible. Distractors (low-saturation lines and
blobs) and a smooth noisy background sit underneath.

**Boxes are the exact visible extent**: the tight bounding box of the object's pixels left uncovered by later
objects and the image border, in pixel-edge coordinates (a box ``[x, y, w, h]`` covers pixel columns
``x .. x + w - 1``); ``area`` is the visible pixel count. This is COCO's own convention (boxes of the visible part).

:func:`default_dataset_path` returns the cached default set (``$SINGLESHOT_CACHE`` or ``~/.cache/singleshot``,
subfolder ``synth-v1``), generating it on first use; concurrent first uses are safe (each writes a private
temporary folder and renames it into place; the loser discards its copy).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "triangle", "square", "hexagon", "star", "cross")
_HUES = (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)  # degrees, one family per class
SYNTH_VERSION = "synth-v1"
DEFAULTS: dict[str, Any] = {"num_train": 1500, "num_val": 200, "seed": 0, "image_size": (320, 240)}


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """h in degrees, s and v in [0, 1] -> 8-bit RGB."""
    c = v * s
    x = c * (1 - abs((h / 60.0) % 2 - 1))
    m = v - c
    sector = int(h // 60) % 6
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return round((r + m) * 255), round((g + m) * 255), round((b + m) * 255)


def _shape_polygon(cls: int, cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """Vertices in pixels of shape ``cls`` (not the circle) with half-extents w/2, h/2, rotated by ``angle``."""
    if cls == 1:  # triangle
        unit = [(math.cos(a), math.sin(a)) for a in np.linspace(-math.pi / 2, 1.5 * math.pi, 4)[:3]]
    elif cls == 2:  # square
        unit = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif cls == 3:  # hexagon
        unit = [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif cls == 4:  # star: 5 points, inner radius 0.45
        unit = [
            ((1.0 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
             (1.0 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5))
            for k in range(10)
        ]
    else:  # cross (plus sign), arm half-width 0.33
        a = 0.33
        unit = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a),
                (-a, -a)]
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + ca * x * w / 2 - sa * y * h / 2, cy + sa * x * w / 2 + ca * y * h / 2) for x, y in unit]


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth low-saturation colour field plus pixel noise and distractor lines and blobs."""
    gw, gh = int(rng.integers(3, 9)), int(rng.integers(3, 7))
    base = rng.uniform(50, 200) + rng.normal(0, 20, size=3)  # greyish, so shape colours stand out
    grid = np.clip(base + rng.normal(0, 35, size=(gh, gw, 1)) + rng.normal(0, 12, size=(gh, gw, 3)), 0, 255)
    field = Image.fromarray(grid.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(field).astype(np.int16) + rng.normal(0, 7, size=(height, width, 1)).astype(np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 9))):
        color = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.2, 0.9))
        if rng.random() < 0.6:
            pts = [tuple(p) for p in rng.uniform(0, 1, size=(int(rng.integers(2, 5)), 2)) * (width, height)]
            draw.line(pts, fill=color, width=int(rng.integers(1, 4)))
        else:  # irregular blob: a jittered many-sided polygon, unlike any class shape
            r = rng.uniform(4, 0.12 * min(width, height))
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            ang = np.sort(rng.uniform(0, 2 * math.pi, size=int(rng.integers(7, 13))))
            rad = r * rng.uniform(0.4, 1.0, size=len(ang))
            draw.polygon([(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(ang, rad)], fill=color)
    return img


def _render_image(
    rng: np.random.Generator, width: int, height: int, max_objects: int, small_fraction: float, min_visible: float
) -> tuple[Image.Image, list[tuple[int, list[float], int]]]:
    """One image and its objects as ``(class index 0..K-1, [x, y, w, h] pixels, visible area)``."""
    img = _background(rng, width, height)
    owner = np.full((height, width), -1, dtype=np.int16)  # index of the top-most object at each pixel
    full_area: list[int] = []
    classes: list[int] = []
    target = int(rng.integers(1, max_objects + 1))
    short = min(width, height)
    for _ in range(target * 4):  # placement attempts
        if len(classes) == target:
            break
        cls = int(rng.integers(len(CLASSES)))
        if rng.random() < small_fraction:
            size = rng.uniform(12, 32)
        else:
            size = math.exp(rng.uniform(math.log(32), math.log(0.62 * short)))
        aspect = math.exp(rng.uniform(-0.4, 0.4)) if cls != 4 else 1.0
        w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
        cx, cy = rng.uniform(0.08, 0.92) * width, rng.uniform(0.08, 0.92) * height
        angle = rng.uniform(-0.25, 0.25) if cls in (2, 5) else rng.uniform(0, 2 * math.pi)
        mask_img = Image.new("L", (width, height), 0)
        mdraw = ImageDraw.Draw(mask_img)
        if cls == 0:
            mdraw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=255)
        else:
            mdraw.polygon(_shape_polygon(cls, cx, cy, w, h, angle), fill=255)
        mask = np.asarray(mask_img) > 0
        area = int(mask.sum())
        if area < 60:
            continue
        trial = owner.copy()
        trial[mask] = len(classes)
        counts = np.bincount(trial[trial >= 0].ravel(), minlength=len(classes) + 1)
        if any(counts[j] < min_visible * full_area[j] for j in range(len(classes))):
            continue  # would hide too much of an earlier object
        owner = trial
        full_area.append(area)
        classes.append(cls)
        fill = _hsv_to_rgb((_HUES[cls] + rng.uniform(-15, 15)) % 360, rng.uniform(0.6, 0.95), rng.uniform(0.6, 0.95))
        edge = tuple(int(c * 0.55) for c in fill)
        solid = Image.new("RGB", (width, height), fill)
        img.paste(solid, (0, 0), mask_img)
        # darker rim: the outer ring of the mask, inside the shape's own pixels so the extent is unchanged
        ring = mask & ~_erode(mask)
        arr = np.asarray(img).copy()
        arr[ring] = edge
        img = Image.fromarray(arr)
    objects = []
    for k, cls in enumerate(classes):
        ys, xs = np.nonzero(owner == k)
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        objects.append((cls, [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], len(xs)))
    return img, objects


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion (pixels outside the image count as inside, so the border is not a rim)."""
    p = np.pad(mask, 1, mode="edge")
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _parse_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    w, h = (int(v) for v in image_size)
    return w, h


def generate(
    out_dir: str | os.PathLike[str],
    *,
    num_train: int = DEFAULTS["num_train"],
    num_val: int = DEFAULTS["num_val"],
    seed: int = DEFAULTS["seed"],
    image_size: int | tuple[int, int] = DEFAULTS["image_size"],
    max_objects: int = 6,
    small_fraction: float = 0.12,
    min_visible: float = 0.6,
    jpeg_quality: int = 90,
) -> Path:
    """Write the synthetic dataset (layout in the module docstring) to ``out_dir`` and return it.

    Args:
        image_size: ``(width, height)`` in pixels, or one int for square images.
        max_objects: objects per image are uniform in 1..max_objects.
        small_fraction: share of objects drawn 12-32 px; the rest are 32 px to 0.62 of the short side.
        min_visible: each object keeps at least this fraction of its pixels visible.
    Every image depends only on (seed, split, index), so sets of different sizes share their first images.
    """
    out = Path(out_dir)
    width, height = _parse_size(image_size)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    params = {"seed": seed, "image_size": [width, height], "max_objects": max_objects,
              "small_fraction": small_fraction, "min_visible": min_visible, "version": SYNTH_VERSION}
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        (out / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_id, i])
            img, objects = _render_image(rng, width, height, max_objects, small_fraction, min_visible)
            file_name = f"{i:06d}.jpg"
            img.save(out / split / file_name, quality=jpeg_quality)
            images.append({"id": i + 1, "file_name": file_name, "width": width, "height": height})
            for cls, bbox, area in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                    "bbox": bbox, "area": float(area), "iscrowd": 0})
        coco = {
            "info": {"description": f"singleshot synthetic shapes ({split})", **params},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES)],
        }
        with open(out / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
            json.dump(coco, f)
    return out


def cache_dir() -> Path:
    """``$SINGLESHOT_CACHE`` if set, else ``~/.cache/singleshot``."""
    env = os.environ.get("SINGLESHOT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "singleshot"


def default_dataset_path() -> Path:
    """The default synthetic dataset (default parameters), generated into the cache on first use."""
    final = cache_dir() / SYNTH_VERSION
    marker = final / ".complete"
    if marker.exists():
        return final
    if final.exists():
        raise FileExistsError(f"{final} exists but is not a complete singleshot synthetic set; remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{SYNTH_VERSION}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate(tmp, **DEFAULTS)
        (tmp / ".complete").write_text(json.dumps(DEFAULTS, default=list) + "\n")
        try:
            os.rename(tmp, final)  # atomic; fails if another process got there first
        except OSError:
            if not marker.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
