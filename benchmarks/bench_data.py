"""Input-pipeline throughput: decode + full SSD train augmentation + batching, 640x480 JPEGs -> 300x300.

Compares, in one run and on the same images:

* ``singleshot``: our pipeline (``SSDTrainTransform`` + ``collate_detection``), photometric work on the CPU;
* ``singleshot (deferred)``: the same with colour jitter + normalization left for the GPU (CPU share only);
* ``torchvision v2``: a plain ``torchvision.transforms.v2`` chain (RandomIoUCrop, RandomHorizontalFlip, Resize,
  ColorJitter(0.125, 0.5, 0.5, 0.05), ToDtype, Normalize, SanitizeBoundingBoxes) with the same decoder and collate;
* ``DALI (CPU backend)``: ``data.backend=dali`` (:class:`singleshot.data.dali.DaliLoader`, the same records and
  recipe) on DALI's CPU backend, when NVIDIA DALI is installed.

"Per core" runs in this process with one thread (DALI: one worker thread; its executor thread only hands batches
over); "total" runs a DataLoader with one worker per CPU (DALI: that many threads).

    PYTHONPATH=. python benchmarks/bench_data.py [--images 64] [--batches 8] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from singleshot.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SSDTrainTransform,
    TransformedDataset,
    build_loader,
    collate_detection,
    load_dataset,
    read_image,
)
from singleshot.data.base import DetectionDataset
from singleshot.data.dali import DaliLoader, dali_missing_reason
from singleshot.data.synth import generate


def make_images(out: Path, count: int) -> Path:
    """``count`` 640x480 photo-like JPEGs (synthetic scenes plus sensor-like noise, quality 90) in COCO format."""
    generate(out, num_train=count, num_val=0, seed=123, image_size=(640, 480))
    rng = np.random.default_rng(0)
    for p in sorted((out / "train").glob("*.jpg")):
        arr = np.asarray(Image.open(p)).astype(np.int16) + rng.normal(0, 10, (480, 640, 3)).astype(np.int16)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p, quality=90)
    return out


class V2Dataset(Dataset):
    """The same records through a plain torchvision.transforms.v2 chain (tv_tensors carry the boxes)."""

    def __init__(self, base: DetectionDataset, size: int) -> None:
        self.base = base
        self.tf = v2.Compose([
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(),
            v2.Resize((size, size), antialias=True),
            v2.ColorJitter(0.125, 0.5, 0.5, 0.05),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            v2.SanitizeBoundingBoxes(),
        ])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Any) -> tuple[Tensor, dict[str, Any]]:
        index = key[0] if isinstance(key, tuple) else key
        image, target = self.base[index]
        h, w = target["orig_size"]
        img = tv_tensors.Image(image)
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        img, out = self.tf(img, {"boxes": boxes, "labels": target["labels"]})
        out["boxes"] = out["boxes"].as_subclass(Tensor) / torch.tensor([img.shape[-1], img.shape[-2]] * 2)
        return img.as_subclass(Tensor), {**target, **out}


class _DecodeOnly(Dataset):
    """Reads and decodes only: the ceiling any pipeline built on this decoder can reach."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Any) -> Tensor:
        return read_image(self.paths[key[0] % len(self.paths)])


def time_inline(dataset: Dataset, batch_size: int, batches: int, collate: Any = collate_detection) -> float:
    """img/s in this process (one thread): index, transform and collate ``batches`` batches after one warm-up."""
    n = len(dataset)
    keys = [(i % n, 1000 + i) for i in range(batch_size * (batches + 1))]
    collate([dataset[k] for k in keys[:batch_size]])
    start = time.perf_counter()
    for b in range(1, batches + 1):
        collate([dataset[k] for k in keys[b * batch_size : (b + 1) * batch_size]])
    return batch_size * batches / (time.perf_counter() - start)


def time_loader(loader: Any, batches: int) -> float:
    """img/s through a multi-worker loader, after the first batch (worker start-up) is excluded."""
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        count += len(next(it)["image_ids"])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is reported")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_images(Path(tmp) / "bench", args.images)
        ds = load_dataset(root, "train")
        kb = np.mean([p.stat().st_size for p in (root / "train").glob("*.jpg")]) / 1024
        print(f"{len(ds)} JPEGs 640x480, mean {kb:.0f} KiB; batch {args.batch_size}; output {args.size}x{args.size}; "
              f"torch {torch.__version__}, 1 thread per process, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs")
        # what build_loader runs: the transform draws the colours, the collate applies them into the batch (CPU)
        ours = TransformedDataset(ds, SSDTrainTransform(args.size))
        pipelines = {
            "singleshot": (ours, collate_detection),
            "singleshot (GPU colour)": (ours, functools.partial(collate_detection, photometric_on_device=True)),
            "torchvision v2": (V2Dataset(ds, args.size), collate_detection),
        }
        paths = [ds.image_path(i) for i in range(len(ds))]
        pipelines["JPEG decode alone"] = (_DecodeOnly(paths), lambda samples: None)
        # the machine may be shared: interleave the pipelines over several rounds and keep each one's best round
        per_core = dict.fromkeys(pipelines, 0.0)
        for _ in range(args.rounds):
            for name, (d, c) in pipelines.items():
                per_core[name] = max(per_core[name], time_inline(d, args.batch_size, args.batches, c))
        dali_reason = dali_missing_reason()
        if dali_reason is None:
            # DALI runs its own threads; interleave its rounds with ours too
            for _ in range(args.rounds):
                loader = DaliLoader(ds, mode="ssd", image_size=args.size, batch_size=args.batch_size, shuffle=True,
                                    num_threads=1)
                rate = time_loader(_cycle(loader), args.batches)
                per_core["DALI (CPU backend)"] = max(per_core.get("DALI (CPU backend)", 0.0), rate)
        else:
            print(f"DALI row left out: {dali_reason}")
        total = {}
        if dali_reason is None:
            loader = DaliLoader(ds, mode="ssd", image_size=args.size, batch_size=args.batch_size, shuffle=True,
                                num_threads=args.workers)
            total["DALI (CPU backend)"] = time_loader(_cycle(loader), args.batches * args.rounds)
        for name in ("singleshot", "torchvision v2"):
            if name == "singleshot":
                loader = build_loader(ds, SSDTrainTransform(args.size), batch_size=args.batch_size, shuffle=True,
                                      num_workers=args.workers, pin_memory=False)
            else:
                loader = DataLoader(pipelines[name][0], batch_size=args.batch_size, shuffle=True,
                                    num_workers=args.workers, collate_fn=collate_detection, persistent_workers=True,
                                    worker_init_fn=lambda _: torch.set_num_threads(1))
            total[name] = time_loader(_cycle(loader), args.batches * args.rounds)
        print(f"{'pipeline':24s} {'img/s per core':>15s} {f'img/s total ({args.workers} workers)':>26s}")
        for name, rate in per_core.items():
            tot = f"{total[name]:26.0f}" if name in total else f"{'-':>26s}"
            print(f"{name:24s} {rate:15.0f} {tot}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        print(f"ratio singleshot / v2: per core {per_core['singleshot'] / per_core['torchvision v2']:.2f}x, "
              f"total {total['singleshot'] / total['torchvision v2']:.2f}x")
        if "DALI (CPU backend)" in total:
            print(f"ratio singleshot / DALI (CPU backend): per core "
                  f"{per_core['singleshot'] / per_core['DALI (CPU backend)']:.2f}x, "
                  f"total {total['singleshot'] / total['DALI (CPU backend)']:.2f}x")


def _cycle(loader: Any) -> Any:
    """Endless batches over epochs (the benchmark set is small)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


if __name__ == "__main__":
    main()
