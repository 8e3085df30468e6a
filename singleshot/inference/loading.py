"""The one way to open a model: :func:`load_model` for every file singleshot reads or writes.

    loaded = singleshot.load_model("runs/exp/checkpoints/best.pt")   # or .safetensors, .onnx, .torchscript.pt, .pt2
    loaded.module(images)            # (bbox_regression [B, A, 4], cls_logits [B, A, C])
    loaded.classes                   # label k is classes[k - 1]

=====================  ==================================================  =========================================
file                   read by                                             runs on
=====================  ==================================================  =========================================
singleshot checkpoint  :func:`singleshot.interop.read_checkpoint`          PyTorch, any device
MLPerf / NVIDIA SSD300 the same, converted in memory                       PyTorch, any device
``.safetensors``       the same (weights + metadata, ``singleshot export``)  PyTorch, any device
``.onnx`` (fp32/INT8)  ONNX Runtime (:func:`~.formats.load_runner`)         the CPU
``.torchscript.pt``    ``torch.jit.load``                                  the CPU
``.pt2``               ``torch.export.load``                               the CPU
=====================  ==================================================  =========================================

Exported graphs must hold the raw outputs (``singleshot export`` without ``--with-nms``): their detections are then
computed by the same :class:`~singleshot.inference.core.InferenceCore` as the PyTorch model's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from singleshot._extras import require
from singleshot.accelerator import resolve_device
from singleshot.checkpoint import model_from_checkpoint
from singleshot.inference.formats import graph_format, guess_format, read_metadata
from singleshot.inference.metadata import label_map
from singleshot.interop import read_checkpoint


@dataclass
class LoadedModel:
    """A model file opened for inference.

    Attributes:
        module: ``images float32[B, 3, S, S]`` normalized -> ``(bbox_regression [B, A, 4], cls_logits [B, A, C])``,
            on ``device``, in eval mode.
        spec: its :class:`~singleshot.models.DetectorSpec` (an exported graph's carries the thresholds stored in it).
        classes: the K class names; label ``k`` is ``classes[k - 1]``.
        label_to_category_id: label -> dataset category id (for COCO results files).
        kind: "singleshot", "mlperf", "nvidia", "safetensors", "onnx", "torchscript" or "pt2".
        path: the file.
        device: where ``module`` runs (the CPU for exported graphs).
    """

    module: nn.Module
    spec: Any
    classes: list[str]
    label_to_category_id: dict[int, int]
    kind: str
    path: Path
    device: torch.device


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    local_rank: int = 0,
    trust_pickle: bool = False,
) -> LoadedModel:
    """Open any model file singleshot reads or writes (see the module docstring) for inference.

    Args:
        path: the file; its kind is found from its name (exported graphs) or its contents (checkpoints).
        device: where a PyTorch model runs: None or "auto" (this process's accelerator, else the CPU), "cpu",
            "cuda", "cuda:1", ... Exported graphs run on the CPU ("auto" means the CPU for them); asking them for
            another device is an error.
        local_rank: the accelerator index "auto" and an index-less type ("cuda") take (torchrun's LOCAL_RANK).
        trust_pickle: allow arbitrary pickled objects in a checkpoint from a source you trust.
    Raises:
        FileNotFoundError: no such file.
        ValueError: (``CheckpointError``, ``InteropError``) an unreadable, foreign or corrupt file, a graph with
            NMS inside, or a device the file cannot run on; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "model file not found", os.fspath(path))
    fmt = graph_format(path)
    if fmt is not None:
        target = torch.device("cpu") if device in (None, "auto") else resolve_device(str(device), local_rank)
        if target.type != "cpu":
            raise ValueError(f"{path}: an exported {fmt} graph runs on the CPU here (ONNX Runtime's CPU provider, or "
                             f"PyTorch for TorchScript / pt2), not on {target}; evaluate the .pt checkpoint on a GPU")
        graph = GraphModel(load_runner(path, fmt), path).eval()
        meta = graph.runner.metadata
        return LoadedModel(graph, graph.spec, list(meta["classes"]), label_map(meta), fmt, path, target)
    target = resolve_device("auto" if device is None else str(device), local_rank)
    ckpt = read_checkpoint(path, trust_pickle=trust_pickle)
    model = model_from_checkpoint(ckpt, source=path).to(target).eval()
    source = ckpt.get("source") if isinstance(ckpt.get("source"), dict) else {}
    kind = "safetensors" if path.suffix == ".safetensors" else str(source.get("kind", "singleshot"))
    l2c = {int(k): int(v) for k, v in (ckpt.get("label_to_category_id") or {}).items()}
    classes = list(ckpt["classes"])
    return LoadedModel(model, model.spec, classes, l2c or {i: i for i in range(1, len(classes) + 1)}, kind, path,
                       target)


class Runner:
    """An exported file loaded for inference: ``runner(images) -> list of numpy outputs`` in the file's order.

    ``images``: ``[B, 3, S, S]`` float32 normalized, or uint8 for ``uint8_input`` graphs (see ``metadata``).
    """

    def __init__(self, fn: Callable[[Tensor], Sequence[Any]], metadata: dict[str, Any], fmt: str) -> None:
        self._fn = fn
        self.metadata = metadata
        self.format = fmt

    def __call__(self, images: Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            out = self._fn(images)
        return [o.detach().cpu().numpy() if isinstance(o, Tensor) else np.asarray(o) for o in out]


def load_runner(path: str | os.PathLike[str], fmt: str | None = None, *, threads: int | None = None) -> Runner:
    """Load an exported file of any format: ONNX through ONNX Runtime on the CPU, TorchScript and pt2 through
    PyTorch, safetensors weights as the model :func:`load_model` builds from them (on the CPU)."""
    fmt = fmt or guess_format(path)
    if fmt == "safetensors":
        return Runner(load_model(path, device="cpu").module, read_metadata(path, fmt), fmt)
    meta = read_metadata(path, fmt)
    if fmt == "onnx":
        ort = require("onnxruntime", "export", "loading an ONNX file")

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return Runner(lambda x: session.run(None, {name: x.detach().cpu().numpy()}), meta, fmt)
    if fmt == "torchscript":
        module = torch.jit.load(os.fspath(path), map_location="cpu")
        return Runner(module, meta, fmt)
    module = torch.export.load(os.fspath(path)).module()
    return Runner(module, meta, fmt)


class GraphModel(nn.Module):
    """An exported raw-output graph as a module: ``images float32[B, 3, S, S]`` normalized -> ``(bbox_regression
    [B, A, 4], cls_logits [B, A, C])`` on the CPU (ONNX Runtime's CPU provider, or PyTorch for TorchScript / pt2).
    ``spec`` is the preset's with the post-processing settings stored in the file; a ``uint8_input`` graph gets the
    images back as uint8 (exact: they were uint8 before normalizing).

    Raises:
        ValueError: the graph has decoding + NMS inside (its detections are already final: export without
            ``--with-nms`` to evaluate or predict with singleshot), or its metadata names no singleshot model.
    """

    def __init__(self, runner: Runner, path: str | os.PathLike[str]) -> None:
        super().__init__()
        from singleshot.box.postprocess import PostprocessConfig
        from singleshot.models import get_spec

        meta = runner.metadata
        if meta.get("with_nms"):
            raise ValueError(f"{os.fspath(path)}: the graph has decoding + NMS inside; singleshot evaluates and "
                             "predicts with an export without --with-nms (the same weights, raw outputs)")
        try:
            spec = get_spec(meta["model"], meta.get("input", {}).get("size"))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{os.fspath(path)}: its metadata names no singleshot model ({e})") from None
        self.spec = dataclasses.replace(spec, postprocess=PostprocessConfig(**meta.get("postprocess", {})))
        self.num_classes = int(meta.get("num_classes", len(meta.get("classes", [])) + 1))
        self.runner, self.format = runner, runner.format
        self.uint8_input = meta.get("input", {}).get("dtype") == "uint8"
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # the device the core finds: the CPU

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.uint8_input:
            mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1)
            std = torch.tensor(self.spec.std).view(1, 3, 1, 1)
            images = ((images.cpu().float() * std + mean) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        bbox_regression, cls_logits = self.runner(images.cpu().contiguous())[:2]
        return torch.from_numpy(bbox_regression), torch.from_numpy(cls_logits)
