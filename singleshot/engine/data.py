"""The engine's view of the data layer: datasets and loaders built from a :class:`DataConfig`.

``"synth"`` names the built-in synthetic COCO set (generated once into the cache by :mod:`singleshot.data.synth`);
anything else is a dataset path read by the data layer (COCO JSON/folder, VOC, YOLO).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from singleshot.data.base import DetectionDataset
from singleshot.data.formats import load_dataset
from singleshot.data.loader import DetectionLoader, build_loader, seed_worker
from singleshot.data.transforms import AreaCropTrainTransform, SSDTrainTransform, SSDValTransform
from singleshot.engine.config import ConfigError, DataConfig


@dataclass
class DataBundle:
    train: DetectionDataset
    val: DetectionDataset | None
    train_loader: DetectionLoader
    val_loader: DetectionLoader | None


def open_dataset(source: str, split: str) -> DetectionDataset:
    """``source`` = "synth" (the built-in synthetic set) or a dataset path; ``split`` = "train" | "val"."""
    return load_dataset(source, split=split)


def _open_configured(key: str, source: str, split: str) -> DetectionDataset:
    """:func:`open_dataset` for a config key; a path that does not exist is a ConfigError naming the key."""
    if source != "synth" and not Path(source).exists():
        raise ConfigError(
            f"{key}={source!r}: no such file or directory; give a dataset path (a COCO root or JSON, a VOC or YOLO "
            "folder) or 'synth' for the built-in synthetic set"
        )
    return open_dataset(source, split)


def _worker_init(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: workers ignore it so that the trainer alone handles the interrupt
    # (saves a checkpoint and shuts the loader down) instead of dying mid-batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed_worker(worker_id)


def build_data(
    cfg: DataConfig,
    *,
    image_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    seed: int,
    rank: int,
    world_size: int,
    defer_photometric: bool,
    pin_memory: bool,
) -> DataBundle:
    """Train and validation datasets and loaders (train: shuffled, sharded, drop_last; val: in order, sharded)."""
    train = _open_configured("data.train", cfg.train, "train")
    val = _open_configured("data.val", cfg.val, "val") if cfg.val else None
    if val is not None and cfg.val_limit is not None:
        val = val.head(cfg.val_limit)
    if len(train) < cfg.batch_size * world_size:
        raise ConfigError(
            f"training set {train.root} has {len(train)} images, fewer than one global batch "
            f"({cfg.batch_size} x {world_size} processes); lower data.batch_size"
        )
    common: dict[str, Any] = {
        "num_workers": cfg.num_workers,
        "pin_memory": pin_memory,
        "rank": rank,
        "num_replicas": world_size,
        "seed": seed,
    }
    if cfg.augment == "ssd":
        train_tf: Any = SSDTrainTransform(
            image_size, crop_max_trials=cfg.max_samples, mean=mean, std=std, defer_photometric=defer_photometric
        )
    elif cfg.augment == "area_crop":
        train_tf = AreaCropTrainTransform(image_size, mean=mean, std=std, defer_photometric=defer_photometric)
    elif cfg.augment == "none":
        train_tf = SSDValTransform(image_size, mean=mean, std=std, defer_photometric=defer_photometric)
    else:
        raise ConfigError(f"data.augment must be 'ssd', 'area_crop' or 'none', got {cfg.augment!r}")
    train_loader = build_loader(train, train_tf, batch_size=cfg.batch_size, shuffle=True, drop_last=True, **common)
    val_loader = None
    if val is not None:
        val_tf = SSDValTransform(image_size, mean=mean, std=std, defer_photometric=defer_photometric)
        val_loader = build_loader(val, val_tf, batch_size=cfg.val_batch_size, shuffle=False, drop_last=False, **common)
    for loader in (train_loader, val_loader):
        if loader is not None and loader.loader.num_workers > 0:
            loader.loader.worker_init_fn = _worker_init
    return DataBundle(train, val, train_loader, val_loader)
