"""Typed training configuration: dataclasses, YAML presets, ``key=value`` overrides and a lossless round trip.

A configuration is a :class:`TrainConfig` made of sections (``model``, ``data``, ``optim``, ``schedule``,
``train``, ``eval``, ``run``). Dotted keys address fields: ``optim.lr=0.01``, ``data.batch_size=16``,
``schedule.milestones=[40,50]``. Values are parsed as YAML scalars/lists and then checked against the field's
type, so a typo or a wrong type is an error that names the key, never a silent default.

Presets live in ``singleshot/configs/*.yaml``; keys a preset leaves out take the defaults below (which follow the
published recipes where they agree, e.g. the SSD augmentation, SGD momentum 0.9). ``singleshot train`` with no
arguments runs the ``cpu_tiny`` preset.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file or the key."""


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` naming ``key`` and the closest of ``allowed`` unless ``value`` is one of them."""
    if not isinstance(value, str) or value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config key {key!r}: expected one of {', '.join(allowed)}; got {value!r}{hint}")


# Fields with a fixed set of values are typed as Literal[...]: the one checker (_check_value) enforces them when a
# config is read, naming the key and the closest valid value; the code that uses a value trusts it.


class _Choices:
    """Checks the ``Literal`` fields of a section built directly in Python too (``DataConfig(augment=...)``)."""

    def __post_init__(self) -> None:
        section = next((name for name, cls in _sections() if cls is type(self)), type(self).__name__)
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if typing.get_origin(hints[f.name]) is Literal:
                _check_value(getattr(self, f.name), hints[f.name], f"{section}.{f.name}")


@dataclass
class ModelConfig:
    # ssd_tiny | ssd300_resnet34 | ssd300_resnet50 | ssd320_resnet50_fpn (singleshot.list_models())
    name: str = "ssd_tiny"
    num_classes: int | None = None  # labels incl. background; None = taken from the training set
    pretrained_backbone: str | None = None  # torchvision ImageNet .pth of the backbone (never downloaded)
    # Freeze the backbone's BatchNorm (statistics and affine) after loading pretrained_backbone: NVIDIA SSD320 v1.2.
    frozen_backbone_bn: bool = False
    # Start from a trained detector (fine-tuning): a singleshot, MLPerf or NVIDIA SSD300 checkpoint. Tensors load by
    # name and shape; class-head rows of classes in both class lists carry over by name; training state does not.
    weights: str | None = None
    # Input size in pixels (square), also read as `imgsz`: null = the model's own size (the recipes' published 300 /
    # 320, ssd_tiny's 160); any multiple of the model's stride (ssd_tiny: 32) rebuilds the default boxes for it.
    image_size: int | None = None

    def __post_init__(self) -> None:
        from singleshot.models import list_models  # here, not at the top: reading --help must not load torch

        _choice("model.name", self.name, tuple(list_models()))


@dataclass
class DataConfig(_Choices):
    # "synth" = the built-in synthetic COCO set (generated once into a cache folder), or a dataset path that
    # singleshot.data can read (COCO folder/JSON, VOC, YOLO).
    train: str = "synth"
    val: str | None = "synth"  # None = no evaluation
    batch_size: int = 32  # per process; the global batch is batch_size x world size
    val_batch_size: int = 32  # per process, for evaluation
    # loader processes per training process (0 = load in the training process); null (auto): 0 on a CPU run (a
    # worker takes cores from the model there), else the process's CPU cores - 1, at most 16
    num_workers: int | None = None
    # "ssd" (IoU crop, flip, colour jitter: MLPerf, NVIDIA v1.1) | "area_crop" (crop of 75-100% area, aspect
    # 0.75-3, flip: NVIDIA SSD320 v1.2) | "light" (flip + colour jitter, no crop) | "none" (resize + normalize only)
    augment: Literal["ssd", "area_crop", "light", "none"] = "ssd"
    crop_attempts: int = 1  # SSD random-crop attempts per choice of minimum IoU (MLPerf's max_samples: 1 or 50)
    # each training epoch's last incomplete batch: "drop" it | "pad" it with images from the epoch's start, so an
    # epoch has ceil(images / global batch) steps, as the MLPerf reference counts (it trains that batch smaller)
    last_batch: Literal["drop", "pad"] = "drop"
    # what an epoch is: "dataset" (one pass, as data.last_batch says) | "dali_counter" (NVIDIA v1.1's iterator: it
    # ends once (images in the annotation file, those without boxes included) / ranks samples are counted, the
    # overshoot carried into the next, so epochs differ by a step; the samples run on from pass to pass)
    epoch_length: Literal["dataset", "dali_counter"] = "dataset"
    val_limit: int | None = None  # evaluate on the first N validation images only
    train_images: str | None = None  # image folder of a COCO JSON given as data.train (default: found near the JSON)
    val_images: str | None = None  # image folder of a COCO JSON given as data.val (default: found near the JSON)
    # unreadable image: "raise" (stop, naming the file) | "skip" (skip it and count it)
    on_bad_image: Literal["raise", "skip"] = "raise"
    # "builtin" (torch DataLoader workers decode and augment) | "device" (workers read JPEG bytes and draw the
    # augmentation; nvJPEG decode, crop, resize, flip and colour run batched on the GPU) | "dali" (NVIDIA DALI, pip
    # install 'singleshot[dali]'; its CPU backend off CUDA) | "auto" (builtin on CPU; on CUDA whichever measures
    # fastest in steady state)
    backend: Literal["auto", "builtin", "device", "dali"] = "auto"
    # COCO iscrowd annotations: "drop" (left out of the targets) | "keep" (ordinary targets, and crowd-only images
    # stay: how both SSD300 references read COCO)
    crowd: Literal["drop", "keep"] = "drop"


@dataclass
class OptimConfig(_Choices):
    # "sgd" (the recipes) | "adamw" (decoupled weight decay, betas (momentum, 0.999))
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1  # base learning rate at `reference_batch` images per step
    reference_batch: int = 32  # lr is scaled by global_batch / reference_batch (the recipes' linear rule)
    scale_lr: bool = True  # apply that scaling (false: lr is used as given)
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 penalty (SGD weight_decay; AdamW: decoupled decay)
    no_decay_bn_bias: bool = False  # NVIDIA recipe: no weight decay on 1-D parameters (BN) and biases
    grad_clip: float | None = None  # max global gradient norm, None = no clipping
    fused: bool | None = None  # the fused optimizer kernel (skips a NaN step on the device); None = on CUDA only


@dataclass
class ScheduleConfig(_Choices):
    name: Literal["multistep", "cosine", "constant"] = "multistep"  # learning-rate decay after the warmup
    warmup_steps: int = 0  # linear warmup length in steps ...
    warmup_epochs: float = 0.0  # ... or in epochs (MLPerf states it in epochs); the larger of the two wins
    warmup_start_factor: float = 0.0  # lr at step 0 as a fraction of the base lr
    milestones: list[float] = field(default_factory=lambda: [40.0, 50.0])  # multistep, in epochs
    gamma: float = 0.1  # multistep decay factor
    min_factor: float = 0.0  # cosine: final lr as a fraction of the base lr
    # after the warmup: "peak" (the base lr) | "held" (the warmup's last value, base x (W-1)/W, until the first
    # decay; then base x gamma^k: the MLPerf reference) | "held_decayed" (that value times gamma^k throughout: NVIDIA
    # v1.1, whose MultiStepLR scales the lr the warmup left)
    after_warmup: Literal["peak", "held", "held_decayed"] = "peak"


@dataclass
class TrainLoopConfig(_Choices):
    epochs: float = 65.0  # length of the run in epochs ...
    max_steps: int | None = None  # ... or in optimizer steps (wins when set)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: fp16 + GradScaler on CUDA, fp32 on CPU
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    channels_last: bool | None = None  # None = on for CUDA
    compile: bool = False  # torch.compile the model
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA)
    freeze_bn: bool = False  # BatchNorm uses and keeps its running statistics (its weights still train)
    seed: int = 0  # seeds weights, data order and augmentation (each rank adds its rank)
    deterministic: bool = False  # torch.use_deterministic_algorithms; needed for bit-exact resume on GPU
    threads: int | None = None  # torch intra-op threads on CPU (None = torch's default)
    # The multibox loss's box term: "preset" = the model's (smooth-L1 over the offsets), or
    # "smooth_l1" | "giou" (2 x (1 - GIoU) of the decoded boxes). The focal loss (SSD320) has smooth-L1 only.
    box_loss: Literal["preset", "smooth_l1", "giou"] = "preset"
    max_bad_steps: int = 5  # stop after this many non-finite losses in a row
    # Several processes: seconds a collective waits for the other ranks; then the run stops with a line naming the
    # rank that went missing and the step each rank reached (a rank that dies is usually noticed at once)
    dist_timeout: float = 300.0
    log_every: int = 10  # steps between JSONL/TensorBoard scalars
    checkpoint_every_steps: int = 0  # extra mid-epoch checkpoints (0 = at epoch ends only)
    progress: Literal["auto", "bar", "log", "none"] = "auto"  # auto: a bar on a terminal, log lines otherwise
    # Exponential moving average of the weights (None = off): the average is what is evaluated, saved as the
    # checkpoint's model and deployed; the decay ramps up as decay * (1 - exp(-step / ema_warmup_steps)).
    ema_decay: float | None = None
    ema_warmup_steps: float = 100.0  # steps over which the EMA decay ramps up


@dataclass
class EvalConfig:
    # evaluate every N epochs (and at the end); 0 = only at the end; null (auto) = as often as keeps evaluation to
    # about a tenth of the run, estimated from the images trained and evaluated (printed at the start)
    every: int | None = None
    at: list[int] = field(default_factory=list)  # explicit epochs to evaluate at (NVIDIA recipe), added to `every`
    target_map: float | None = None  # stop as soon as COCO mAP@[.5:.95] reaches this
    score_threshold: float | None = None  # None = the preset's published post-processing
    num_pictures: int = 8  # validation images drawn with predictions at the end


@dataclass
class RunConfig:
    # run folder name under `root`; a folder that holds a run with another configuration makes the next free
    # numbered one (cpu_tiny2, cpu_tiny3, ...) unless exist_ok; the same command finds and resumes its own run
    name: str = "cpu_tiny"
    root: str = "runs"  # parent folder of run folders
    dir: str | None = None  # explicit run folder (overrides root/name)
    mlperf_log: bool = False  # also write MLPerf mllog events to <run>/mlperf.log
    tensorboard: bool = True  # write TensorBoard scalars to <run>/tensorboard
    report: bool = True  # plot PNG + prediction pictures at the end
    resume: bool = True  # re-running the same configuration resumes its run; false = always start a new run folder
    # true: use run.name (or run.dir) as given; a run there with another configuration is replaced by a fresh one
    # instead of getting a numbered folder
    exist_ok: bool = False


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def run_dir(self) -> Path:
        return Path(self.run.dir) if self.run.dir else Path(self.run.root) / self.run.name


def _sections() -> list[tuple[str, type]]:
    hints = typing.get_type_hints(TrainConfig)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(TrainConfig)]


def all_keys() -> list[str]:
    """Every dotted key of :class:`TrainConfig` (``model.name``, ``optim.lr``, ...), in declaration order."""
    return [f"{name}.{f.name}" for name, cls in _sections() for f in dataclasses.fields(cls)]


def suggest_keys(key: str) -> str:
    """``"; did you mean 'optim.lr'?"`` for a mistyped key (closest dotted keys, else same-looking field names)."""
    keys = all_keys()
    scores = {k: difflib.SequenceMatcher(None, key, k).ratio() for k in keys}
    best = max(scores.values())
    # the best match and any nearly as good (a tie is worth showing; a distant third is noise)
    close = sorted((k for k, v in scores.items() if v >= max(0.6, best - 0.06)), key=lambda k: -scores[k])[:3]
    if not close:  # a right field name in the wrong section, or a section left out ("lr" -> "optim.lr")
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1] for k in keys}
        near = set(difflib.get_close_matches(leaf, leaves, n=3, cutoff=0.75))
        close = [k for k in keys if k.rsplit(".", 1)[-1] in near][:3]
    return f"; did you mean {' or '.join(repr(k) for k in close)}?" if close else ""


def _field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the dataclass source: the field line's trailing comment, else the comment block
    right above it (continuation lines joined). The comments are the documentation, so they are read, not copied."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # no source (e.g. a frozen build): keys and types are still listed
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    block: list[str] = []
    for line in lines:
        text = line.strip()
        if text.startswith("#"):
            block.append(text.lstrip("#").strip())
            continue
        name = text.split(":", 1)[0].strip()
        if name in names and ":" in text:
            trailing = text.partition("  #")[2]
            out[name] = " ".join(block + ([trailing.strip()] if trailing else []))
        block = []
    return out


def help_config(cfg: TrainConfig | None = None, source: str | Path | None = None) -> str:
    """Every key with its type, value and comment: what ``singleshot train --help-config`` prints.

    ``cfg``: the configuration whose values to show (``--config X`` and overrides, read by :func:`load_config`),
    ``source`` the preset or file it came from, named in the header; keys whose value differs from the dataclass
    default are marked ``*``. Without ``cfg`` the defaults are shown, built from the dataclasses without
    instantiating them, so that needs no model registry (and no torch).
    """
    rows: list[tuple[str, str, str, str]] = []
    earlier = {new: old for old, new in RENAMED_KEYS.items()}
    short = {key: name for name, key in SHORT_KEYS.items()}
    values = cfg.to_dict() if cfg is not None else None
    for section, cls in _sections():
        comments = _field_comments(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            value = default if values is None else values[section][f.name]
            tp = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            if typing.get_origin(hints[f.name]) is Literal:  # the choices themselves, not the annotation
                tp = "|".join(typing.get_args(hints[f.name]))
            key, comment = f"{section}.{f.name}", comments.get(f.name, "")
            if key in earlier:
                comment += f" (also read as {earlier[key]})"
            if key in short:
                comment += f" (short: {short[key]}=)"
            shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            if values is not None and value != default:
                shown += " *"
            rows.append((key, tp, shown, comment))
    wk = max(len(r[0]) for r in rows)
    wt = max(len(r[1]) for r in rows)
    wd = min(max(len(r[2]) for r in rows), 14)
    column = "default" if cfg is None else "value"
    lines = [f"{'key':<{wk}}  {'type':<{wt}}  {column:<{wd}}  meaning"]
    lines += [f"{k:<{wk}}  {t:<{wt}}  {d:<{wd}}  {c}" for k, t, d, c in rows]
    if cfg is not None:
        lines.append(f"values of {f'--config {source}' if source else 'the default preset (cpu_tiny)'} with the "
                     "overrides given; * = differs from the key's default")
    return "\n".join(lines)


# What a YOLO user types -> the key it sets (command-line overrides: ``imgsz=320 epochs=20 batch=8``). ``data=PATH``
# sets both data.train and data.val (each reads its own split of the dataset); ``model=NAME`` sets model.name.
SHORT_KEYS = {
    "imgsz": "model.image_size",
    "epochs": "train.epochs",
    "batch": "data.batch_size",
    "workers": "data.num_workers",
    "device": "train.device",
    "seed": "train.seed",
    "name": "run.name",
    "project": "run.root",
    "exist_ok": "run.exist_ok",
    "resume": "run.resume",
    "model": "model.name",
    "data": "data.train",
}


# A key's earlier name -> its present one: a config file, an override and a saved run's config (config.yaml, a
# checkpoint's config) may give the name on the left for the key on the right.
RENAMED_KEYS = {"data.max_samples": "data.crop_attempts"}


def upgrade_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the nested config dict ``data`` with renamed keys under their present names (anything but a
    mapping comes back as it is, for the config checks to name).

    Raises:
        ConfigError: ``data`` gives a key under both names.
    """
    if not isinstance(data, dict):
        return data
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in RENAMED_KEYS.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        section = out.get(old_section)
        if not isinstance(section, dict) or old_name not in section:
            continue
        target = out.setdefault(new_section, {})
        if not isinstance(target, dict):
            continue  # the section itself is wrong: building the config names it
        if new_name in target:
            raise ConfigError(f"config key {old!r} is the earlier name of {new!r}; give only {new!r}")
        target[new_name] = section.pop(old_name)
    return out


# Keys that may differ when resuming a run: they change how it is watched, not what it computes.
RESUME_MUTABLE = {
    "data.num_workers",
    "data.val_batch_size",
    "train.log_every",
    "train.progress",
    "train.checkpoint_every_steps",
    "train.threads",
    "train.dist_timeout",
    "train.max_steps",
    "train.epochs",
    "run.root",
    "run.dir",
    "run.tensorboard",
    "run.report",
    "eval.num_pictures",
    "run.resume",
    "run.exist_ok",
}


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` (int -> float allowed), or raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        _choice(key, value, typing.get_args(tp))
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key!r}: expected {tp}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        return [_check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise ConfigError(f"config key {key!r}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = prefix + str(unknown[0])
        raise ConfigError(
            f"unknown config key {key!r}{suggest_keys(key)}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(value, tp, prefix + name)
    return cls(**kwargs)


# Each numeric key's valid range as (lowest, lowest included, highest, highest included); None = unbounded. A value
# outside is a ConfigError naming the key and the value as given (before any batch scaling), when the config is read.
RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "model.num_classes": (2, True, None, False),
    "model.image_size": (32, True, None, False),
    "data.batch_size": (1, True, None, False),
    "data.val_batch_size": (1, True, None, False),
    "data.num_workers": (0, True, None, False),
    "data.crop_attempts": (1, True, None, False),
    "data.val_limit": (1, True, None, False),
    "optim.lr": (0, False, None, False),
    "optim.reference_batch": (1, True, None, False),
    "optim.momentum": (0, True, 1, False),
    "optim.weight_decay": (0, True, None, False),
    "optim.grad_clip": (0, False, None, False),
    "schedule.warmup_steps": (0, True, None, False),
    "schedule.warmup_epochs": (0, True, None, False),
    "schedule.warmup_start_factor": (0, True, 1, True),
    "schedule.milestones": (0, True, None, False),
    "schedule.gamma": (0, False, None, False),
    "schedule.min_factor": (0, True, 1, True),
    "train.epochs": (0, False, None, False),
    "train.max_steps": (1, True, None, False),
    "train.threads": (1, True, None, False),
    "train.max_bad_steps": (1, True, None, False),
    "train.dist_timeout": (0, False, None, False),
    "train.log_every": (1, True, None, False),
    "train.checkpoint_every_steps": (0, True, None, False),
    "train.ema_decay": (0, False, 1, False),
    "train.ema_warmup_steps": (0, True, None, False),
    "eval.every": (0, True, None, False),
    "eval.at": (1, True, None, False),
    "eval.target_map": (0, False, 1, True),
    "eval.score_threshold": (0, True, 1, False),
    "eval.num_pictures": (0, True, None, False),
}


def _range_text(low: float | None, low_in: bool, high: float | None, high_in: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_in else '>'} {low:g}")
    if high is not None:
        parts.append(f"{'<=' if high_in else '<'} {high:g}")
    return " and ".join(parts)


def check_ranges(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` for the first key of :data:`RANGES` whose value (or list item) is out of range."""
    data = cfg.to_dict()
    for key, (low, low_in, high, high_in) in RANGES.items():
        section, name = key.split(".")
        value = data[section][name]
        for v in value if isinstance(value, list) else [value]:
            if v is None:
                continue
            below = low is not None and (v < low if low_in else v <= low)
            above = high is not None and (v > high if high_in else v >= high)
            if below or above:
                raise ConfigError(
                    f"config key {key!r}: must be {_range_text(low, low_in, high, high_in)}; got {v!r}"
                )


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig`; missing keys take the defaults, renamed keys (:data:`RENAMED_KEYS`) their
    present names, unknown keys, bad types and values out of range (:data:`RANGES`) raise."""
    cfg = _build(TrainConfig, upgrade_keys(data or {}), "")
    check_ranges(cfg)
    return cfg


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML) and re-validate the whole config."""
    data = config.to_dict()
    expanded: list[str] = []
    for item in overrides:  # short keys first: data=PATH is two overrides
        key, sep, raw = item.partition("=")
        name = key.strip()
        if sep and name in SHORT_KEYS:
            expanded.append(f"{SHORT_KEYS[name]}={raw}")
            if name == "data":
                expanded.append(f"data.val={raw}")
        else:
            expanded.append(item)
    for item in expanded:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        parts = RENAMED_KEYS.get(key.strip(), key.strip()).split(".")
        node = data
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"unknown config key {where!r} in override {item!r}{suggest_keys(key.strip())}")
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], dict):
            raise ConfigError(f"override {item!r} names a section; set one of its keys, e.g. {key}.<field>=...")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse the value: {exc}") from None
    return config_from_dict(data)


def preset_names() -> list[str]:
    """The recipe presets shipped in ``singleshot/configs``."""
    folder = resources.files("singleshot") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(path_or_preset: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config file or a preset name (``cpu_tiny``, ``mlperf_ssd300_resnet34``...), then overrides.

    ``None`` gives the built-in default (``cpu_tiny``). A preset file may start with ``base: other_preset``
    to inherit from another preset.
    """
    data = _read_yaml(path_or_preset or "cpu_tiny")
    return apply_overrides(config_from_dict(data), overrides or [])


def _read_yaml(path_or_preset: str | Path, depth: int = 0) -> dict[str, Any]:
    path = Path(path_or_preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text, where = path.read_text(), str(path)
    else:
        res = resources.files("singleshot") / "configs" / f"{path_or_preset}.yaml"
        if not res.is_file():
            raise ConfigError(f"no config file or preset named {str(path_or_preset)!r}; presets: {preset_names()}")
        text, where = res.read_text(), f"preset {path_or_preset}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    base = data.pop("base", None)
    try:  # before merging: this file's earlier names override the base's present ones
        data = upgrade_keys(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if base is not None:
        if depth > 8:
            raise ConfigError(f"{where}: 'base' chain too deep (a cycle?)")
        data = _merge(_read_yaml(base, depth + 1), data)
    return data


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
