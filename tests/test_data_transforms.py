"""SSD augmentation: crop invariants, flip, boxes moving with pixels, fused colour jitter against torchvision."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from singleshot.data.loader import collate_detection
from singleshot.data.photometric import apply_photometric, color_affine, photometric_params
from singleshot.data.transforms import (
    CROP_CHOICES,
    AreaCropTrainTransform,
    SSDTrainTransform,
    SSDValTransform,
    hflip_boxes,
    sample_area_crop,
    sample_ssd_crop,
)


def _sample(h: int = 120, w: int = 160, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return image, {"boxes": boxes, "labels": torch.arange(1, n + 1), "image_id": seed, "orig_size": (h, w)}


def test_crop_never_yields_box_outside_image() -> None:
    tf = SSDTrainTransform(64)
    for seed in range(300):
        image, target = _sample(seed=seed % 7, n=1 + seed % 5)
        out, t = tf(image, target, random.Random(seed))
        b = t["boxes"]
        assert out.shape == (3, 64, 64)
        assert len(b) == len(t["labels"])
        assert ((b >= 0) & (b <= 1)).all(), b
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all(), b
        assert set(t["labels"].tolist()) <= set(target["labels"].tolist())


def test_crop_rule_constraints() -> None:
    rng = random.Random(0)
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]], dtype=np.float32)
    seen_none = 0
    for _ in range(2000):
        crop = sample_ssd_crop(boxes, rng)
        if crop is None:
            seen_none += 1
            continue
        (l, t, r, b), keep = crop
        w, h = r - l, b - t
        assert 0.3 <= w <= 1 and 0.3 <= h <= 1 and 0.5 <= w / h <= 2
        assert l >= 0 and r <= 1 and t >= 0 and b <= 1
        assert keep.any()
    # "no crop" is drawn 1 in 7 times, and also ends every run of failed attempts (the reference's retry loop)
    assert seen_none > 2000 / len(CROP_CHOICES) * 0.8


def test_flip_twice_is_identity() -> None:
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.9], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(hflip_boxes(hflip_boxes(boxes)), boxes)
    torch.testing.assert_close(hflip_boxes(boxes)[0], torch.tensor([0.7, 0.2, 0.9, 0.9]))


def test_boxes_move_with_pixels() -> None:
    """A white rectangle on black: after crop/flip/resize its pixels must sit inside its transformed box."""
    tf = SSDTrainTransform(96, jitter=None)
    for seed in range(60):
        image = torch.zeros(3, 120, 160, dtype=torch.uint8)
        image[:, 30:90, 40:100] = 255
        target = {"boxes": torch.tensor([[40.0, 30.0, 100.0, 90.0]]), "labels": torch.tensor([1]),
                  "image_id": 0, "orig_size": (120, 160)}
        out, t = tf(image, target, random.Random(seed))
        if len(t["boxes"]) == 0:
            continue
        x0, y0, x1, y1 = (t["boxes"][0] * 96).tolist()
        ys, xs = torch.nonzero(out[0] > 127, as_tuple=True)
        assert xs.min() >= x0 - 1.5 and xs.max() + 1 <= x1 + 1.5 and ys.min() >= y0 - 1.5 and ys.max() + 1 <= y1 + 1.5


def test_val_transform_and_collate_normalize() -> None:
    """The transform resizes (uint8, identity colour draw); the collate normalizes with the mean/std it is given."""
    image, target = _sample()
    out, t = SSDValTransform(32)(image, target)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8 and t["photometric"].shape == (11,)
    torch.testing.assert_close(t["boxes"], target["boxes"] / torch.tensor([160.0, 120.0, 160.0, 120.0]))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    ref = (TF.resize(image, [32, 32], antialias=True).float() / 255 - mean) / std
    torch.testing.assert_close(collate_detection([(out, t)])["images"][0], ref, atol=1e-4, rtol=1e-4)
    other = collate_detection([(out, t)], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))["images"][0]
    torch.testing.assert_close(other, TF.resize(image, [32, 32], antialias=True).float() / 255, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("op", "fn"), [(0, TF.adjust_brightness), (1, TF.adjust_contrast), (2, TF.adjust_saturation)])
def test_fused_jitter_matches_torchvision(op: int, fn) -> None:
    """Brightness, contrast, saturation are exact (mid-range image, so torchvision's clamps never bite)."""
    g = torch.Generator().manual_seed(0)
    img = torch.randint(80, 170, (3, 20, 20), generator=g).float()
    factors = [1.0, 1.0, 1.0, 0.0]
    factors[op] = 1.2
    params = photometric_params(img.mean(dim=(1, 2)).tolist(), factors, (0, 1, 2, 3))
    ours = apply_photometric(img[None], params[None], mean=(0, 0, 0), std=(1, 1, 1))[0]
    torch.testing.assert_close(ours, fn(img / 255, 1.2), atol=1e-5, rtol=1e-5)


def test_hue_turns_like_torchvision() -> None:
    """Hue is a rotation about the grey axis: same direction as the HSV shift, closer to it than no change."""
    img = torch.tensor([[200.0, 50, 50], [50, 200, 50], [50, 50, 200], [180, 160, 40]]).T.reshape(3, 1, 4)
    params = photometric_params(img.mean(dim=(1, 2)).tolist(), (1.0, 1.0, 1.0, 0.05), (3, 0, 1, 2))
    ours = apply_photometric(img[None], params[None], mean=(0, 0, 0), std=(1, 1, 1))[0]
    ref = TF.adjust_hue(img / 255, 0.05)
    assert (ours - ref).abs().mean() < 0.85 * (img / 255 - ref).abs().mean()
    assert ours[1, 0, 0] > img[1, 0, 0] / 255  # red turns towards green, as torchvision's positive hue
    torch.testing.assert_close(ours.sum(0), (img / 255).sum(0))  # R + G + B preserved


def test_affine_composition_order_matters_and_identity() -> None:
    ident = color_affine(photometric_params([100.0, 100.0, 100.0])[None], mean=(0, 0, 0), std=(1, 1, 1))[0]
    torch.testing.assert_close(ident, torch.cat([torch.eye(3) / 255, torch.zeros(3, 1)], dim=1))
    p1 = photometric_params([50.0, 100.0, 150.0], (1.1, 1.3, 0.7, 0.02), (0, 1, 2, 3))
    p2 = photometric_params([50.0, 100.0, 150.0], (1.1, 1.3, 0.7, 0.02), (3, 2, 1, 0))
    assert not torch.allclose(color_affine(p1[None]), color_affine(p2[None]))


def test_collate_finish_equals_device_finish_and_per_sample() -> None:
    """The CPU collate's finish (per image, into the batch) and the accelerator's batched finish both equal the
    per-sample colour + normalization of each transformed image."""
    tf = SSDTrainTransform(48)
    samples = [tf(img, t, random.Random(7 + i)) for i, (img, t) in enumerate(_sample(seed=s) for s in range(3))]
    per_sample = torch.cat([apply_photometric(img[None], t["photometric"][None]) for img, t in samples])
    batch = collate_detection(samples)
    assert "photometric" not in batch
    torch.testing.assert_close(batch["images"], per_sample, atol=1e-4, rtol=1e-4)
    raw = collate_detection(samples, photometric_on_device=True)
    assert raw["images"].dtype == torch.uint8 and raw["photometric"].shape == (3, 11)
    torch.testing.assert_close(apply_photometric(raw["images"], raw["photometric"]), batch["images"],
                               atol=1e-4, rtol=1e-4)


def test_same_seed_same_augmentation() -> None:
    image, target = _sample()
    tf = SSDTrainTransform(40)
    a, ta = tf(image, target, random.Random(5))
    b, tb = tf(image, target, random.Random(5))
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])


def test_area_crop_obeys_area_and_aspect() -> None:
    rng = random.Random(0)
    seen_aspects = []
    for w, h in [(640, 480), (480, 640), (300, 300), (1000, 200)]:
        for _ in range(300):
            window = sample_area_crop(w, h, rng)
            if window is None:
                continue
            x0, y0, x1, y1 = window
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert 0.75 * w * h <= (x1 - x0) * (y1 - y0) <= w * h
            aspect = (x1 - x0) / (y1 - y0)
            assert 0.75 - 1.0 / (y1 - y0) <= aspect <= 3.0 + 1.0 / (y1 - y0)  # width rounded to whole pixels
            seen_aspects.append(aspect)
    assert min(seen_aspects) < 0.8 and max(seen_aspects) > 1.7  # portrait and landscape crops both occur
    # No window of >= 75% area can have aspect 3 on a square image: the whole image is used.
    assert sample_area_crop(100, 100, rng, aspect=(3.0, 3.0)) is None


def test_area_crop_transform_moves_boxes_with_pixels() -> None:
    tf = AreaCropTrainTransform(96)
    flipped = cropped = 0
    for seed in range(60):
        image = torch.zeros(3, 120, 160, dtype=torch.uint8)
        image[:, 30:90, 40:100] = 255
        target = {"boxes": torch.tensor([[40.0, 30.0, 100.0, 90.0], [0.0, 0.0, 6.0, 4.0]]),
                  "labels": torch.tensor([1, 2]), "image_id": 0, "orig_size": (120, 160)}
        out, t = tf(image, target, random.Random(seed))
        assert out.shape == (3, 96, 96) and ((t["boxes"] >= 0) & (t["boxes"] <= 1)).all()
        assert t["labels"][0] == 1 and len(t["boxes"]) == len(t["labels"])
        cropped += len(t["labels"]) == 1  # the corner box was cut away
        x0, y0, x1, y1 = (t["boxes"][0] * 96).tolist()
        flipped += x0 > 96 - x1
        ys, xs = torch.nonzero(out[0] > 127, as_tuple=True)
        assert xs.min() >= x0 - 1.5 and xs.max() + 1 <= x1 + 1.5 and ys.min() >= y0 - 1.5 and ys.max() + 1 <= y1 + 1.5
    assert 0 < flipped < 60 and cropped > 0
