"""The device input path (``data.backend=device``) on CPU tensors: the same boxes, labels, augmentation draws and
pixels as the built-in loader for every recipe transform, exact mid-epoch resume, files that are not plain JPEGs
decoded by the worker, and bad images named and raised or skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_fixtures import coco_dict, make_coco, write_image

from singleshot.data import AreaCropTrainTransform, SSDTrainTransform, SSDValTransform, build_loader, load_dataset
from singleshot.data.base import jpeg_size
from singleshot.data.errors import BadImageError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    data = coco_dict(num_images=12, width=96, height=72)
    data["annotations"] = [
        {"id": i + 1, "image_id": 10 + i, "category_id": 3 if i % 2 else 7, "bbox": [4 + 2 * i, 6, 30, 20 + i]}
        for i in range(12)
    ] + [{"id": 99, "image_id": 10, "category_id": 3, "bbox": [50, 30, 20, 20]}]
    root = make_coco(tmp_path_factory.mktemp("coco"), data)
    # not every file is a plain JPEG: a PNG and a CMYK JPEG are decoded by the worker
    write_image(root / "train" / "img3.jpg", 96, 72, fmt="PNG", seed=3)
    write_image(root / "train" / "img5.jpg", 96, 72, mode="CMYK", seed=5)
    return load_dataset(root, "train")


def _loader(dataset, transform, device_path: bool, **kw):
    return build_loader(dataset, transform, batch_size=4, shuffle=True, num_workers=0, device="cpu",
                        decode_on_device=device_path, **kw)  # fmt: skip


@pytest.mark.parametrize("transform", [SSDTrainTransform(48), AreaCropTrainTransform(48), SSDValTransform(48)],
                         ids=["ssd", "area_crop", "val"])  # fmt: skip
def test_same_batches_as_the_builtin_loader(dataset, transform) -> None:
    for epoch in (0, 1):
        builtin, device = _loader(dataset, transform, False), _loader(dataset, transform, True)
        builtin.set_epoch(epoch)
        device.set_epoch(epoch)
        a, b = list(builtin), list(device)
        assert len(a) == len(b) == 3
        for x, y in zip(a, b):
            for key in ("boxes", "labels", "image_ids", "orig_sizes"):
                assert torch.equal(x[key], y[key]), key  # the same draws: same crops, flips, boxes
            assert y["images"].shape == x["images"].shape and y["images"].dtype == torch.float32
            # same decoder, crop, resize and colour affine; only the channel means are reduced in another order
            torch.testing.assert_close(y["images"], x["images"], atol=1e-4, rtol=1e-4)


def test_exact_mid_epoch_resume(dataset) -> None:
    full = _loader(dataset, SSDTrainTransform(48), True)
    full.set_epoch(2)
    expected = list(full)
    first = _loader(dataset, SSDTrainTransform(48), True)
    first.set_epoch(2)
    it = iter(first)
    next(it)
    state = first.state_dict()
    resumed = _loader(dataset, SSDTrainTransform(48), True)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(expected) - 1
    for x, y in zip(expected[1:], rest):
        assert torch.equal(x["image_ids"], y["image_ids"]) and torch.equal(x["images"], y["images"])
        assert torch.equal(x["boxes"], y["boxes"])


def test_worker_processes_give_the_same_batches(dataset) -> None:
    inline = list(_loader(dataset, SSDTrainTransform(48), True))
    workers = build_loader(dataset, SSDTrainTransform(48), batch_size=4, shuffle=True, num_workers=2, device="cpu",
                           decode_on_device=True, pin_memory=False)  # fmt: skip
    for x, y in zip(inline, workers):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["boxes"], y["boxes"])


def test_jpeg_size_reads_the_header(tmp_path: Path) -> None:
    rgb = write_image(tmp_path / "a.jpg", 40, 30).read_bytes()
    assert jpeg_size(rgb) == (30, 40)
    assert jpeg_size(write_image(tmp_path / "g.jpg", 40, 30, mode="L").read_bytes()) == (30, 40)
    assert jpeg_size(write_image(tmp_path / "c.jpg", 40, 30, mode="CMYK").read_bytes()) is None  # worker decodes
    assert jpeg_size(write_image(tmp_path / "p.png", 40, 30, fmt="PNG").read_bytes()) is None
    assert jpeg_size(rgb[:20]) is None


def _with_bad_file(tmp_path: Path):
    data = coco_dict(num_images=4, width=64, height=48)
    data["annotations"] = [{"id": i + 1, "image_id": 10 + i, "category_id": 7, "bbox": [2, 3, 20, 10]}
                           for i in range(4)]  # fmt: skip
    root = make_coco(tmp_path / "coco", data)
    good = (root / "train" / "img1.jpg").read_bytes()
    # a JPEG whose header (and size) reads fine but that ends before its scan: only decoding finds it
    (root / "train" / "img2.jpg").write_bytes(good[: good.find(b"\xff\xda")])
    return root


def test_bad_jpeg_is_named_or_skipped(tmp_path: Path) -> None:
    root = _with_bad_file(tmp_path)
    raising = build_loader(load_dataset(root, "train"), SSDValTransform(32), batch_size=4, shuffle=False,
                           num_workers=0, decode_on_device=True)  # fmt: skip
    with pytest.raises(BadImageError, match=r"img2\.jpg"):
        list(raising)
    skipping = build_loader(load_dataset(root, "train", on_bad_image="skip"), SSDValTransform(32), batch_size=4,
                            shuffle=False, num_workers=0, decode_on_device=True)  # fmt: skip
    with pytest.warns(UserWarning, match=r"img2\.jpg"):
        (batch,) = list(skipping)
    assert batch["image_ids"].tolist() == [10, 11, 13] and batch["images"].shape == (3, 3, 32, 32)
    assert skipping.num_skipped == 1


def test_transform_without_a_plan_is_refused(dataset) -> None:
    with pytest.raises(TypeError, match="plan"):
        build_loader(dataset, lambda image, target, rng: (image, target), batch_size=2, shuffle=False,
                     num_workers=0, decode_on_device=True)  # fmt: skip


@pytest.mark.gpu
def test_device_path_on_cuda_matches_the_cpu(dataset) -> None:
    cpu, gpu = _loader(dataset, SSDTrainTransform(48), False), build_loader(
        dataset, SSDTrainTransform(48), batch_size=4, shuffle=True, num_workers=2, device="cuda",
        decode_on_device=True, channels_last=True)  # fmt: skip
    for x, y in zip(cpu, gpu):
        assert y["images"].is_cuda and y["images"].is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x["boxes"], y["boxes"].cpu()) and torch.equal(x["labels"], y["labels"].cpu())
        # nvJPEG and the CUDA resize round differently from libjpeg-turbo and the CPU kernel: close, not equal
        assert (y["images"].cpu() - x["images"]).abs().mean() < 0.05


def test_training_through_the_device_path(tmp_path: Path) -> None:
    """``data.backend=device`` trains as the built-in loader does (on a CPU device the batches agree to float
    rounding, so the weights do too), evaluation reads through it, and the run records the path it used."""
    from train_helpers import tiny_config, tiny_dataset

    from singleshot.checkpoint import load_checkpoint
    from singleshot.engine.trainer import Trainer

    weights = {}
    for backend in ("builtin", "device"):
        cfg = tiny_config(tmp_path / backend, **{"data.backend": backend, "train.max_steps": 3,
                                                 "data.val": str(tiny_dataset())})  # fmt: skip
        trainer = Trainer(cfg)
        result = trainer.run()
        assert result.status == "finished" and trainer.parts.data.backend == backend
        assert result.final_stats is not None  # evaluated through the same path
        finisher = type(trainer.parts.data.val_loader.finisher).__name__ if trainer.parts.data.val_loader.finisher \
            else None  # fmt: skip
        assert (finisher == "DeviceDecode") == (backend == "device")
        weights[backend] = load_checkpoint(tmp_path / backend / "checkpoints" / "last.pt")["state_dict"]
    for key, value in weights["builtin"].items():
        if value.is_floating_point():
            torch.testing.assert_close(weights["device"][key], value, atol=1e-4, rtol=1e-4)


def test_resume_through_the_device_path_and_eval_cli(tmp_path: Path) -> None:
    """A run stopped mid-epoch and resumed through the device path ends where the uninterrupted run does; the eval
    command reads through it too (``--backend device``)."""
    import json

    from test_train_resume import STEP_SCHEDULE, assert_same_training_state
    from train_helpers import tiny_config

    from singleshot.checkpoint import load_checkpoint
    from singleshot.cli import main
    from singleshot.engine.trainer import train

    extra = {**STEP_SCHEDULE, "data.backend": "device"}
    straight = train(tiny_config(tmp_path / "straight", **extra))
    assert straight.status == "finished" and straight.step == 6
    train(tiny_config(tmp_path / "resumed", **extra, **{"train.max_steps": 3}))
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["sampler"]["start"] == 12  # mid-epoch
    assert train(tiny_config(tmp_path / "resumed", **extra)).step == 6
    assert_same_training_state(load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt"),
                               load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt"))  # fmt: skip
    data, ckpt = tiny_config(tmp_path).data.train, str(tmp_path / "straight" / "checkpoints" / "last.pt")
    stats = {}
    for backend in ("builtin", "device"):
        out = tmp_path / f"{backend}.json"
        assert main(["eval", "--checkpoint", ckpt, "--data", data, "--backend", backend, "--batch-size", "4",
                     "--workers", "0", "--results", str(out)]) == 0  # fmt: skip
        stats[backend] = json.loads(out.read_text())
    # the same detections to float rounding (the pixels agree to 1e-4 on a CPU device)
    assert len(stats["device"]) == len(stats["builtin"]) > 0
    for key in ("image_id", "category_id"):
        assert sorted(d[key] for d in stats["device"]) == sorted(d[key] for d in stats["builtin"])
    top = [max(d["score"] for d in stats[b]) for b in ("device", "builtin")]
    assert abs(top[0] - top[1]) < 1e-3
