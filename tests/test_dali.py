"""The NVIDIA DALI input pipeline on DALI's CPU backend: boxes move with the pixels, the crop statistics are the
recipe's, order and sharding are the built-in loader's, bad images are named, and a run trains and resumes exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import tiny_config

from singleshot.data import build_loader, load_dataset
from singleshot.data.dali import dali_missing_reason
from singleshot.data.errors import BadImageError
from singleshot.data.photometric import IMAGENET_MEAN, IMAGENET_STD
from singleshot.data.transforms import SSDValTransform, crop_iou, sample_ssd_crop

pytestmark = pytest.mark.skipif(dali_missing_reason() is not None, reason=str(dali_missing_reason()))

S = 96  # output side


def _box_scene(root: Path, count: int = 6, width: int = 320, height: int = 240) -> Path:
    """COCO set of black images, each with one white rectangle that is its only annotated box."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    (root / "train").mkdir(parents=True)
    for i in range(count):
        w, h = int(rng.integers(60, 160)), int(rng.integers(50, 140))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        arr = np.zeros((height, width, 3), dtype=np.uint8)
        arr[y : y + h, x : x + w] = 255
        Image.fromarray(arr).save(root / "train" / f"{i}.jpg", quality=98)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": width, "height": height})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, w, h], "area": w * h,
                            "iscrowd": 0})  # fmt: skip
    (root / "annotations").mkdir()
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return root


def _loader(dataset, mode: str, **kw):
    from singleshot.data.dali import DaliLoader

    return DaliLoader(dataset, mode=mode, image_size=S, batch_size=kw.pop("batch_size", 6), shuffle=True, **kw)


def _bright_extent(image: torch.Tensor) -> tuple[float, float, float, float] | None:
    """xyxy pixel extent of the bright region of a normalized ``float[3, S, S]`` image (None if it has no edge)."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    grey = (image * std + mean).mean(0)
    lo, hi = grey.min(), grey.max()
    if hi - lo < 0.1:
        return None
    mask = grey > (lo + hi) / 2
    cols = mask.float().mean(0) > 0.5 * mask.float().mean(0).max()
    rows = mask.float().mean(1) > 0.5 * mask.float().mean(1).max()
    xs, ys = cols.nonzero().flatten(), rows.nonzero().flatten()
    return float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)


@pytest.mark.parametrize("mode", ["ssd", "area_crop", "val"])
def test_boxes_move_with_the_pixels(tmp_path: Path, mode: str) -> None:
    ds = load_dataset(_box_scene(tmp_path / "scene"), "train")
    loader = _loader(ds, mode, seed=5)
    checked, lefts = 0, []
    for epoch in range(6):
        loader.set_epoch(epoch)
        for batch in loader:
            for img, boxes, labels in zip(batch["images"], batch["boxes"], batch["labels"]):
                extent = _bright_extent(img)
                if labels[0] <= 0:  # the crop dropped the box (its centre left the window)
                    continue
                box = (boxes[0] * S).tolist()
                if extent is None:  # the window lies inside the rectangle: the box covers the whole output
                    assert box == pytest.approx([0, 0, S, S], abs=1.0)
                    continue
                assert box == pytest.approx(list(extent), abs=2.5), f"{mode}: box {box} vs pixels {extent}"
                checked += 1
                lefts.append(box[0])
    assert checked >= 12
    assert len({round(v) for v in lefts}) > 3  # the boxes really moved around


def _ssd_windows(boxes: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DALI's SSD crop over ``draws`` samples of the same boxes: (windows xyxy normalized, kept counts)."""
    from nvidia.dali import fn, pipeline_def, types

    from singleshot.data.dali import ssd_crop

    batch = 512

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=seed)
    def pipe():
        b = fn.external_source(source=lambda: [boxes] * batch, batch=True, dtype=types.FLOAT)
        lab = fn.external_source(source=lambda: [np.arange(1, len(boxes) + 1, dtype=np.int32)] * batch, batch=True,
                                 dtype=types.INT32)  # fmt: skip
        anchor, shape, out_boxes, out_labels = ssd_crop(b, lab, 1)
        return anchor, shape, out_boxes, out_labels

    p = pipe()
    p.build()
    windows, kept, out = [], [], []
    for _ in range(-(-draws // batch)):
        anchor, shape, out_boxes, out_labels = p.run()
        for a, s, ob, ol in zip(anchor, shape, out_boxes, out_labels):
            a, s = np.asarray(a), np.asarray(s)
            windows.append(np.concatenate([a, a + s]))
            kept.append(len(np.asarray(ol).reshape(-1)))
            out.append(np.asarray(ob).reshape(-1, 4))
    return np.array(windows), np.array(kept), out


def test_ssd_crop_statistics_match_the_recipe() -> None:
    boxes = np.array([[0.3, 0.25, 0.6, 0.7], [0.05, 0.6, 0.25, 0.95]], dtype=np.float32)
    windows, kept, out_boxes = _ssd_windows(boxes, 4096, seed=11)
    full = np.all(np.isclose(windows, [0, 0, 1, 1]), axis=1)
    w, h = windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]
    crops = ~full
    # window sides 0.3-1 of the image's, relative aspect 0.5-2, inside the image
    assert w[crops].min() >= 0.3 - 1e-4 and h[crops].min() >= 0.3 - 1e-4
    assert (w / h)[crops].min() >= 0.5 - 1e-4 and (w / h)[crops].max() <= 2.0 + 1e-4
    assert windows.min() >= -1e-5 and windows.max() <= 1 + 1e-5
    # every crop keeps at least one box, each kept box's centre inside the window; output boxes inside [0, 1]
    assert kept.min() >= 1
    assert all(b.min() >= -1e-5 and b.max() <= 1 + 1e-5 for b in out_boxes)
    # the same distribution as the reference's sampling (our built-in crop, itself tested against the reference)
    rng = random.Random(0)
    ref = [sample_ssd_crop(boxes, rng, 1) for _ in range(len(windows))]
    ref_full = np.array([r is None for r in ref])
    ref_windows = np.array([r[0] for r in ref if r is not None])
    assert abs(full.mean() - ref_full.mean()) < 0.04  # the no-crop option (~1/7 + failed high thresholds)

    def min_iou(win: np.ndarray) -> np.ndarray:
        return np.array([crop_iou(boxes, tuple(x)).min() for x in win])

    ours, theirs = min_iou(windows[crops]), min_iou(ref_windows)
    for q in (0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(ours, q) - np.quantile(theirs, q)) < 0.03, q
    for t in (0.1, 0.3, 0.5):  # the IoU thresholds: how often a crop clears each one
        assert abs((ours > t).mean() - (theirs > t).mean()) < 0.04, t
    ref_w = ref_windows[:, 2] - ref_windows[:, 0]
    assert abs(w[crops].mean() - ref_w.mean()) < 0.02


def test_area_crop_statistics() -> None:
    from nvidia.dali import fn, pipeline_def, types

    from singleshot.data.dali import area_crop_window

    batch, hw = 512, (480, 640)

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=2)
    def pipe():
        shape = fn.external_source(source=lambda: [np.array([*hw, 3], dtype=np.int64)] * batch, batch=True,
                                   dtype=types.INT64)  # fmt: skip
        anchor, window = area_crop_window(shape)
        return anchor, window

    p = pipe()
    p.build()
    anchors, shapes = (np.stack([np.asarray(x) for x in out]).astype(float) for out in p.run())
    area = shapes[:, 0] * shapes[:, 1] / (hw[0] * hw[1])
    aspect = shapes[:, 1] / shapes[:, 0]
    assert area.min() >= 0.75 - 0.01 and area.max() <= 1.0 + 1e-6
    assert aspect.min() >= 0.75 - 0.01 and aspect.max() <= 3.0 + 0.01
    assert (anchors >= 0).all() and (anchors + shapes <= np.array(hw) + 1e-6).all()
    assert area.std() > 0.03 and aspect.std() > 0.05  # really random


def test_order_and_sharding_equal_the_builtin_loader(tmp_path: Path) -> None:
    ds = load_dataset(_box_scene(tmp_path / "scene", count=10), "train")
    for rank in (0, 1):
        dali = _loader(ds, "val", batch_size=2, seed=3, num_replicas=2, rank=rank)
        ours = build_loader(ds, SSDValTransform(S), batch_size=2, shuffle=True, seed=3, num_workers=0,
                            num_replicas=2, rank=rank)  # fmt: skip
        for epoch in (0, 1):
            dali.set_epoch(epoch)
            ours.set_epoch(epoch)
            a = [b["image_ids"].tolist() for b in dali]
            b = [b["image_ids"].tolist() for b in ours]
            assert a == b and len(a) == 2


def test_val_batches_match_the_builtin_loader(tmp_path: Path) -> None:
    ds = load_dataset(_box_scene(tmp_path / "scene", count=5), "train")
    dali = _loader(ds, "val", batch_size=2, seed=0)
    ours = build_loader(ds, SSDValTransform(S), batch_size=2, shuffle=True, seed=0, num_workers=0)
    for a, b in zip(dali, ours, strict=True):
        assert a["image_ids"].tolist() == b["image_ids"].tolist()
        assert a["orig_sizes"].tolist() == b["orig_sizes"].tolist()
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-5)
        assert torch.equal(a["labels"], b["labels"])
        # two resize kernels (DALI's and torchvision's antialiased bilinear): close, not equal
        assert (a["images"] - b["images"]).abs().mean() < 0.05


def test_mid_epoch_resume_gives_the_same_batches(tmp_path: Path) -> None:
    ds = load_dataset(_box_scene(tmp_path / "scene", count=12), "train")
    straight = _loader(ds, "ssd", batch_size=3, seed=9)
    straight.set_epoch(1)
    full = [b for b in straight]
    part = _loader(ds, "ssd", batch_size=3, seed=9)
    part.set_epoch(1)
    it = iter(part)
    next(it), next(it)
    state = part.state_dict()
    it.close()
    resumed = _loader(ds, "ssd", batch_size=3, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    rest = list(resumed)
    assert len(rest) == 2
    for a, b in zip(full[2:], rest):
        assert a["image_ids"].tolist() == b["image_ids"].tolist()
        torch.testing.assert_close(a["images"], b["images"], rtol=0, atol=0)
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=0)


def test_bad_image_is_named_or_skipped(tmp_path: Path) -> None:
    root = _box_scene(tmp_path / "scene", count=6)
    bad = root / "train" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    ds = load_dataset(root, "train")
    with pytest.raises(BadImageError, match=r"3\.jpg"):
        list(_loader(ds, "val", batch_size=3, seed=0))
    ds.on_bad_image = "skip"
    loader = _loader(ds, "val", batch_size=3, seed=0)
    with pytest.warns(UserWarning, match=r"3\.jpg"):
        ids = [i for b in loader for i in b["image_ids"].tolist()]
    assert sorted(ids) == [1, 2, 3, 5, 6] and loader.num_skipped == 1


def test_train_with_dali_resumes_exactly(tmp_path: Path) -> None:
    from test_train_resume import STEP_SCHEDULE, assert_same_training_state

    from singleshot.checkpoint import load_checkpoint
    from singleshot.engine.trainer import train

    extra = {**STEP_SCHEDULE, "data.backend": "dali"}
    straight = train(tiny_config(tmp_path / "straight", **extra))
    assert straight.status == "finished" and straight.step == 6
    train(tiny_config(tmp_path / "resumed", **extra, **{"train.max_steps": 3}))
    mid = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert mid["sampler"]["start"] == 12 and mid["sampler"]["dali"]  # mid-epoch, with DALI's generator state
    second = train(tiny_config(tmp_path / "resumed", **extra))
    assert second.step == 6
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert_same_training_state(a, b)
    # and evaluation reads through DALI too
    from singleshot.cli import main

    data = tiny_config(tmp_path).data.train
    code = main(["eval", "--checkpoint", str(tmp_path / "straight" / "checkpoints" / "last.pt"), "--data", data,
                 "--backend", "dali", "--batch-size", "4", "--results", str(tmp_path / "results.json")])  # fmt: skip
    assert code == 0 and (tmp_path / "results.json").exists()
