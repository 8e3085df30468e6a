"""The training parts, built in one place: :func:`build_training` turns a :class:`TrainConfig` into a
:class:`TrainingParts` (data, model, box modules, optimization, the step), restored from a checkpoint on resume.

The :class:`~singleshot.engine.trainer.Trainer` owns the run (folder, lock, signals, hooks, the loop) and reads
everything it trains with from this one object; tests and tools can build the same parts without running a loop.
Order matters and is kept here: the data first (the model's classes come from it), then the model (seeded, so every
rank starts from the same weights), the box modules, the optimization objects, the resumed state, and the step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from singleshot.accelerator import use_channels_last
from singleshot.box.anchors import default_boxes
from singleshot.box.factory import build_encoder, build_loss
from singleshot.engine import distributed as D
from singleshot.engine.config import ConfigError, TrainConfig
from singleshot.engine.data import DataBundle, build_data
from singleshot.engine.ema import ModelEMA
from singleshot.engine.optim import build_optimizer
from singleshot.engine.runtime import SectionTimer
from singleshot.engine.schedule import (
    EpochLengths,
    LRScheduler,
    WarmupSchedule,
    build_schedule,
    epoch_steps,
    scaled_lr,
)
from singleshot.engine.step import TrainStep
from singleshot.evaluation import category_ids_by_name
from singleshot.inference.core import InferenceCore
from singleshot.interop.weights import load_weights
from singleshot.models import build_architecture, get_spec
from singleshot.models.backbones import freeze_batchnorm, load_backbone_weights
from singleshot.models.spec import DetectorSpec
from singleshot.precision import autocast


@dataclass
class TrainingParts:
    """Everything a training loop steps, evaluates and saves."""

    data: DataBundle
    classes: list[str]  # the model's class names (the training set's; label k + 1 = classes[k], 0 = background)
    label_to_category_id: dict[int, int]  # training labels -> the training set's category ids
    val_label_to_category_id: dict[int, int] | None  # training labels -> the validation set's ids (by name)
    channels_last: bool
    model: torch.nn.Module  # the module whose weights are stepped (unwrapped)
    train_model: torch.nn.Module  # ``model`` compiled and/or DDP-wrapped: what the step calls
    ema: ModelEMA | None
    eval_model: torch.nn.Module  # evaluated, saved as the checkpoint's model and deployed: the EMA when there is one
    encoder: torch.nn.Module
    loss_fn: torch.nn.Module
    inference: InferenceCore  # evaluation and the report's pictures: eval_model, precision, eval.score_threshold
    autocast: Callable[[], Any]
    global_batch: int
    steps_per_epoch: int  # of the first epoch (every epoch's unless data.epoch_length=dali_counter: see epochs)
    total_steps: int
    base_lr: float
    optimizer: torch.optim.Optimizer
    schedule: WarmupSchedule
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    train_step: TrainStep
    epochs: EpochLengths  # steps per epoch, epoch by epoch
    loader_workers: int  # data.num_workers resolved (see loader_workers)


def build_training(
    cfg: TrainConfig,
    *,
    device: torch.device,
    precision: str,
    info: D.DistInfo,
    resume: dict[str, Any] | None = None,
    loss_fn: torch.nn.Module | None = None,
    timer: SectionTimer | None = None,
) -> TrainingParts:
    """The parts ``cfg`` describes on ``device``; with ``resume`` (a training checkpoint) their state is the
    checkpoint's. ``loss_fn`` replaces the loss the model's spec and ``train.box_loss`` would build. Setting errors
    are :class:`ConfigError`\\ s naming the key."""
    main = info.is_main
    spec = input_spec(cfg, main)
    channels_last = use_channels_last(device, cfg.train.channels_last)
    workers = loader_workers(cfg.data.num_workers, device, info)
    data = build_data(
        dataclasses.replace(cfg.data, num_workers=workers), image_size=spec.image_size, mean=spec.mean,
        std=spec.std, seed=cfg.train.seed, rank=info.rank, world_size=info.world_size, device=device,
        channels_last=channels_last,
    )  # fmt: skip
    classes, val_ids = _classes(cfg, data, main)
    model = _model(cfg, spec, data.train.num_classes, classes, device, channels_last, info, fresh=resume is None)
    last = getattr(model, "additional_blocks", [None])[-1]
    batch_norm = last is not None and any(isinstance(m, torch.nn.BatchNorm2d) for m in last.modules())
    if cfg.data.batch_size < 2 and batch_norm and spec.anchors.feature_sizes[-1] == 1 and not cfg.train.freeze_bn:
        # training BatchNorm on a 1x1 map of one image has one value per channel: no variance to normalize by
        raise ConfigError(f"data.batch_size=1: {spec.name} at {spec.image_size} px ends in a 1x1 feature map with "
                          "BatchNorm, which needs at least 2 values per channel to train; use data.batch_size=2 or "
                          "more (or train.freeze_bn=true)")
    encoder, loss = _box_modules(cfg, spec, loss_fn)
    global_batch = cfg.data.batch_size * info.world_size
    epochs = data.epochs or EpochLengths(epoch_steps(len(data.train), global_batch, cfg.data.last_batch))
    steps_per_epoch = epochs.steps(0)  # every epoch's unless data.epoch_length=dali_counter
    varying = epochs if epochs.kind != "constant" else None
    epochs_steps = varying.to_steps(cfg.train.epochs) if varying else math.ceil(cfg.train.epochs * steps_per_epoch)
    total_steps = cfg.train.max_steps if cfg.train.max_steps is not None else epochs_steps
    base_lr = scaled_lr(cfg.optim.lr, global_batch, cfg.optim.reference_batch, cfg.optim.scale_lr)
    optimizer = build_optimizer(
        model, name=cfg.optim.name, lr=base_lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay,
        nesterov=cfg.optim.nesterov, no_decay_bn_bias=cfg.optim.no_decay_bn_bias, fused=cfg.optim.fused,
    )  # fmt: skip
    sc = cfg.schedule
    schedule = build_schedule(
        kind=sc.name, peak_lr=base_lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        warmup_steps=sc.warmup_steps, warmup_epochs=sc.warmup_epochs, warmup_start_factor=sc.warmup_start_factor,
        milestones_epochs=sc.milestones, gamma=sc.gamma, min_factor=sc.min_factor,
        train_size=len(data.train), global_batch=global_batch, after_warmup=sc.after_warmup, epochs=varying,
    )  # fmt: skip
    scheduler = LRScheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    if resume is not None:
        _load_resumed(resume, model, optimizer, scheduler, scaler, data)
    ema = _ema(cfg, model, resume)
    eval_model = ema.module if ema is not None else model
    inference = InferenceCore(eval_model, spec=spec, device=device, precision=precision, channels_last=channels_last,
                              score_threshold=cfg.eval.score_threshold)
    train_model = D.wrap_model(torch.compile(model) if cfg.train.compile else model, device, info)
    amp = functools.partial(autocast, device, precision)
    train_step = TrainStep(
        model=train_model, params=list(model.parameters()), encoder=encoder, loss_fn=loss, optimizer=optimizer,
        scheduler=scheduler, scaler=scaler, autocast=amp, grad_clip=cfg.optim.grad_clip,
        timer=timer or SectionTimer(False), max_bad_steps=cfg.train.max_bad_steps,
    )  # fmt: skip
    return TrainingParts(
        data=data, classes=classes, label_to_category_id=data.train.label_to_category_id,
        val_label_to_category_id=val_ids, channels_last=channels_last, model=model, train_model=train_model,
        ema=ema, eval_model=eval_model, encoder=encoder, loss_fn=loss,
        inference=inference, autocast=amp, global_batch=global_batch, steps_per_epoch=steps_per_epoch, epochs=epochs,
        total_steps=total_steps, base_lr=base_lr, optimizer=optimizer, schedule=schedule, scheduler=scheduler,
        scaler=scaler, train_step=train_step, loader_workers=workers,
    )  # fmt: skip


def loader_workers(requested: int | None, device: torch.device, info: D.DistInfo) -> int:
    """``data.num_workers``, or for null (auto): 0 when training on the CPU, where a worker process takes cores
    from the model's own threads (2 cores: 29.9 img/s without a worker, 25.7 with one); with an accelerator, this
    process's share of the CPU cores minus one (its main thread), at most 16."""
    if requested is not None:
        return requested
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if info.launcher == "torchrun":  # the node's processes share one affinity set (SLURM gives each task its own)
        cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(16, cores - 1))


def _classes(cfg: TrainConfig, data: DataBundle, main: bool) -> tuple[list[str], dict[int, int] | None]:
    """The model's classes (the training set's, without background; ``model.num_classes``, when set, must count
    them + background) and the validation set's category ids for them, looked up by name; repaired annotations are
    reported, never silently."""
    train_set = data.train
    for key, ds in (("data.train", train_set), ("data.val", data.val)):
        note = ds.repairs_summary() if ds is not None and main else None
        if note:  # the training data are not what the files say
            print(f"{key}: {note}")
    num_classes = cfg.model.num_classes or train_set.num_classes
    if num_classes != train_set.num_classes:
        raise ConfigError(
            f"model.num_classes={num_classes} but the training set {train_set.root} has "
            f"{train_set.num_classes - 1} classes (+ background = {train_set.num_classes}); set "
            f"model.num_classes={train_set.num_classes}, or model.num_classes=null to take it from the data"
        )
    if data.val is None:
        return train_set.classes, None
    # The validation set may list the same names in another order (another source or format).
    val_ids = category_ids_by_name(train_set.classes, data.val, f"training set {train_set.root}", "validation set")
    return train_set.classes, val_ids


def input_spec(cfg: TrainConfig, main: bool = True) -> DetectorSpec:
    """The model's spec at the input size ``model.image_size`` asks for (None: the model's own), the default boxes
    rebuilt for it; a size other than the model's own is said once (``main``).

    Raises:
        ConfigError: the architecture cannot take that size (naming the key, the value and the sizes it takes).
    """
    own = get_spec(cfg.model.name)  # ModelConfig checked the name
    try:
        spec = get_spec(cfg.model.name, cfg.model.image_size)
    except ValueError as exc:
        raise ConfigError(f"config key 'model.image_size': {exc}") from None
    if spec is not own and main:
        kind = "published" if own.reference_backbone_file else "own"
        print(f"model.image_size={spec.image_size}: {spec.name} at {spec.image_size} px instead of its {kind} "
              f"{own.image_size} px; default boxes rebuilt for feature maps {list(spec.anchors.feature_sizes)} "
              f"({len(default_boxes(spec.anchors))} boxes)")
    return spec


def _model(
    cfg: TrainConfig, spec: DetectorSpec, num_classes: int, classes: list[str], device: torch.device,
    channels_last: bool, info: D.DistInfo, fresh: bool,
) -> torch.nn.Module:  # fmt: skip
    """The model, seeded alike on every rank, with its pretrained backbone or starting weights (a fresh run only;
    a resumed one continues from its checkpoint), BatchNorm frozen when asked, on the device."""
    mc, main = cfg.model, info.is_main
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_architecture(mc.name, num_classes, image_size=spec.image_size)
    if mc.pretrained_backbone is not None:  # loaded here so that only the file's errors are reported under its key
        try:
            load_backbone_weights(model.backbone, mc.pretrained_backbone, arch=model.backbone_arch)
        except (FileNotFoundError, ValueError) as exc:  # missing, unreadable or mismatched
            raise ConfigError(f"model.pretrained_backbone: {exc}") from exc
    if mc.weights is not None and fresh:
        try:
            load_weights(model, mc.weights, classes, log=print if main else None)
        except (FileNotFoundError, ValueError) as exc:  # missing, unreadable, or nothing matches
            raise ConfigError(f"model.weights: {exc}") from exc
    pretrained = mc.pretrained_backbone is not None or mc.weights is not None
    if not pretrained and spec.reference_backbone_file and main:
        ref = spec.reference_backbone_file
        warnings.warn(
            f"model.pretrained_backbone is not set: the {mc.name} backbone starts from random weights, while the "
            f"reference recipe starts from ImageNet weights; give torchvision's {ref} with "
            f"model.pretrained_backbone=/path/to/{ref}",
            stacklevel=1,
        )
    if mc.frozen_backbone_bn:
        frozen = freeze_batchnorm(model.backbone)
        if main and not pretrained:
            warnings.warn(
                f"model.frozen_backbone_bn froze {frozen} BatchNorm layers of a backbone that was not pretrained "
                "(model.pretrained_backbone is null): at their initial statistics they are identities. The "
                "recipe freezes ImageNet statistics; give the weights file, or set model.frozen_backbone_bn=false",
                stacklevel=1,
            )
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.train.sync_bn and info.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def _box_modules(
    cfg: TrainConfig, spec: DetectorSpec, loss_fn: torch.nn.Module | None
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The spec's target encoder (its matching rule) and loss (``train.box_loss`` or the given one)."""
    box_loss = None if cfg.train.box_loss == "preset" else cfg.train.box_loss
    try:
        loss = loss_fn if loss_fn is not None else build_loss(spec, box_loss=box_loss)
    except ValueError as e:  # build_loss knows which box terms each loss has
        raise ConfigError(f"train.box_loss={cfg.train.box_loss}: {spec.name}: {e}; use train.box_loss=preset") from None
    return build_encoder(spec), loss


def _load_resumed(
    ck: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
    scaler: torch.amp.GradScaler, data: DataBundle,
) -> None:  # fmt: skip
    """Weights, optimizer, schedule, scaler and sampler from the checkpoint ``ck``."""
    # With weight averaging, "state_dict" is the average and the stepped weights are kept apart.
    model.load_state_dict(ck["ema"]["trained_state_dict"] if "ema" in ck else ck["state_dict"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    if ck.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ck["scaler"])
    data.train_loader.load_state_dict(ck["sampler"])


def _ema(cfg: TrainConfig, model: torch.nn.Module, resume: dict[str, Any] | None) -> ModelEMA | None:
    """The weight average (``train.ema_decay``), resumed from the checkpoint's model when it holds one."""
    if not cfg.train.ema_decay:
        return None
    ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_warmup_steps)
    if resume is not None and "ema" in resume:
        ema.load_state_dict({"module": resume["state_dict"], "updates": resume["ema"]["updates"]})
    return ema
