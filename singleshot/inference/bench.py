"""Throughput and latency benchmarks: ``singleshot bench infer`` and ``singleshot bench train``.

Every row states the task, backend (eager, torch.compile, ONNX Runtime), device, precision and batch size, with
throughput (images/s over all timed iterations) and per-batch latency (median and p90, ms). Inputs are synthetic
tensors already on the device, so image decoding and resizing are not included. Inference rows include decoding +
NMS (unlike NVIDIA's published numbers, which time the model forward only); ``dets/img`` shows the NMS workload.
:func:`infer_split` times the forward alone, post-processing alone and the two end to end, as separate rows.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from singleshot._extras import require
from singleshot.accelerator import device_name as accelerator_name
from singleshot.accelerator import synchronize
from singleshot.inference.core import InferenceCore

BACKENDS = ("eager", "compile", "onnxruntime")


@dataclass
class BenchRow:
    task: str
    backend: str
    device: str
    precision: str
    batch: int
    images_per_s: float
    median_ms: float
    p90_ms: float
    iterations: int
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def time_calls(fn: Callable[[], Any], device: torch.device, min_seconds: float, min_iters: int = 5,
               max_iters: int = 200, warmup: int = 2) -> list[float]:
    """Per-call wall times in ms after ``warmup`` calls: at least ``min_iters``, until ``min_seconds`` have passed."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def make_row(task: str, backend: str, device: torch.device, precision: str, batch: int, times_ms: list[float],
             note: str = "", **extra: float) -> BenchRow:
    ordered = sorted(times_ms)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return BenchRow(task, backend, device_name(device), precision, batch, batch * len(times_ms) / (sum(times_ms) / 1e3),
                    statistics.median(times_ms), p90, len(times_ms), note, dict(extra))


def device_name(device: torch.device) -> str:
    if device.type != "cpu":
        return accelerator_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _inputs(core: InferenceCore, batch: int) -> tuple[Tensor, Tensor]:
    """A random ``[batch, 3, S, S]`` input in the core's layout, and its ``[batch, 2]`` sizes (H, W)."""
    size = core.spec.image_size
    x = torch.randn(batch, 3, size, size, device=core.device)
    if core.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.tensor([[size, size]] * batch, device=core.device)


def infer_eager_or_compiled(model: nn.Module, backend: str, device: torch.device, precision: str,
                            batch_sizes: Sequence[int], min_seconds: float) -> list[BenchRow]:
    """Forward + decode + NMS per batch size; ``backend`` "compile" compiles the model (decode + NMS stay eager:
    their shapes depend on the data)."""
    net: nn.Module = torch.compile(model) if backend == "compile" else model
    core = InferenceCore(net, spec=model.spec, device=device, precision=precision)
    rows = []
    for b in batch_sizes:
        x, sizes = _inputs(core, b)
        counts: list[int] = []

        def step(x: Tensor = x, sizes: Tensor = sizes, counts: list[int] = counts) -> None:
            counts.append(sum(len(d["scores"]) for d in core.detect_batch(x, sizes)))

        t0 = time.perf_counter()
        step()  # compiles (for "compile") outside the timed calls
        first_s = time.perf_counter() - t0
        times = time_calls(step, device, min_seconds)
        note = f"first call {first_s:.1f}s (compile)" if backend == "compile" else ""
        rows.append(make_row("infer", backend, device, precision, b, times, note, dets_per_img=counts[-1] / b))
    return rows


def infer_split(model: nn.Module, device: torch.device, precision: str, batch_sizes: Sequence[int],
                min_seconds: float) -> list[BenchRow]:
    """Where eager inference time goes, per batch size, three rows:

    * ``eager:forward``: the model's forward alone (:meth:`InferenceCore.forward`: under ``precision`` autocast,
      outputs in float32);
    * ``eager:post``: post-processing alone (decode, NMS, top-k: :meth:`InferenceCore.postprocess`), on the stored
      outputs of one forward;
    * ``eager:end2end``: the two together, as :func:`infer_eager_or_compiled` times them.

    The post-processor is built once, before any timed call. ``dets_per_img`` (post and end to end) counts the
    detections of the last timed call.
    """
    core = InferenceCore(model, device=device, precision=precision)
    rows = []
    for b in batch_sizes:
        x, sizes = _inputs(core, b)

        def detections(outputs: tuple[Tensor, Tensor], sizes: Tensor = sizes) -> int:
            return sum(len(d["scores"]) for d in core.postprocess(outputs, sizes))

        stored = core.forward(x)
        counts: dict[str, list[int]] = {"post": [], "end2end": []}
        calls: dict[str, Callable[[], Any]] = {
            "forward": lambda x=x: core.forward(x),
            "post": lambda f=detections, o=stored, c=counts["post"]: c.append(f(o)),
            "end2end": lambda f=detections, x=x, c=counts["end2end"]: c.append(f(core.forward(x))),
        }
        for part, call in calls.items():
            times = time_calls(call, device, min_seconds)
            extra = {"dets_per_img": counts[part][-1] / b} if part in counts else {}
            rows.append(make_row("infer", f"eager:{part}", device, precision, b, times, **extra))
    return rows


def infer_onnxruntime(model: nn.Module, onnx_path: str, device: torch.device, batch_sizes: Sequence[int],
                      min_seconds: float) -> list[BenchRow]:
    """ONNX Runtime on the graph with decoding + NMS inside (exported here, fp32)."""
    ort = require("onnxruntime", "export", "the ONNX Runtime benchmark")

    from singleshot.inference.export import export_onnx

    export_onnx(model, onnx_path, with_nms=True)
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(onnx_path, providers=providers)
    ort_device = torch.device("cuda") if session.get_providers()[0] == "CUDAExecutionProvider" else torch.device("cpu")
    size = model.spec.image_size
    rows = []
    for b in batch_sizes:
        x = np.random.default_rng(0).standard_normal((b, 3, size, size), dtype=np.float32)
        counts: list[int] = []

        def step(x: np.ndarray = x, counts: list[int] = counts) -> None:
            counts.append(int(session.run(["num_detections"], {"images": x})[0].sum()))

        times = time_calls(step, torch.device("cpu"), min_seconds)
        rows.append(make_row("infer", "onnxruntime", ort_device, "fp32", b, times, "", dets_per_img=counts[-1] / b))
    return rows


def format_table(rows: Sequence[BenchRow], title: str) -> str:
    header = f"{'task':<6} {'backend':<13} {'device':<34} {'prec':<5} {'batch':>5} {'img/s':>9} " \
             f"{'median ms':>10} {'p90 ms':>9} {'iters':>5}  note"
    lines = [title, header, "-" * len(header)]
    for r in rows:
        extra = " ".join(f"{k}={v:.1f}" for k, v in r.extra.items())
        note = "; ".join(filter(None, [extra, r.note]))
        lines.append(f"{r.task:<6} {r.backend:<13} {r.device[:34]:<34} {r.precision:<5} {r.batch:>5} "
                     f"{r.images_per_s:>9.1f} {r.median_ms:>10.2f} {r.p90_ms:>9.2f} {r.iterations:>5}  {note}")
    return "\n".join(lines)


def write_json(rows: Sequence[BenchRow], path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "cpu_threads": torch.get_num_threads()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"meta": {**meta, **env}, "rows": [asdict(r) for r in rows]}, f, indent=2)
