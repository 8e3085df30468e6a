"""The prepared GPU check (``scripts/gpu_check.sh``): one run that answers what this project could not measure on its
CPU machine, within a time budget (default 450 s on one GPU), writing ``gpu_check.json`` and ``gpu_check.txt``.

Sections, in priority order (each is skipped with a note when the budget is spent; the JSON is rewritten after each):

1. ``tests``: ``pytest -m gpu`` (the GPU-marked tests).
2. ``train``: ``ssd300_resnet34`` training img/s with the engine's own :class:`~singleshot.engine.step.TrainStep`
   at batch 64 and 128, fp16 (+ GradScaler) and bf16 autocast, channels-last, eager; model FLOP utilisation from
   ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs of one forward + backward, over the device's peak).
3. ``sync``: steps/s with the loss read on the host after every step (the old per-step sync) vs every 10 steps.
4. ``reference``: the real reference code's training step vs ours, in this process, on the same ready batch on the
   device, batch 64, each reference's own recipe: NVIDIA DeepLearningExamples SSD300 v1.1 (fp16 AMP, channels-last)
   vs our ``ssd300_resnet50``; the MLPerf SSD reference (fp32) vs our ``ssd300_resnet34``; img/s each and ours /
   reference. The reference files are imported from ``--references`` (default ``.references``, made by
   ``scripts/fetch_references.sh``; see ``benchmarks/reference_code.py``), never vendored; without them the rows say
   "skipped: run scripts/fetch_references.sh".
5. ``loader``: the built-in loader, the device path (``data.backend=device``: nvJPEG decode and pixel work on the
   GPU) and DALI (``mixed``: nvJPEG) img/s with all CPU cores, SSD augmentation, 300 px, in
   steady state: the batches the loader can have prefetched (its ``prefetch_depth``) are consumed before the clock
   starts, then 20 batches are timed (:func:`singleshot.engine.data.batches_per_second`).
6. ``fed``: our TrainStep fed by the real loader, built-in and device paths (``build_loader`` over 640x480 JPEGs,
   SSD augmentation, one worker per CPU core, pinned memory, batches finished on the device) for 20 steps after the
   prefetched batches are drained, vs the same step on a ready batch: both img/s and the fraction.
7. ``infer``: inference at batch 1, 8, 64, eager fp16 split into the forward alone, post-processing alone (decode +
   NMS on the stored outputs of one forward) and the two end to end; then ONNX Runtime CUDA (end to end) and
   TensorRT (ONNX Runtime's TensorRT provider) when present.
8. ``train`` compiled rows, then ``infer`` compiled rows (``torch.compile`` costs a minute or more per shape, so they
   come after every eager row).

``--dry-run`` runs every section at tiny sizes on whatever device there is (ssd_tiny, batch 2, a few steps; the
reference rows at batch 2, fp32, one step each on a CPU), so the script is known to start and its code paths to work
before a GPU is spent on it.

    python benchmarks/gpu_check.py [--dry-run] [--budget 450] [--out gpu_check] [--references .references]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Dense fp16/bf16 tensor-core peak FLOP/s by device-name fragment (vendor data sheets, SXM parts, no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
              "V100": 125e12, "RTX 4090": 165e12}  # fmt: skip


ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Settings:
    dry: bool
    device: torch.device
    model: str
    train_batches: tuple[int, ...]
    infer_batches: tuple[int, ...]
    precisions: tuple[str, ...]
    seconds: float  # timed seconds per row
    loader_images: int  # distinct JPEGs generated; the loader rows' datasets repeat them to the length they need
    loader_batch: int
    timed_batches: int = 20  # steady-state batches (loader) and steps (fed) timed after the prefetch is drained
    reference_batch: int = 64
    references: Path = ROOT / ".references"


def settings(dry: bool, references: Path | None = None) -> Settings:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    refs = {"references": references} if references is not None else {}
    if dry:
        # fp16 convolutions on a CPU are reference kernels (minutes here): the dry run's CPU rows use bf16 and fp32
        precisions = ("fp16", "bf16") if device.type == "cuda" else ("bf16", "fp32")
        return Settings(True, device, "ssd_tiny", (2,), (1, 2), precisions, 0.3, 16, 4, reference_batch=2, **refs)
    return Settings(False, device, "ssd300_resnet34", (64, 128), (1, 8, 64), ("fp16", "bf16"), 3.0, 512, 64, **refs)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


# ---------------------------------------------------------------------------------------------------- training
def make_train_step(model_name: str, batch: int, precision: str, device: torch.device, compile_model: bool) -> Any:
    """A :class:`TrainStep` over a fresh model, and a fixed synthetic batch already on the device."""
    from singleshot import build_model
    from singleshot.box import TargetEncoder
    from singleshot.box.factory import build_loss
    from singleshot.engine.schedule import LRScheduler, build_schedule
    from singleshot.engine.step import TrainStep
    from singleshot.inference.bench_train import synthetic_targets
    from singleshot.precision import autocast

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=81).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    net = torch.compile(model) if compile_model else model
    fused = device.type == "cuda"
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4,
                                **({"fused": True} if fused else {"foreach": True}))  # fmt: skip
    schedule = build_schedule(kind="constant", peak_lr=1e-3, steps_per_epoch=100, total_steps=10**6)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step = TrainStep(
        model=net, params=list(model.parameters()), encoder=TargetEncoder(model.spec.anchors),
        loss_fn=build_loss(model.spec), optimizer=optimizer, scheduler=LRScheduler(optimizer, schedule),
        scaler=scaler, autocast=functools.partial(autocast, device, precision),
    )  # fmt: skip
    size = model.spec.image_size
    g = torch.Generator().manual_seed(0)
    boxes, labels = synthetic_targets(batch, 4, 81, g)
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    if channels_last:  # what the loader yields for a channels-last model (build_loader(channels_last=True))
        images = images.contiguous(memory_format=torch.channels_last)
    batch_dict = {"images": images, "boxes": boxes.to(device), "labels": labels.to(device)}
    return step, batch_dict, model


def train_flops(model: torch.nn.Module, batch: int, device: torch.device, precision: str) -> float:
    """FLOPs of one forward + backward of ``model`` at ``batch`` (``FlopCounterMode``: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    from singleshot.precision import autocast

    size = model.spec.image_size
    x = torch.randn(batch, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, autocast(device, precision):
        bbox_regression, cls_logits = model(x)
        (bbox_regression.float().sum() + cls_logits.float().sum()).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_steps(step: Any, batch: dict[str, Any], device: torch.device, seconds: float, read_every: int,
               warmup: int = 3, min_steps: int | None = None) -> tuple[float, int]:
    """(steps/s, steps) of ``step`` on a fixed batch, reading its numbers on the host every ``read_every`` steps."""
    for _ in range(warmup):
        step(batch, False)
    if min_steps is None:
        min_steps = 5 if seconds >= 1 else 2
    step.read()
    _sync(device)
    n, start = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - start < seconds:
        step(batch, False)
        n += 1
        if n % read_every == 0:
            step.read()
    step.read()
    _sync(device)
    return n / (time.perf_counter() - start), n


def section_train(s: Settings, budget: Budget, compiled: bool) -> list[dict[str, Any]]:
    rows = []
    peak = peak_flops(s.device)
    for batch in s.train_batches:
        for precision in s.precisions:
            if budget.left() < (90 if compiled and not s.dry else 10):
                rows.append({"batch": batch, "precision": precision, "compiled": compiled, "skipped": "time budget"})
                continue
            t0 = time.perf_counter()
            try:
                step, data, model = make_train_step(s.model, batch, precision, s.device, compiled)
                flops = train_flops(model, batch, s.device, precision)
                rate, n = time_steps(step, data, s.device, s.seconds, read_every=10, warmup=1 if s.dry else 3)
            except Exception as exc:  # a failing configuration is a result too
                rows.append({"batch": batch, "precision": precision, "compiled": compiled,
                             "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})  # fmt: skip
                continue
            achieved = flops * rate
            rows.append({
                "model": s.model, "batch": batch, "precision": precision, "compiled": compiled,
                "channels_last": s.device.type == "cuda", "img_per_s": rate * batch, "steps": n,
                "tflop_per_step": flops / 1e12, "achieved_tflops": achieved / 1e12,
                "mfu": achieved / peak if peak else None, "setup_s": time.perf_counter() - t0 - n / rate,
            })  # fmt: skip
            del step, data, model
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def section_sync(s: Settings, budget: Budget) -> list[dict[str, Any]]:
    """Steps/s when the host reads the loss after every step (as before) vs every 10 steps (now)."""
    if budget.left() < 20:
        return [{"skipped": "time budget"}]
    batch = s.train_batches[0]
    precision = s.precisions[0]
    step, data, _ = make_train_step(s.model, batch, precision, s.device, False)
    rows = []
    for read_every in (1, 10):
        rate, n = time_steps(step, data, s.device, s.seconds, read_every, warmup=1 if s.dry else 3)
        rows.append({"model": s.model, "batch": batch, "precision": precision, "read_every": read_every,
                     "steps_per_s": rate, "steps": n, "guard": "skip" if step.skips_on_device else "undo"})  # fmt: skip
    # The NaN guard as it was before the fused skip: a snapshot of every parameter and momentum buffer per step and
    # a torch.where per tensor to put them back (forced on the same fused optimizer, same batch).
    step, data, _ = make_train_step(s.model, batch, precision, s.device, False)
    if step.skips_on_device and budget.left() > 10:
        step.skips_on_device = False
        rate, n = time_steps(step, data, s.device, s.seconds, 10, warmup=1 if s.dry else 3)
        rows.append({"model": s.model, "batch": batch, "precision": precision, "read_every": 10,
                     "steps_per_s": rate, "steps": n, "guard": "undo"})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------- references
def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def section_reference(s: Settings, budget: Budget) -> list[dict[str, Any]]:
    """Each reference's training step (its real code, :mod:`reference_code`) vs our TrainStep, on the same ready batch
    on the device, at the reference recipe's precision: NVIDIA v1.1 fp16 AMP + channels-last vs ``ssd300_resnet50``,
    MLPerf fp32 vs ``ssd300_resnet34`` (on a CPU both fp32, NCHW). Both sides are timed by :func:`time_steps`, which
    reads the loss on the host every 10 steps."""
    import reference_code as references

    names = ("NVIDIA SSD300 v1.1 (ResNet-50)", "MLPerf SSD (ResNet-34)")
    reason = references.missing(s.references)
    if reason is not None:
        return [{"reference": name, "skipped": reason} for name in names]
    try:
        nvidia, mlperf = references.load(s.references)
    except Exception as exc:
        return [{"reference": name, "error": f"importing the reference code: {_error(exc)}"} for name in names]
    cuda = s.device.type == "cuda"
    batch = s.reference_batch
    rows: list[dict[str, Any]] = []
    recipes: list[tuple[str, str, str, Callable[[], Any]]] = [
        (names[0], "ssd300_resnet50", "fp16" if cuda else "fp32",
         lambda: references.NvidiaStep(nvidia, s.device, batch, amp=cuda, channels_last=cuda)),
        (names[1], "ssd300_resnet34", "fp32", lambda: references.MlperfStep(mlperf, s.device, batch)),
    ]  # fmt: skip
    # the dry run on a CPU: one step each (a step of these models at batch 2 takes seconds there)
    warmup, min_steps = (0, 1) if s.dry else (3, None)
    for name, ours_name, precision, make_reference in recipes:
        row: dict[str, Any] = {"reference": name, "ours": ours_name, "batch": batch, "precision": precision}
        if budget.left() < (10 if s.dry else 45):
            rows.append({**row, "skipped": "time budget"})
            continue
        try:
            ours, data, _ = make_train_step(ours_name, batch, precision, s.device, False)
            ref = make_reference()
            ref_data = ref.batch(data["images"], data["boxes"], data["labels"])
            ref_rate, ref_steps = time_steps(ref, ref_data, s.device, s.seconds, 10, warmup, min_steps)
            del ref, ref_data
            our_rate, our_steps = time_steps(ours, data, s.device, s.seconds, 10, warmup, min_steps)
            del ours, data
        except Exception as exc:
            rows.append({**row, "error": _error(exc)})
            continue
        finally:
            if cuda:
                torch.cuda.empty_cache()
        rows.append({**row, "channels_last": cuda, "reference_img_per_s": ref_rate * batch,
                     "ours_img_per_s": our_rate * batch, "ratio": our_rate / ref_rate, "reference_steps": ref_steps,
                     "ours_steps": our_steps})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------- loader
def _jpegs(s: Settings, workdir: Path) -> Any:
    """The generated 640x480 JPEG set (COCO format), made once per run."""
    from singleshot.data import load_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_data import make_images

    root = workdir / "loader_images"
    if not (root / "train").is_dir():
        make_images(root, s.loader_images)
    return load_dataset(root, "train")


def repeat_records(dataset: Any, n: int) -> Any:
    """A dataset of ``n`` records cycling through ``dataset``'s (same image files, new image ids): a loader
    measurement needs more batches than there are generated images."""
    from singleshot.data.base import DetectionDataset

    order = [i % len(dataset) for i in range(n)]
    records = [dataset.annotation(i) for i in order]
    out = DetectionDataset(
        root=dataset.root, paths=[dataset.image_path(i) for i in order], image_ids=list(range(n)),
        sizes=[dataset.image_size(i) for i in order], boxes=[b for b, _ in records], labels=[lb for _, lb in records],
        classes=dataset.classes, label_to_category_id=dataset.label_to_category_id,
        normalized_boxes=dataset.normalized_boxes, on_bad_image=dataset.on_bad_image,
    )  # fmt: skip
    out.format = dataset.format
    return out


def _records_for(depth: int, batch: int, timed: int) -> int:
    """Records for one pass of a loader of that prefetch depth and batch to give a steady-state measurement."""
    return (depth + 1 + timed) * batch


def section_loader(s: Settings, budget: Budget, workdir: Path) -> list[dict[str, Any]]:
    """Steady-state img/s (:func:`~singleshot.engine.data.batches_per_second`: the prefetched batches consumed first,
    then ``timed_batches`` timed) of the built-in loader and of DALI, all CPU cores, SSD augmentation, 300 px."""
    from singleshot.data import SSDTrainTransform, build_loader
    from singleshot.data.dali import DaliLoader, dali_missing_reason
    from singleshot.engine.data import batches_per_second

    if budget.left() < 30:
        return [{"skipped": "time budget"}]
    cores = os.cpu_count() or 1
    b, timed = s.loader_batch, s.timed_batches
    ds = repeat_records(_jpegs(s, workdir), _records_for(2 * cores, b, timed))  # the larger depth: builtin's
    rows = []
    builtin = build_loader(ds, SSDTrainTransform(300), batch_size=b, shuffle=True, num_workers=cores,
                           device=s.device)  # fmt: skip
    rows.append({"pipeline": "builtin", "workers": cores, "prefetch_depth": builtin.prefetch_depth,
                 "timed_batches": timed, "img_per_s": batches_per_second(builtin, timed) * b})  # fmt: skip
    del builtin
    device = build_loader(ds, SSDTrainTransform(300), batch_size=b, shuffle=True, num_workers=cores,
                          device=s.device, decode_on_device=True)  # fmt: skip
    rows.append({"pipeline": "device", "workers": cores, "prefetch_depth": device.prefetch_depth,
                 "timed_batches": timed, "img_per_s": batches_per_second(device, timed) * b})  # fmt: skip
    del device
    reason = dali_missing_reason()
    if reason is not None:
        rows.append({"pipeline": "dali", "skipped": reason})
        return rows
    dali = DaliLoader(ds, mode="ssd", image_size=300, batch_size=b, shuffle=True, num_threads=cores,
                      device=s.device)  # fmt: skip
    decode = "mixed" if s.device.type == "cuda" else "cpu"
    rows.append({"pipeline": f"dali ({decode})", "threads": cores, "prefetch_depth": dali.prefetch_depth,
                 "timed_batches": timed, "img_per_s": batches_per_second(dali, timed) * b})  # fmt: skip
    return rows


def section_fed(s: Settings, budget: Budget, workdir: Path) -> list[dict[str, Any]]:
    """Our TrainStep fed by the real loader vs on a ready batch. The step is timed on the ready batch first (which
    also warms it up); then ``build_loader`` (one worker per core, SSD augmentation, pinned memory, batches finished
    on the device, channels-last on CUDA) is started, its prefetched batches are drained
    (:func:`~singleshot.engine.data.steady_state_iterator`), and ``timed_batches`` steps on its batches are timed."""
    from singleshot.data import SSDTrainTransform, build_loader
    from singleshot.engine.data import steady_state_iterator

    if budget.left() < (10 if s.dry else 45):
        return [{"skipped": "time budget"}]
    cuda = s.device.type == "cuda"
    batch, timed = s.train_batches[0], s.timed_batches
    precision = s.precisions[0] if cuda else "fp32"  # bf16 on a CPU without bf16 units: seconds per tiny step
    cores = os.cpu_count() or 1
    step, data, model = make_train_step(s.model, batch, precision, s.device, False)
    ready_rate, _ = time_steps(step, data, s.device, s.seconds, read_every=10, warmup=1 if s.dry else 3)
    ds = repeat_records(_jpegs(s, workdir), _records_for(2 * cores, batch, timed))
    rows = []
    for pipeline in ("builtin", "device"):  # data.backend's two built-in paths
        if budget.left() < (5 if s.dry else 30):
            rows.append({"pipeline": pipeline, "skipped": "time budget"})
            continue
        loader = build_loader(ds, SSDTrainTransform(model.spec.image_size), batch_size=batch, shuffle=True,
                              num_workers=cores, mean=model.spec.mean, std=model.spec.std, device=s.device,
                              channels_last=cuda, pin_memory=cuda, decode_on_device=pipeline == "device")  # fmt: skip
        it = steady_state_iterator(loader, timed)
        try:
            step.read()
            _sync(s.device)
            start = time.perf_counter()
            for k in range(timed):
                step(next(it), False)
                if (k + 1) % 10 == 0:
                    step.read()
            step.read()
            _sync(s.device)
            fed_rate = timed / (time.perf_counter() - start)
        finally:
            getattr(it, "close", lambda: None)()
        rows.append({"pipeline": pipeline, "model": s.model, "batch": batch, "precision": precision,
                     "workers": cores, "prefetch_depth": loader.prefetch_depth, "timed_steps": timed,
                     "ready_img_per_s": ready_rate * batch, "fed_img_per_s": fed_rate * batch,
                     "fraction": fed_rate / ready_rate})  # fmt: skip
        del loader, it
    return rows


# ---------------------------------------------------------------------------------------------------- inference
def section_infer(s: Settings, budget: Budget, workdir: Path, compiled: bool) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from singleshot import build_model
    from singleshot.inference import bench

    rows: list[dict[str, Any]] = []
    precision = "fp16" if s.device.type == "cuda" else "fp32"

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model(s.model, num_classes=81).to(s.device).eval()
        return model.to(memory_format=torch.channels_last) if s.device.type == "cuda" else model

    def run(name: str, fn: Callable[[], list[Any]], need: float) -> None:
        if budget.left() < need:
            rows.append({"backend": name, "skipped": "time budget"})
            return
        try:
            rows.extend(asdict(r) for r in fn())
        except Exception as exc:
            rows.append({"backend": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})

    if compiled:
        run("compile", lambda: bench.infer_eager_or_compiled(fresh(), "compile", s.device, precision,
                                                             s.infer_batches, s.seconds), 60 if not s.dry else 5)
        return rows
    run("eager", lambda: bench.infer_split(fresh(), s.device, precision, s.infer_batches, s.seconds), 10)
    run("onnxruntime", lambda: bench.infer_onnxruntime(fresh().cpu().float().to(memory_format=torch.contiguous_format),
                                                       str(workdir / "m.onnx"),
                                                       s.device, s.infer_batches, s.seconds), 20)  # fmt: skip
    run("tensorrt", lambda: infer_tensorrt(fresh().cpu(), workdir, s), 60 if not s.dry else 5)
    return rows


def infer_tensorrt(model: torch.nn.Module, workdir: Path, s: Settings) -> list[Any]:
    """ONNX Runtime with its TensorRT provider (fp16), when the installed ONNX Runtime has it."""
    import numpy as np
    import onnxruntime as ort

    from singleshot.inference import bench
    from singleshot.inference.export import export_onnx

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(f"no TensorRT provider in onnxruntime {ort.__version__} ({ort.get_available_providers()})")
    path = workdir / "m_trt.onnx"
    export_onnx(model, str(path), with_nms=True)
    options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(workdir)}
    session = ort.InferenceSession(str(path), providers=[("TensorrtExecutionProvider", options),
                                                         "CUDAExecutionProvider"])  # fmt: skip
    size = model.spec.image_size
    rows = []
    for b in s.infer_batches:
        x = np.random.default_rng(0).standard_normal((b, 3, size, size), dtype=np.float32)
        times = bench.time_calls(lambda x=x: session.run(["num_detections"], {"images": x}), torch.device("cpu"),
                                 s.seconds)  # fmt: skip
        rows.append(bench.make_row("infer", "tensorrt", s.device, "fp16", b, times))
    return rows


# ---------------------------------------------------------------------------------------------------- tests
def section_tests(s: Settings, budget: Budget) -> dict[str, Any]:
    limit = int(min(150 if not s.dry else 60, max(budget.left() - 60, 10)))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                              cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        tail = (proc.stdout + proc.stderr).strip().splitlines()
        return {"returncode": proc.returncode, "summary": tail[-1] if tail else "", "seconds": time.perf_counter() - t0}
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": f"timed out after {limit} s", "seconds": limit}


# ---------------------------------------------------------------------------------------------------- report
def _why(row: dict[str, Any]) -> Any:
    """Why a section's row has no number: the skip reason or the error."""
    return row.get("skipped") or row.get("error")


def table(result: dict[str, Any]) -> str:
    out = [f"gpu_check ({'dry run' if result['meta']['dry_run'] else 'full'}) on {result['meta']['device']}, "
           f"torch {result['meta']['torch']}, {result['meta']['cpus']} CPUs, {result['meta']['seconds']:.0f} s"]
    t = result.get("tests")
    if isinstance(t, dict):
        out.append(f"gpu tests: {t['summary']} (rc {t['returncode']}, {t['seconds']:.0f} s)")
    elif t:
        out.append(f"gpu tests: {t}")
    out.append(f"{'train':<18} {'batch':>5} {'prec':<5} {'compiled':<8} {'img/s':>9} {'TFLOP/step':>10} "
               f"{'TFLOP/s':>8} {'MFU':>6}")
    for r in result.get("train", []):
        if "img_per_s" not in r:
            out.append(f"{'':<18} {r.get('batch', '-')!s:>5} {r.get('precision', '-'):<5} "
                       f"{r.get('compiled', '-')!s:<8} {_why(r)}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        out.append(f"{r['model']:<18} {r['batch']:>5} {r['precision']:<5} {r['compiled']!s:<8} "
                   f"{r['img_per_s']:>9.1f} {r['tflop_per_step']:>10.3f} {r['achieved_tflops']:>8.2f} {mfu:>6}")
    for r in result.get("sync", []):
        if "steps_per_s" in r:
            guard = {"skip": "NaN step skipped in the fused kernel", "undo": "NaN guard by snapshot + undo"}
            out.append(f"steps/s, host reads the loss every {r['read_every']:>2} step(s): {r['steps_per_s']:.2f} "
                       f"({r['model']}, batch {r['batch']}, {r['precision']}; {guard[r.get('guard', 'undo')]})")
        else:
            out.append(f"steps/s sync vs no sync: {_why(r)}")
    if result.get("reference"):
        out.append(f"{'reference step vs ours':<32} {'ours':<16} {'batch':>5} {'prec':<5} {'ref img/s':>9} "
                   f"{'our img/s':>9} {'ours/ref':>8}")
    for r in result.get("reference", []):
        if "ratio" in r:
            out.append(f"{r['reference']:<32} {r['ours']:<16} {r['batch']:>5} {r['precision']:<5} "
                       f"{r['reference_img_per_s']:>9.1f} {r['ours_img_per_s']:>9.1f} {r['ratio']:>7.2f}x")
        else:
            out.append(f"{r.get('reference', '-'):<32} {_why(r)}")
    for r in result.get("loader", []):
        if "img_per_s" in r:
            what = (f"{r['img_per_s']:.0f} img/s (steady state: {r['timed_batches']} batches timed after "
                    f"{r['prefetch_depth']} prefetched + 1 drained)")
        else:
            what = _why(r)
        out.append(f"loader {r.get('pipeline', '-'):<14} {what}")
    for r in result.get("fed", []):
        if "fraction" in r:
            out.append(f"train fed by the {r['pipeline']} loader ({r['workers']} workers): "
                       f"{r['fed_img_per_s']:.1f} img/s vs "
                       f"{r['ready_img_per_s']:.1f} on a ready batch = {100 * r['fraction']:.0f}% ({r['model']}, "
                       f"batch {r['batch']}, {r['precision']}, {r['timed_steps']} steps after the prefetch drained)")
        else:
            out.append(f"train fed by the {r.get('pipeline', '-')} loader: {_why(r)}")
    out.append(f"{'infer':<14} {'prec':<5} {'batch':>5} {'img/s':>9} {'median ms':>10}")
    for r in result.get("infer", []):
        if "images_per_s" in r:
            out.append(f"{r['backend']:<14} {r['precision']:<5} {r['batch']:>5} {r['images_per_s']:>9.1f} "
                       f"{r['median_ms']:>10.2f}")
        else:
            out.append(f"{r.get('backend', '-'):<14} {_why(r)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any device: checks the code paths")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all sections together")
    parser.add_argument("--out", default="gpu_check", help="writes OUT.json and OUT.txt")
    parser.add_argument("--skip-tests", action="store_true", help="leave out pytest -m gpu")
    parser.add_argument("--references", type=Path, default=ROOT / ".references",
                        help="the reference code copied by scripts/fetch_references.sh (default: .references)")
    args = parser.parse_args(argv)
    s = settings(args.dry_run, args.references)
    budget = Budget(args.budget)
    if s.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else f"cpu ({platform.machine()})"
    t_start = time.perf_counter()
    result: dict[str, Any] = {"meta": {"dry_run": s.dry, "device": name, "torch": torch.__version__,
                                       "cpus": os.cpu_count(), "model": s.model, "seconds": 0.0}}  # fmt: skip

    def save() -> None:
        result["meta"]["seconds"] = time.perf_counter() - t_start
        Path(f"{args.out}.json").write_text(json.dumps(result, indent=2))
        Path(f"{args.out}.txt").write_text(table(result) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("tests", lambda: None if args.skip_tests else section_tests(s, budget)),
            ("train", lambda: section_train(s, budget, compiled=False)),
            ("sync", lambda: section_sync(s, budget)),
            ("reference", lambda: section_reference(s, budget)),
            ("loader", lambda: section_loader(s, budget, work)),
            ("fed", lambda: section_fed(s, budget, work)),
            ("infer", lambda: section_infer(s, budget, work, compiled=False)),
            ("train+", lambda: section_train(s, budget, compiled=True)),
            ("infer+", lambda: section_infer(s, budget, work, compiled=True)),
        ]
        for key, fn in steps:
            print(f"[gpu_check] {key} ({budget.left():.0f} s left)", flush=True)
            try:
                value = fn()
            except Exception as exc:  # record and carry on: later sections still have something to say
                value = [{"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}]
            if value is None:
                continue
            base = key.rstrip("+")
            if key.endswith("+"):
                result.setdefault(base, []).extend(value)
            else:
                result[base] = value
            save()
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
