"""The real reference SSD code, imported at run time from the scratch copy ``scripts/fetch_references.sh`` makes
(default ``.references/``, git-ignored; nothing of it is part of this project), and each reference's training step
reproduced from its own training loop, for ``benchmarks/gpu_check.py``'s side-by-side rows.

* ``nvidia``: NVIDIA DeepLearningExamples PyTorch SSD300 v1.1 (ResNet-50). Model, loss and default boxes are theirs
  (``ssd/model.py``, ``ssd/utils.py``); ``ssd/train.py`` imports apex, so its ``train_loop`` step body is restated
  in :class:`NvidiaStep`; the optimizer is built as their ``main.py`` builds it.
* ``mlperf``: the MLPerf Training SSD reference (ResNet-34, ``retired_benchmarks/ssd-v1/ssd``). Model, loss, default
  boxes and base learning rate are theirs (``ssd300.py``, ``base_model.py``, ``train.py``, ``utils.py``); the step
  body of ``train300_mlperf_coco``'s loop is restated in :class:`MlperfStep`.

Importing: each file is loaded by path with :mod:`importlib`; while they import, their sibling modules (``utils``,
``base_model``, ...) and stand-ins for the MLPerf logging modules sit in ``sys.modules`` under the bare names their
imports use, and every entry is removed (or the previous one put back) afterwards.

Both references build their ResNet with ImageNet weights (NVIDIA's ``model.py`` even does so in a default argument,
at import time), which downloads them; a GPU machine has no network and a speed measurement needs no trained
weights, so while their files import, torchvision's ResNet builders are replaced, here only, by ones that drop
``weights`` / ``pretrained`` (their modules keep those builders, so the models built later start from random
weights too, as ours do).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

NVIDIA_FILES = ("model", "utils")  # import order: model.py imports nothing of theirs, utils.py neither
MLPERF_FILES = ("utils", "base_model", "ssd300", "train")  # each only imports the ones before it
SKIPPED = "skipped: run scripts/fetch_references.sh"


def missing(root: Path) -> str | None:
    """None when both references' files are under ``root``, else the skip reason."""
    need = [root / "nvidia" / f"{n}.py" for n in NVIDIA_FILES] + [root / "mlperf" / f"{n}.py" for n in MLPERF_FILES]
    absent = [str(p) for p in need if not p.is_file()]
    return f"{SKIPPED} ({absent[0]} not found)" if absent else None


@contextlib.contextmanager
def _sys_modules(names: list[str]) -> Iterator[None]:
    """Whatever is put in ``sys.modules`` under ``names`` inside the block is taken out after it (previous entries
    come back)."""
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    try:
        yield
    finally:
        for name in names:
            if name in saved:
                sys.modules[name] = saved[name]
            else:
                sys.modules.pop(name, None)


def _drop_weights(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    @functools.wraps(builder)
    def build(*args: Any, weights: Any = None, pretrained: Any = None, **kwargs: Any) -> nn.Module:
        return builder(*args, **kwargs)  # random initialization: no download

    return build


@contextlib.contextmanager
def _resnets_without_weights() -> Iterator[None]:
    """torchvision's ResNet builders ignore ``weights`` / ``pretrained`` inside the block (see the module
    docstring: the references ask for ImageNet weights at import time)."""
    import torchvision.models.resnet as resnet

    names = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    saved = {n: getattr(resnet, n) for n in names}
    try:
        for n, builder in saved.items():
            setattr(resnet, n, _drop_weights(builder))
        yield
    finally:
        for n, builder in saved.items():
            setattr(resnet, n, builder)


def _mlperf_logging_stand_ins() -> dict[str, types.ModuleType]:
    """The MLPerf reference's ``mlperf_logger`` (its import configures a compliance log file) as a silent module,
    and ``mlperf_logging.mllog.constants`` when the package is not installed (the GPU machine lacks it)."""
    logger = types.ModuleType("mlperf_logger")
    logger.ssd_print = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    logger.broadcast_seeds = lambda seed, device: seed  # type: ignore[attr-defined]
    logger.mllogger = types.SimpleNamespace(event=logger.ssd_print, start=logger.ssd_print,  # type: ignore[attr-defined]
                                            end=logger.ssd_print)  # fmt: skip
    stand_ins = {"mlperf_logger": logger}
    try:
        import mlperf_logging.mllog.constants  # noqa: F401
    except ImportError:
        package, mllog = types.ModuleType("mlperf_logging"), types.ModuleType("mlperf_logging.mllog")
        constants = types.ModuleType("mlperf_logging.mllog.constants")
        constants.__getattr__ = lambda name: name.lower()  # type: ignore[attr-defined]  # any constant: its name
        package.mllog, mllog.constants = mllog, constants  # type: ignore[attr-defined]
        stand_ins |= {"mlperf_logging": package, "mlperf_logging.mllog": mllog,
                      "mlperf_logging.mllog.constants": constants}  # fmt: skip
    return stand_ins


def _import_files(folder: Path, names: tuple[str, ...], stand_ins: dict[str, types.ModuleType]) -> dict[str, Any]:
    """Execute ``folder/<name>.py`` for each name in order, each visible to the next under its bare name."""
    modules: dict[str, Any] = {}
    with _sys_modules([*names, *stand_ins]), _resnets_without_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their deprecated arguments (reduce=False, Variable, ...)
        sys.modules.update(stand_ins)
        for name in names:
            spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            modules[name] = module
    return modules


def load(root: Path) -> tuple[types.SimpleNamespace, types.SimpleNamespace]:
    """(nvidia, mlperf): the references' modules as attributes (``nvidia.model``, ``mlperf.ssd300``, ...)."""
    nvidia = _import_files(root / "nvidia", NVIDIA_FILES, {})
    mlperf = _import_files(root / "mlperf", MLPERF_FILES, _mlperf_logging_stand_ins())
    return types.SimpleNamespace(**nvidia), types.SimpleNamespace(**mlperf)


# ---------------------------------------------------------------------------------------------------- batches
def encoded_targets(encoder: Any, boxes: Tensor, labels: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Targets as the references' loaders yield them: each image's boxes matched to the 8732 default boxes by the
    reference's own ``Encoder.encode`` (ltrb in, xywh out), stacked to ``bbox [B, 8732, 4]``, ``label [B, 8732]``.

    Args:
        boxes: ``[B, M, 4]`` xyxy (= ltrb) normalized; labels: ``[B, M]`` int64, a box is real iff its label > 0.
    """
    out_boxes, out_labels = [], []
    for b, lab in zip(boxes.cpu(), labels.cpu()):
        keep = lab > 0
        eb, el = encoder.encode(b[keep].float(), lab[keep].long())
        out_boxes.append(eb)
        out_labels.append(el)
    return torch.stack(out_boxes).to(device), torch.stack(out_labels).to(device)


def _decay_groups(model: nn.Module) -> list[dict[str, Any]]:
    """NVIDIA's parameter grouping (their ``tencent_trick``, restated): no weight decay on biases and on every
    one-dimensional parameter (batch norm)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay}]


class _ReferenceStep:
    """``step(batch, stop_requested)`` and ``read()`` like our TrainStep, so one timing loop serves both; ``read`` is
    where the host waits for the loss (both sides read it as often)."""

    loss: Tensor | None = None

    def read(self) -> float:
        return float(self.loss) if self.loss is not None else float("nan")


class NvidiaStep(_ReferenceStep):
    """NVIDIA SSD300 v1.1's training step, their ``train_loop`` body on a batch as their DALI loader yields it
    (images, ``bbox [B, 8732, 4]``, ``label [B, 8732]``): forward under autocast with the input made channels-last
    inside it, ``.float()`` on the outputs, their ``Loss(dboxes300_coco())`` on ``bbox.transpose(1, 2)``, GradScaler,
    SGD step, ``zero_grad``. Left out: the per-step host reads of their loop (``bbox_offsets[-1].item()``,
    ``loss.item()`` for the logger; ``read`` does the latter as often as ours), the learning-rate warm-up (off by
    default) and the in-loop normalization (ours happens in the loader, also outside the step).

    Model and optimizer as their ``main.py`` builds them: ``SSD300(ResNet("resnet50"))``, SGD with momentum 0.9,
    weight decay 5e-4 except on biases and batch norm, learning rate 2.6e-3 x batch / 32. Their default recipe is fp16
    AMP (``--amp``) with ``--data-layout channels_last``.
    """

    def __init__(self, ref: Any, device: torch.device, batch_size: int, amp: bool, channels_last: bool) -> None:
        self.device, self.amp, self.channels_last = device, amp, channels_last
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = ref.model.SSD300(backbone=ref.model.ResNet(backbone="resnet50")).to(device).train()
            self.dboxes = ref.utils.dboxes300_coco()
            self.loss_fn = ref.model.Loss(self.dboxes).to(device)
        self.encoder = ref.utils.Encoder(self.dboxes)
        self.optim = torch.optim.SGD(_decay_groups(self.model), lr=2.6e-3 * batch_size / 32, momentum=0.9,
                                     weight_decay=5e-4)  # fmt: skip
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def batch(self, images: Tensor, boxes: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Their loader's batch from ours: NCHW images (fp16 under AMP: their pipeline's ``output_fp16=args.amp``)."""
        bbox, label = encoded_targets(self.encoder, boxes, labels, self.device)
        img = images.contiguous().to(self.device, torch.float16 if self.amp else torch.float32)
        return {"img": img, "bbox": bbox, "label": label}

    def __call__(self, batch: dict[str, Tensor], stop_requested: bool = False) -> None:
        img, bbox, label = batch["img"], batch["bbox"], batch["label"]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            if self.channels_last:
                img = img.to(memory_format=torch.channels_last)
            ploc, plabel = self.model(img)
            ploc, plabel = ploc.float(), plabel.float()
            gloc = bbox.transpose(1, 2).contiguous()
            loss = self.loss_fn(ploc, plabel, gloc, label)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optim)
        self.scaler.update()
        self.optim.zero_grad()
        self.loss = loss.detach()


class MlperfStep(_ReferenceStep):
    """The MLPerf SSD reference's training step, the body of ``train300_mlperf_coco``'s loop (one batch split, as by
    default) on a batch as its loader yields it (images, ``bbox [B, 8732, 4]``, ``label [B, 8732]``): the boxes
    transposed to ``[B, 4, 8732]``, the input wrapped to require a gradient (their ``Variable(fimg,
    requires_grad=True)``), fp32 forward, their ``Loss(dboxes300_coco())``, backward, SGD step, ``zero_grad``. Left
    out: the per-step ``loss.item()`` of their running average (``read`` does it as often as ours) and the warm-up
    (off by default).

    Model and optimizer as their ``train.py`` builds them: ``SSD300(81)``, SGD with momentum 0.9, weight decay 5e-4,
    learning rate ``_BASE_LR`` x batch / 32.
    """

    def __init__(self, ref: Any, device: torch.device, batch_size: int) -> None:
        self.device = device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = ref.ssd300.SSD300(81).to(device).train()
            self.dboxes = ref.train.dboxes300_coco()
            self.loss_fn = ref.base_model.Loss(self.dboxes).to(device)
        self.encoder = ref.utils.Encoder(self.dboxes)
        self.optim = torch.optim.SGD(self.model.parameters(), lr=ref.train._BASE_LR * batch_size / 32, momentum=0.9,
                                     weight_decay=5e-4)  # fmt: skip
        self.optim.zero_grad()

    def batch(self, images: Tensor, boxes: Tensor, labels: Tensor) -> dict[str, Tensor]:
        bbox, label = encoded_targets(self.encoder, boxes, labels, self.device)
        return {"img": images.contiguous().to(self.device, torch.float32), "bbox": bbox, "label": label}

    def __call__(self, batch: dict[str, Tensor], stop_requested: bool = False) -> None:
        img, bbox, label = batch["img"], batch["bbox"], batch["label"]
        trans_bbox = bbox.transpose(1, 2).contiguous()
        fimg = img.detach().requires_grad_(True)  # what their Variable(fimg, requires_grad=True) makes
        ploc, plabel = self.model(fimg)
        loss = self.loss_fn(ploc, plabel, trans_bbox, label)
        loss.backward()
        self.optim.step()
        self.optim.zero_grad()
        self.loss = loss.detach()
