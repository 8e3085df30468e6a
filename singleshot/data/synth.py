"""The built-in synthetic dataset: shapes on generated backgrounds, in COCO format, deterministic by seed.

Layout written by :func:`generate` (loadable by ``pycocotools.coco.COCO`` unchanged)::

    DIR/train/000000.jpg ...            DIR/annotations/instances_train.json
    DIR/val/000000.jpg ...              DIR/annotations/instances_val.json

What a set looks like is a :class:`SynthStyle`. The default style is the built-in set (``synth-v1``): six
classes, each a shape drawn in its own hue family (circle red, triangle yellow, square green, hexagon cyan, star
blue, cross magenta), 1-6 objects per image, mostly medium or large, on a smooth noisy background with a few
low-saturation distractors. :func:`random_style` draws other sets for measuring generalization: 2-12 of the 12
:data:`SHAPES`, colour tied to the class or not, image sizes and aspect ratios, object scales from a few pixels to
most of the image, object aspect ratios, occlusion, object counts, and textured or cluttered backgrounds.

**Boxes are the exact visible extent**: the tight bounding box of the object's pixels left uncovered by later
objects and the image border, in pixel-edge coordinates (a box ``[x, y, w, h]`` covers pixel columns
``x .. x + w - 1``); ``area`` is the visible pixel count. This is COCO's own convention (boxes of the visible part).

:func:`default_dataset_path` returns the cached default set (``$SINGLESHOT_CACHE`` or ``~/.cache/singleshot``,
subfolder ``synth-v1``), generating it on first use; concurrent first uses are safe (each writes a private
temporary folder and renames it into place; the loser discards its copy).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "triangle", "square", "hexagon", "star", "cross",
          "diamond", "ring", "ell", "tee", "arrow", "half_disc")
CLASSES = SHAPES[:6]  # the built-in set's classes
_HUES = dict(zip(SHAPES, (0.0, 60.0, 120.0, 180.0, 240.0, 300.0, 30.0, 90.0, 150.0, 210.0, 270.0, 330.0)))
_UPRIGHT = {"square", "cross", "diamond"}  # rotated by at most +-0.25 rad, so a square never becomes a diamond
_FIXED_ASPECT = {"star"}
SYNTH_VERSION = "synth-v1"
DEFAULTS: dict[str, Any] = {"num_train": 1500, "num_val": 200, "seed": 0, "image_size": (320, 240)}


@dataclass(frozen=True)
class SynthStyle:
    """What a generated set looks like; the defaults are the built-in set (``synth-v1``), byte for byte.

    Sizes are in pixels of the image before any model resize.
    """

    classes: tuple[str, ...] = CLASSES  # names from SHAPES, in label order
    colour_by_class: bool = True  # True: each class its own hue family; False: any colour for any class
    image_size: tuple[int, int] = (320, 240)  # (width, height)
    size_jitter: float = 0.0  # each image's width and height scaled by exp(U(-j, j)) independently
    max_objects: int = 6  # objects per image uniform in 1..max_objects
    small_fraction: float = 0.12  # share of objects drawn min_size..32 px, the rest 32 px..max_size
    min_size: float = 12.0  # smallest object side, pixels
    max_size: float = 0.62  # largest object side, fraction of the image's short side
    aspect_jitter: float = 0.4  # object aspect ratio exp(U(-a, a)) (the star keeps 1)
    min_visible: float = 0.6  # each object keeps at least this fraction of its pixels visible
    background: Literal["smooth", "texture", "clutter"] = "smooth"
    distractors: tuple[int, int] = (2, 8)  # distractor lines and blobs per image, inclusive range
    fill: Literal["solid", "outline"] = "solid"  # outline: only a rim of outline_px pixels is drawn (hollow shapes)
    outline_px: int = 2
    decoys: int = 0  # up to this many unlabelled shapes per image, of shapes not among the classes, drawn as objects

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"SynthStyle.classes must be distinct names from {SHAPES}; got {self.classes}")
        if self.background not in ("smooth", "texture", "clutter"):
            raise ValueError(f"SynthStyle.background must be smooth, texture or clutter; got {self.background!r}")
        if self.fill not in ("solid", "outline") or self.outline_px < 1:
            raise ValueError(f"SynthStyle.fill must be solid or outline (outline_px >= 1); got {self.fill!r}, "
                             f"{self.outline_px}")  # fmt: skip
        if self.decoys and len(self.classes) == len(SHAPES):
            raise ValueError("SynthStyle.decoys needs shapes that are not classes; every shape is a class here")
        if not 0 < self.min_size <= 32 or not 0 < self.max_size <= 1 or self.max_objects < 1:
            raise ValueError(f"SynthStyle sizes out of range: min_size {self.min_size} (0-32 px), max_size "
                             f"{self.max_size} (0-1 of the short side), max_objects {self.max_objects} (>= 1)")

    def describe(self) -> str:
        """One line for tables and logs."""
        w, h = self.image_size
        jitter = f"x{math.exp(self.size_jitter):.2f}" if self.size_jitter else ""
        colour = "colour=class" if self.colour_by_class else "any colour"
        extra = (f", outline {self.outline_px}px" if self.fill == "outline" else "") + (
            f", <={self.decoys} decoys" if self.decoys else "")  # fmt: skip
        return (f"{len(self.classes)} cls, {colour}, {w}x{h}{jitter}, 1-{self.max_objects} obj, "
                f"{self.min_size:.0f}px-{self.max_size:.2f}, small {self.small_fraction:.0%}, "
                f"aspect x{math.exp(self.aspect_jitter):.1f}, visible>={self.min_visible:.1f}, {self.background}"
                f"{extra}")


# Styles that are hard in one way each (chosen before any tuning, kept fixed: the accuracy benchmark's --styles hard).
HARD_STYLES: dict[str, SynthStyle] = {
    # thin hollow shapes, any colour, over stripes: edges only, no colour or area to go by
    "outline": SynthStyle(classes=CLASSES, colour_by_class=False, image_size=(320, 240), max_objects=6,
                          small_fraction=0.15, min_size=12, max_size=0.6, background="texture", fill="outline",
                          outline_px=2),
    # many small objects per image, overlapping, over clutter
    "crowded": SynthStyle(classes=CLASSES, colour_by_class=True, image_size=(416, 320), max_objects=40,
                          small_fraction=0.8, min_size=6, max_size=0.25, min_visible=0.3, background="clutter",
                          distractors=(10, 30)),
    # unlabelled look-alikes: shapes of other kinds drawn as objects are, any colour; only the shape tells
    "decoys": SynthStyle(classes=("circle", "triangle", "square", "hexagon"), colour_by_class=False,
                         image_size=(320, 256), max_objects=4, small_fraction=0.15, min_size=10, max_size=0.5,
                         decoys=8),
}  # fmt: skip


def random_style(seed: int) -> SynthStyle:
    """A style drawn from ranges that vary what real datasets vary (deterministic by ``seed``)."""
    rng = np.random.default_rng([seed, 7919])
    k = int(rng.integers(2, len(SHAPES) + 1))
    picked = rng.choice(len(SHAPES), size=k, replace=False)
    width = int(rng.choice([192, 256, 320, 384, 480, 640]))
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.8)))  # width / height
    background = str(rng.choice(["smooth", "texture", "clutter"]))
    return SynthStyle(
        classes=tuple(SHAPES[i] for i in sorted(picked)),
        colour_by_class=bool(rng.random() < 0.35),
        image_size=(width, max(96, round(width / aspect))),
        size_jitter=float(rng.choice([0.0, 0.15, 0.3])),
        max_objects=int(rng.choice([1, 2, 3, 4, 6, 8, 12, 16])),
        small_fraction=float(rng.uniform(0.05, 0.4)),
        min_size=float(rng.uniform(6, 16)),
        max_size=float(rng.uniform(0.3, 0.9)),
        aspect_jitter=float(rng.uniform(0.1, 0.9)),
        min_visible=float(rng.uniform(0.4, 0.9)),
        background=background,  # type: ignore[arg-type]
        distractors=(10, 40) if background == "clutter" else (2, 8),
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """h in degrees, s and v in [0, 1] -> 8-bit RGB."""
    c = v * s
    x = c * (1 - abs((h / 60.0) % 2 - 1))
    m = v - c
    sector = int(h // 60) % 6
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return round((r + m) * 255), round((g + m) * 255), round((b + m) * 255)


def _ring(n: int, radius: float = 1.0, start: float = 0.0) -> list[tuple[float, float]]:
    return [(radius * math.cos(start + a), radius * math.sin(start + a)) for a in np.arange(n) * 2 * math.pi / n]


# Unit outlines in [-1, 1]^2 (y down); the circle and the ring are drawn as ellipses instead.
_OUTLINES: dict[str, list[tuple[float, float]]] = {
    "triangle": [(math.cos(a), math.sin(a)) for a in np.linspace(-math.pi / 2, 1.5 * math.pi, 4)[:3]],
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "hexagon": _ring(6),
    "star": [((1.0 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
              (1.0 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)],
    "cross": [(-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33), (0.33, 1), (-0.33, 1),
              (-0.33, 0.33), (-1, 0.33), (-1, -0.33), (-0.33, -0.33)],
    "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
    "ell": [(-1, -1), (-0.3, -1), (-0.3, 0.3), (1, 0.3), (1, 1), (-1, 1)],
    "tee": [(-1, -1), (1, -1), (1, -0.4), (0.3, -0.4), (0.3, 1), (-0.3, 1), (-0.3, -0.4), (-1, -0.4)],
    "arrow": [(-1, -0.3), (0.2, -0.3), (0.2, -0.8), (1, 0), (0.2, 0.8), (0.2, 0.3), (-1, 0.3)],
    "half_disc": [(math.cos(a), 2 * math.sin(a) + 1) for a in np.linspace(math.pi, 2 * math.pi, 17)],
}


def _shape_polygon(shape: str, cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """Vertices in pixels of ``shape`` with half-extents w/2, h/2, rotated by ``angle``."""
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + ca * x * w / 2 - sa * y * h / 2, cy + sa * x * w / 2 + ca * y * h / 2) for x, y in _OUTLINES[shape]]


def _background(rng: np.random.Generator, width: int, height: int, style: SynthStyle) -> Image.Image:
    """Smooth low-saturation field (or a texture) plus pixel noise and distractor lines and blobs."""
    if style.background == "texture":
        field = _texture(rng, width, height)
    else:
        gw, gh = int(rng.integers(3, 9)), int(rng.integers(3, 7))
        base = rng.uniform(50, 200) + rng.normal(0, 20, size=3)  # greyish, so shape colours stand out
        grid = np.clip(base + rng.normal(0, 35, size=(gh, gw, 1)) + rng.normal(0, 12, size=(gh, gw, 3)), 0, 255)
        field = Image.fromarray(grid.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(field).astype(np.int16) + rng.normal(0, 7, size=(height, width, 1)).astype(np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    lo, hi = style.distractors
    max_sat = 0.3 if style.colour_by_class else 0.9  # with colour free of class, distractors may be vivid too
    for _ in range(int(rng.integers(lo, hi + 1))):
        color = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, max_sat), rng.uniform(0.2, 0.9))
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


def _texture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Two random oriented stripe patterns over a colour gradient: strong edges that are not objects."""
    x = np.arange(width, dtype=np.float32)[None, :]  # [1, W]
    y = np.arange(height, dtype=np.float32)[:, None]  # [H, 1]
    c0, c1 = rng.uniform(40, 210, size=3), rng.uniform(40, 210, size=3)
    t = x / width * math.cos(rng.uniform(0, math.pi)) + y / height * math.sin(rng.uniform(0, math.pi))  # [H, W]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    out = c0.astype(np.float32) + t[..., None] * (c1 - c0).astype(np.float32)  # [H, W, 3]
    for _ in range(2):
        theta, period = rng.uniform(0, math.pi), rng.uniform(4, 40)
        k = 2 * math.pi / period
        wave = np.sin(x * (k * math.cos(theta)) + y * (k * math.sin(theta)))  # [H, W]
        if rng.random() < 0.5:
            wave = np.sign(wave)
        out += wave[..., None] * rng.uniform(5, 30, size=3).astype(np.float32)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _object_colour(rng: np.random.Generator, shape: str, style: SynthStyle) -> tuple[int, int, int]:
    if style.colour_by_class:
        return _hsv_to_rgb((_HUES[shape] + rng.uniform(-15, 15)) % 360, rng.uniform(0.6, 0.95),
                           rng.uniform(0.6, 0.95))
    return _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.95), rng.uniform(0.35, 0.95))


def _render_image(
    rng: np.random.Generator, style: SynthStyle
) -> tuple[Image.Image, list[tuple[int, list[float], int]]]:
    """One image and its objects as ``(class index 0..K-1, [x, y, w, h] pixels, visible area)``.

    Each object is rasterized in its own bounding window (plus a 2-pixel margin) rather than the whole image, so
    the cost grows with object area, not image area x object count.
    """
    width, height = style.image_size
    if style.size_jitter:
        width = max(32, round(width * math.exp(rng.uniform(-style.size_jitter, style.size_jitter))))
        height = max(32, round(height * math.exp(rng.uniform(-style.size_jitter, style.size_jitter))))
    img = _background(rng, width, height, style)
    pixels = np.asarray(img).copy()
    if style.decoys:
        _draw_decoys(rng, pixels, style)
    owner = np.full((height, width), -1, dtype=np.int16)  # index of the top-most object at each pixel
    full_area: list[int] = []
    visible: list[int] = []
    classes: list[int] = []
    windows: list[tuple[int, int, int, int]] = []  # (x0, y0, x1, y1): each object's pixels lie inside its own
    target = int(rng.integers(1, style.max_objects + 1))
    short = min(width, height)
    for _ in range(target * 4):  # placement attempts
        if len(classes) == target:
            break
        cls = int(rng.integers(len(style.classes)))
        shape = style.classes[cls]
        if rng.random() < style.small_fraction:
            size = rng.uniform(style.min_size, 32)
        else:
            size = math.exp(rng.uniform(math.log(32), math.log(max(32.0, style.max_size * short))))
        aspect = math.exp(rng.uniform(-style.aspect_jitter, style.aspect_jitter)) if shape not in _FIXED_ASPECT else 1.0
        w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
        cx, cy = rng.uniform(0.08, 0.92) * width, rng.uniform(0.08, 0.92) * height
        angle = rng.uniform(-0.25, 0.25) if shape in _UPRIGHT else rng.uniform(0, 2 * math.pi)
        reach = math.hypot(w, h) / 2 + 2  # any rotation stays within this radius
        x0, y0 = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
        x1, y1 = min(width, math.ceil(cx + reach) + 1), min(height, math.ceil(cy + reach) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        mask = _shape_mask(shape, cx - x0, cy - y0, w, h, angle, (x1 - x0, y1 - y0))
        if int(mask.sum()) < 60:
            continue
        if style.fill == "outline":  # the rim only: what is inside stays background
            mask = _rim(mask, style.outline_px)
        area = int(mask.sum())
        window = owner[y0:y1, x0:x1]
        lost = np.bincount(window[mask & (window >= 0)].ravel(), minlength=len(classes))
        if any(visible[j] - lost[j] < style.min_visible * full_area[j] for j in range(len(classes))):
            continue  # would hide too much of an earlier object
        for j in range(len(classes)):
            visible[j] -= int(lost[j])
        window[mask] = len(classes)
        full_area.append(area)
        visible.append(area)
        classes.append(cls)
        windows.append((x0, y0, x1, y1))
        fill = _object_colour(rng, shape, style)
        patch = pixels[y0:y1, x0:x1]
        patch[mask] = fill
        if style.fill == "solid":
            # darker rim: the outer ring of the mask, inside the shape's own pixels so the extent is unchanged
            edge = tuple(int(c * 0.55) for c in fill)
            patch[mask & ~_erode(mask, (x0 == 0, y0 == 0, x1 == width, y1 == height))] = edge
    objects = []
    for k, (cls, (x0, y0, x1, y1)) in enumerate(zip(classes, windows)):
        ys, xs = np.nonzero(owner[y0:y1, x0:x1] == k)
        bx0, bx1, by0, by1 = x0 + int(xs.min()), x0 + int(xs.max()) + 1, y0 + int(ys.min()), y0 + int(ys.max()) + 1
        objects.append((cls, [float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)], len(xs)))
    return Image.fromarray(pixels), objects


def _shape_mask(shape: str, cx: float, cy: float, w: float, h: float, angle: float,
                size: tuple[int, int]) -> np.ndarray:
    """Boolean ``[H, W]`` mask of one shape in a window of ``size`` = (W, H); centre in window pixels."""
    mask_img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask_img)
    if shape in ("circle", "ring"):
        draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=255)
        if shape == "ring":
            draw.ellipse([cx - w / 4, cy - h / 4, cx + w / 4, cy + h / 4], fill=0)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, w, h, angle), fill=255)
    return np.asarray(mask_img) > 0


def _rim(mask: np.ndarray, width: int) -> np.ndarray:
    """The outer ``width`` pixels of ``mask`` (4-neighbour erosion ``width`` times, window sides as outside)."""
    inner = mask
    for _ in range(width):
        inner = _erode(inner, (False, False, False, False))
    return mask & ~inner


def _draw_decoys(rng: np.random.Generator, pixels: np.ndarray, style: SynthStyle) -> None:
    """Up to ``style.decoys`` unlabelled shapes of kinds that are not classes, sized and coloured as objects are,
    drawn into ``pixels`` (``uint8[H, W, 3]``) before the objects (which may cover them)."""
    others = [s for s in SHAPES if s not in style.classes]
    height, width = pixels.shape[:2]
    short = min(width, height)
    for _ in range(int(rng.integers(0, style.decoys + 1))):
        shape = others[int(rng.integers(len(others)))]
        size = math.exp(rng.uniform(math.log(max(style.min_size, 8.0)), math.log(max(32.0, style.max_size * short))))
        aspect = math.exp(rng.uniform(-style.aspect_jitter, style.aspect_jitter))
        w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        reach = math.hypot(w, h) / 2 + 2
        x0, y0 = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
        x1, y1 = min(width, math.ceil(cx + reach) + 1), min(height, math.ceil(cy + reach) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        mask = _shape_mask(shape, cx - x0, cy - y0, w, h, rng.uniform(0, 2 * math.pi), (x1 - x0, y1 - y0))
        if style.fill == "outline":
            mask = _rim(mask, style.outline_px)
        pixels[y0:y1, x0:x1][mask] = _object_colour(rng, shape, style)


def _erode(mask: np.ndarray, at_border: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """4-neighbour binary erosion. Sides of the window that are image borders (left, top, right, bottom) count
    pixels outside as inside, so the image border is not a rim; other sides are outside the shape."""
    p = np.pad(mask, 1, mode="constant")
    left, top, right, bottom = at_border
    if left:
        p[:, 0] = p[:, 1]
    if right:
        p[:, -1] = p[:, -2]
    if top:
        p[0, :] = p[1, :]
    if bottom:
        p[-1, :] = p[-2, :]
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
    style: SynthStyle | None = None,
) -> Path:
    """Write a synthetic dataset (layout in the module docstring) to ``out_dir`` and return it.

    Args:
        image_size: ``(width, height)`` in pixels, or one int for square images.
        max_objects: objects per image are uniform in 1..max_objects.
        small_fraction: share of objects drawn 12-32 px; the rest are 32 px to 0.62 of the short side.
        min_visible: each object keeps at least this fraction of its pixels visible.
        style: the whole look of the set; when given, it replaces the four arguments above.
    Every image depends only on (seed, split, index), so sets of different sizes share their first images.
    """
    if style is None:
        style = SynthStyle(image_size=_parse_size(image_size), max_objects=max_objects,
                           small_fraction=small_fraction, min_visible=min_visible)
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    params = {"seed": seed, "image_size": list(style.image_size), "max_objects": style.max_objects,
              "small_fraction": style.small_fraction, "min_visible": style.min_visible, "version": SYNTH_VERSION}
    if style != SynthStyle(image_size=style.image_size, max_objects=style.max_objects,
                           small_fraction=style.small_fraction, min_visible=style.min_visible):
        params["style"] = dataclasses.asdict(style)
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        (out / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_id, i])
            img, objects = _render_image(rng, style)
            file_name = f"{i:06d}.jpg"
            img.save(out / split / file_name, quality=jpeg_quality)
            images.append({"id": i + 1, "file_name": file_name, "width": img.width, "height": img.height})
            for cls, bbox, area in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                    "bbox": bbox, "area": float(area), "iscrowd": 0})
        coco = {
            "info": {"description": f"singleshot synthetic shapes ({split})", **params},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(style.classes)],
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
