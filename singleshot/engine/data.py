"""The engine's view of the data layer: datasets and loaders built from a :class:`DataConfig`.

``"synth"`` names the built-in synthetic COCO set (generated once into the cache by :mod:`singleshot.data.synth`);
anything else is a dataset path read by the data layer (COCO JSON/folder, VOC, YOLO).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from singleshot.accelerator import capabilities, synchronize
from singleshot.data.base import DetectionDataset
from singleshot.data.formats import load_dataset
from singleshot.data.loader import build_loader
from singleshot.data.transforms import AreaCropTrainTransform, SSDTrainTransform, SSDValTransform
from singleshot.engine.config import ConfigError, DataConfig


@dataclass
class DataBundle:
    train: DetectionDataset
    val: DetectionDataset | None
    train_loader: Any  # DetectionLoader | DaliLoader (same interface)
    val_loader: Any
    backend: str = "builtin"  # the input pipeline in use: "builtin" | "dali"
    backend_note: str = ""  # why, when data.backend=auto chose it


def open_dataset(
    source: str,
    split: str,
    *,
    image_dir: str | None = None,
    on_bad_image: str = "raise",
    image_dir_key: str = "--images",
    crowd: str = "drop",
) -> DetectionDataset:
    """``source`` = "synth" (the built-in synthetic set) or a dataset path; ``split`` = "train" | "val".

    ``image_dir``: the image folder of a COCO JSON whose images live elsewhere; ``image_dir_key`` names the setting
    that gives it, for the error when the images are not found. ``crowd``: COCO ``iscrowd`` boxes "drop" | "keep".
    """
    return load_dataset(source, split=split, image_dir=image_dir, on_bad_image=on_bad_image,
                        image_dir_key=image_dir_key, crowd=crowd)


def _open_configured(key: str, source: str, split: str, cfg: DataConfig) -> DetectionDataset:
    """:func:`open_dataset` for a config key; a path that does not exist is a ConfigError naming the key."""
    if source != "synth" and not Path(source).exists():
        raise ConfigError(
            f"{key}={source!r}: no such file or directory; give a dataset path (a COCO root or JSON, a VOC or YOLO "
            "folder, an Ultralytics data.yaml) or 'synth' for the built-in synthetic set"
        )
    images_key = f"{key}_images"  # data.train_images / data.val_images
    image_dir = getattr(cfg, images_key.split(".")[1])
    if image_dir is not None and not Path(image_dir).is_dir():
        raise ConfigError(f"{images_key}={image_dir!r}: no such folder")
    return open_dataset(
        source, split, image_dir=image_dir, on_bad_image=cfg.on_bad_image, image_dir_key=images_key, crowd=cfg.crowd
    )


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: workers ignore it so that the trainer alone handles the interrupt
    # (saves a checkpoint and shuts the loader down) instead of dying mid-batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_data(
    cfg: DataConfig,
    *,
    image_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    seed: int,
    rank: int,
    world_size: int,
    device: torch.device | None = None,
    channels_last: bool = False,
) -> DataBundle:
    """Train and validation datasets and loaders (train: shuffled, sharded, drop_last; val: in order, sharded).

    Batches come out on ``device`` (default: the CPU), normalized, images channels-last if ``channels_last``.

    ``cfg.backend``: "builtin", "dali" (batches come out on ``device``, decoded with nvJPEG on CUDA) or "auto"
    (builtin on CPU; on CUDA with DALI installed, the one that delivers training batches faster, measured here).
    """
    train, val = _open_datasets(cfg, world_size)
    device = device or torch.device("cpu")
    common: dict[str, Any] = {
        "num_workers": cfg.num_workers, "rank": rank, "num_replicas": world_size, "seed": seed, "mean": mean,
        "std": std, "device": device, "channels_last": channels_last, "worker_init": _ignore_interrupts,
    }  # fmt: skip
    train_tf = train_transform(cfg, image_size)
    dali_kw: dict[str, Any] = {
        "image_size": image_size, "seed": seed, "num_replicas": world_size, "rank": rank, "mean": mean, "std": std,
        "num_threads": cfg.num_workers, "device": device, "crop_attempts": cfg.max_samples,
        "channels_last": channels_last,
    }  # fmt: skip
    dali_mode = {"ssd": "ssd", "area_crop": "area_crop", "none": "val"}.get(cfg.augment)  # "light": none in DALI
    backend, note = cfg.backend, ""
    if backend == "dali" and dali_mode is None:
        raise ConfigError(f"data.backend=dali has no pipeline for data.augment={cfg.augment}; use data.backend=builtin "
                          "or data.augment=ssd|area_crop|none")
    if backend == "auto":
        backend = "builtin"
        if capabilities(device).dali and dali_mode is not None:
            backend, note = _choose_on_cuda(
                lambda: build_loader(train, train_tf, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                     **common),
                lambda: _dali(train, dali_mode, cfg.batch_size, True, dali_kw),
            )  # fmt: skip
    if backend == "dali":
        train_loader: Any = _dali(train, dali_mode, cfg.batch_size, True, dali_kw)
        val_loader = _dali(val, "val", cfg.val_batch_size, False, dali_kw) if val is not None else None
        return DataBundle(train, val, train_loader, val_loader, "dali", note)
    train_loader = build_loader(train, train_tf, batch_size=cfg.batch_size, shuffle=True, drop_last=True, **common)
    val_loader = None
    if val is not None:
        val_loader = build_loader(val, SSDValTransform(image_size), batch_size=cfg.val_batch_size, shuffle=False,
                                  drop_last=False, **common)
    return DataBundle(train, val, train_loader, val_loader, "builtin", note)


def _open_datasets(cfg: DataConfig, world_size: int) -> tuple[DetectionDataset, DetectionDataset | None]:
    """The training set (at least one global batch) and the validation set (cut to ``data.val_limit``), if any."""
    train = _open_configured("data.train", cfg.train, "train", cfg)
    val = _open_configured("data.val", cfg.val, "val", cfg) if cfg.val else None
    if val is not None and cfg.val_limit is not None:
        val = val.head(cfg.val_limit)
    if len(train) < cfg.batch_size * world_size:
        raise ConfigError(
            f"training set {train.root} has {len(train)} images, fewer than one global batch "
            f"({cfg.batch_size} x {world_size} processes); lower data.batch_size"
        )
    return train, val


def train_transform(cfg: DataConfig, image_size: int) -> Any:
    """The training augmentation ``data.augment`` names (a ``Literal``: the config checker admits nothing else)."""
    if cfg.augment == "ssd":
        return SSDTrainTransform(image_size, crop_max_trials=cfg.max_samples)
    if cfg.augment == "area_crop":
        return AreaCropTrainTransform(image_size)
    if cfg.augment == "light":
        return SSDTrainTransform(image_size, crop=False)
    return SSDValTransform(image_size)  # "none"


def _dali(dataset: DetectionDataset, mode: str, batch_size: int, train: bool, kw: dict[str, Any]) -> Any:
    from singleshot.data.dali import DaliLoader, dali_missing_reason

    reason = dali_missing_reason()
    if reason is not None:
        raise ConfigError(f"data.backend=dali: {reason}")
    return DaliLoader(dataset, mode=mode, batch_size=batch_size, shuffle=train, drop_last=train, **kw)


def batches_per_second(loader: Iterable[dict[str, Any]], batches: int = 4) -> float:
    """Batches per second after the first (start-up) batch; the device's queue is drained before each clock."""
    it = iter(loader)
    next(it)
    synchronize()
    start, done = time.perf_counter(), 0
    for _ in range(batches):
        if next(it, None) is None:
            break
        done += 1
    synchronize()
    if hasattr(it, "close"):
        it.close()
    return done / max(time.perf_counter() - start, 1e-9)


def _choose_on_cuda(builtin: Any, dali: Any) -> tuple[str, str]:
    """``data.backend=auto`` on CUDA: DALI when installed and it delivers batches faster than the built-in loader."""
    from singleshot.data.dali import dali_missing_reason

    reason = dali_missing_reason()
    if reason is not None:
        return "builtin", "data.backend=auto: builtin (DALI not installed)"
    rates = {"builtin": batches_per_second(builtin()), "dali": batches_per_second(dali())}
    best = max(rates, key=rates.__getitem__)
    return best, (f"data.backend=auto: {best} (measured {rates['builtin']:.1f} builtin vs {rates['dali']:.1f} "
                  "DALI batches/s)")
