"""The engine's view of the data layer: datasets and loaders built from a :class:`DataConfig`.

``"synth"`` names the built-in synthetic COCO set (generated once into the cache by :mod:`singleshot.data.synth`);
anything else is a dataset path read by the data layer (COCO JSON/folder, VOC, YOLO).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from singleshot.accelerator import capabilities, synchronize
from singleshot.data.base import DetectionDataset
from singleshot.data.errors import SplitNotFoundError
from singleshot.data.formats import dataset_splits, load_dataset
from singleshot.data.loader import build_loader, prefetch_depth
from singleshot.data.transforms import AreaCropTrainTransform, SSDTrainTransform, SSDValTransform
from singleshot.engine.config import ConfigError, DataConfig
from singleshot.engine.schedule import EpochLengths, epoch_steps


@dataclass
class DataBundle:
    train: DetectionDataset
    val: DetectionDataset | None
    train_loader: Any  # DetectionLoader | DaliLoader (same interface)
    val_loader: Any
    backend: str = "builtin"  # the input pipeline in use: "builtin" | "device" | "dali"
    backend_note: str = ""  # why, when data.backend=auto chose it
    epochs: EpochLengths | None = None  # steps per training epoch (data.epoch_length, data.last_batch)


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

    ``cfg.backend``: "builtin" (workers decode and augment), "device" (workers read JPEG bytes and draw the
    augmentation; decoding and pixel work run batched on ``device``), "dali" (decoded with nvJPEG on CUDA) or "auto"
    (builtin on the CPU; on CUDA the one that delivers training batches fastest in steady state, measured here).
    """
    train, val = _open_datasets(cfg, world_size, rank == 0)
    device = device or torch.device("cpu")
    common: dict[str, Any] = {
        "num_workers": cfg.num_workers, "rank": rank, "num_replicas": world_size, "seed": seed, "mean": mean,
        "std": std, "device": device, "channels_last": channels_last, "worker_init": _ignore_interrupts,
    }  # fmt: skip
    epochs = epoch_lengths(cfg, len(train), train.stats.get("images_skipped_empty", 0), world_size)
    pad: dict[str, Any] = {"pad_last_batch": cfg.last_batch == "pad"}  # training only
    if epochs.kind == "dali_counter":
        pad["epoch_batches"] = epochs.steps
    train_tf = train_transform(cfg, image_size)
    dali_kw: dict[str, Any] = {
        "image_size": image_size, "seed": seed, "num_replicas": world_size, "rank": rank, "mean": mean, "std": std,
        "num_threads": cfg.num_workers, "device": device, "crop_attempts": cfg.crop_attempts,
        "channels_last": channels_last,
    }  # fmt: skip
    dali_mode = {"ssd": "ssd", "area_crop": "area_crop", "none": "val"}.get(cfg.augment)  # "light": none in DALI
    backend, note = cfg.backend, ""
    if backend == "dali" and (pad["pad_last_batch"] or "epoch_batches" in pad):
        raise ConfigError("data.backend=dali has neither data.last_batch=pad nor data.epoch_length=dali_counter (its "
                          "reader makes its own epochs, which the presets' exact counts need); use "
                          "data.backend=builtin|device, or give data.last_batch=drop data.epoch_length=dataset to "
                          "read with DALI")  # fmt: skip
    if backend == "dali" and dali_mode is None:
        raise ConfigError(f"data.backend=dali has no pipeline for data.augment={cfg.augment}; use data.backend=builtin "
                          "or data.augment=ssd|area_crop|none")
    if backend == "auto":
        backend = "builtin"
        if capabilities(device).dali:  # a GPU that decodes JPEGs: measure what feeds it fastest
            from singleshot.data.dali import dali_missing_reason

            candidates: dict[str, Any] = {
                name: (lambda on_device=on_device: build_loader(
                    train, train_tf, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                    decode_on_device=on_device, **pad, **common))
                for name, on_device in (("builtin", False), ("device", True))
            }  # fmt: skip
            if dali_mode is not None and dali_missing_reason() is None and not any(pad.values()):
                candidates["dali"] = lambda: _dali(train, dali_mode, cfg.batch_size, True, dali_kw)
            backend, note = _choose_on_cuda(candidates)

    def val_loader(chosen: str) -> Any:  # evaluation reads the way training does
        if val is None:
            return None
        return eval_loader(val, chosen, image_size=image_size, batch_size=cfg.val_batch_size, workers=cfg.num_workers,
                           mean=mean, std=std, device=device, channels_last=channels_last, rank=rank,
                           world_size=world_size, seed=seed)

    if backend == "dali":
        train_loader: Any = _dali(train, dali_mode, cfg.batch_size, True, dali_kw)
        return DataBundle(train, val, train_loader, val_loader(backend), "dali", note, epochs)
    # "builtin" or "device" (decoding and pixel work on the training device); evaluation reads the same way
    common["decode_on_device"] = backend == "device"
    train_loader = build_loader(train, train_tf, batch_size=cfg.batch_size, shuffle=True, drop_last=True, **pad,
                                **common)  # fmt: skip
    return DataBundle(train, val, train_loader, val_loader(backend), backend, note, epochs)


def epoch_lengths(cfg: DataConfig, images: int, skipped_empty: int, world_size: int) -> EpochLengths:
    """Steps per training epoch as ``data.epoch_length`` and ``data.last_batch`` count them, for ``images``
    training images (``skipped_empty``: images of the annotation file left out for having no box)."""
    if cfg.epoch_length == "dali_counter":
        return EpochLengths.dali_counter((images + skipped_empty) / world_size, cfg.batch_size)
    return EpochLengths(epoch_steps(images, cfg.batch_size * world_size, cfg.last_batch))


def eval_loader(
    dataset: DetectionDataset,
    backend: str,
    *,
    image_size: int,
    batch_size: int,
    workers: int | None,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: torch.device,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> Any:
    """The evaluation loader (training's and ``singleshot eval``'s): ``dataset`` in order, the last batch kept,
    sharded over ``world_size`` ranks; batches resized to ``image_size``, normalized and on ``device``.

    ``backend``: "builtin" (loader workers decode and resize), "device" (workers read the bytes; decoding and resizing
    run batched on ``device``) or "dali" (``workers`` DALI threads). ``workers`` None: the data layer's default.
    """
    if backend == "dali":
        kw = {"image_size": image_size, "seed": seed, "num_replicas": world_size, "rank": rank, "mean": mean,
              "std": std, "num_threads": workers or 1, "device": device, "channels_last": channels_last}
        return _dali(dataset, "val", batch_size, False, kw)
    return build_loader(
        dataset, SSDValTransform(image_size), batch_size=batch_size, shuffle=False, drop_last=False,
        num_workers=workers, rank=rank, num_replicas=world_size, seed=seed, mean=mean, std=std, device=device,
        channels_last=channels_last, worker_init=_ignore_interrupts, decode_on_device=backend == "device",
    )  # fmt: skip


def _open_datasets(
    cfg: DataConfig, world_size: int, main: bool = True
) -> tuple[DetectionDataset, DetectionDataset | None]:
    """The training set (at least one global batch) and the validation set (cut to ``data.val_limit``), if any.

    A dataset given as ``data.train`` with ``data.val`` left at the built-in set is validated on its own val split
    (said once, by the ``main`` process): a user's classes are never scored on the synthetic ones.
    """
    train = _open_configured("data.train", cfg.train, "train", cfg)
    follows = cfg.train != "synth" and cfg.val == "synth"
    if follows and not dataset_splits(cfg.train) and Path(cfg.train).is_file():
        raise ConfigError(f"data.train={cfg.train!r} is one COCO JSON file, with no val split of its own; give "
                          "data.val=PATH (the validation set), or data.val=null to train without evaluation")
    source = cfg.train if follows else cfg.val
    try:
        val = _open_configured("data.val", source, "val", cfg) if source else None
    except SplitNotFoundError as exc:
        has = dataset_splits(source)
        given = f"data.train={source!r} (data.val follows it)" if follows else f"data.val={source!r}"
        raise ConfigError(
            f"{given}: the dataset has no val split ({exc}; it has: {', '.join(has) or 'none found'}); give "
            "data.val=PATH (a dataset or its val folder), or data.val=null to train without evaluation"
        ) from None
    if follows and main:
        print(f"data.val: using the val split of {cfg.train} ({len(val)} images)")
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
        return SSDTrainTransform(image_size, crop_attempts=cfg.crop_attempts)
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


class LoaderTooShortError(ValueError):
    """One pass of the loader has fewer batches than a steady-state measurement needs."""

    def __init__(self, need: int, have: int, depth: int, timed: int) -> None:
        self.need, self.have = need, have
        super().__init__(
            f"a steady-state throughput measurement needs {need} batches in one pass of the loader ({depth} that can "
            f"be prefetched + 1 start-up batch + {timed} timed), but the loader has {have}; use a larger dataset or "
            "a smaller batch size"
        )


def steady_state_iterator(loader: Iterable[dict[str, Any]], timed: int) -> Iterator[dict[str, Any]]:
    """An iterator over ``loader`` that has consumed every batch that could have been made ahead of time: the
    start-up batch and the :func:`~singleshot.data.loader.prefetch_depth` behind it. The next ``timed`` batches it
    yields are made while the caller waits for them, so timing those measures the loader's steady-state rate.

    Raises:
        LoaderTooShortError: (a ValueError) ``loader`` has fewer than ``prefetch_depth + 1 + timed`` batches in one
            pass; the message says how many it needs and how many there are.
    """
    if timed < 1:
        raise ValueError(f"timed must be at least 1, got {timed}")
    depth = prefetch_depth(loader)
    need = depth + 1 + timed
    have = len(loader) if isinstance(loader, Sized) else None
    if have is not None and have < need:
        raise LoaderTooShortError(need, have, depth, timed)
    it = iter(loader)
    for got in range(depth + 1):
        if next(it, None) is None:
            raise LoaderTooShortError(need, got, depth, timed)
    return it


def batches_per_second(loader: Iterable[dict[str, Any]], timed: int = 20) -> float:
    """The loader's steady-state rate: batches per second over ``timed`` batches taken after the start-up batch and
    every prefetched batch are consumed (:func:`steady_state_iterator`; raises :class:`LoaderTooShortError`, a
    ValueError, when the loader is too short for that). The device's queue is drained before each clock."""
    it = steady_state_iterator(loader, timed)
    synchronize()
    start = time.perf_counter()
    for got in range(timed):
        if next(it, None) is None:  # an unsized iterable that ended early
            depth = prefetch_depth(loader)
            raise LoaderTooShortError(depth + 1 + timed, depth + 1 + got, depth, timed)
    synchronize()
    elapsed = time.perf_counter() - start
    if hasattr(it, "close"):
        it.close()
    return timed / max(elapsed, 1e-9)


def _choose_on_cuda(candidates: dict[str, Any], timed: int = 20) -> tuple[str, str]:
    """``data.backend=auto`` on CUDA: of ``candidates`` (name -> loader factory; "builtin" first), the one that
    delivers batches fastest in steady state (:func:`batches_per_second`); builtin, saying why, when the training set
    is too small to measure that."""
    rates: dict[str, float] = {}
    for name, factory in candidates.items():
        try:
            rates[name] = batches_per_second(factory(), timed)
        except LoaderTooShortError as exc:
            return "builtin", (f"data.backend=auto: builtin (the training set is too small to measure which loader is "
                               f"faster: {exc.have} batches per epoch for the {name} loader, {exc.need} needed)")
    best = max(rates, key=rates.__getitem__)
    measured = ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
    return best, f"data.backend=auto: {best} (measured batches/s in steady state: {measured})"
