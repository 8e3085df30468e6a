"""INT8 vs fp32 ONNX Runtime on the CPU: throughput at batch 1 and 8, and the COCO mAP of both.

    python benchmarks/bench_int8.py --checkpoint runs/cpu_tiny/checkpoints/best.pt
    python benchmarks/bench_int8.py --checkpoint best.pt --models trained --int8-head both

Models: ``trained`` (the checkpoint: speed and mAP on the synthetic validation split) and ``ssd300_resnet34`` at
random initialization (speed only; its mAP would mean nothing). INT8 is ``singleshot export --int8``: ONNX Runtime
static QDQ quantization calibrated on ``--calibration-images`` images of the synthetic training split, the heads kept
in fp32 unless ``--int8-head`` says otherwise. Inputs are the validation images, preprocessed as ``Detector`` does;
mAP is what ``singleshot eval --checkpoint <graph>`` reports for each exported graph (the whole validation split,
the preset's evaluation post-processing).
The machine is usually shared: compare rows of one run, the ratio columns are what this prints them for.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from singleshot import build_model, load_model
from singleshot.cli import main as cli_main
from singleshot.data.formats import load_dataset
from singleshot.inference.formats import export
from singleshot.inference.metadata import export_metadata
from singleshot.inference.quantize import calibration_batches, quantize_onnx


def session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def throughput(sess, batch: np.ndarray, seconds: float, min_iters: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Images per second of ``sess`` on ``batch`` (one warm-up run, then at least ``min_iters`` or ``seconds``)."""
    sess.run(None, {"images": batch})
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        sess.run(None, {"images": batch})
        n += 1
    return n * len(batch) / (time.perf_counter() - start)


def eval_map(path: Path, folder: Path) -> float:
    """COCO mAP@[.5:.95] of an exported raw-output graph on the synthetic validation split, as ``singleshot eval
    --checkpoint <graph>`` computes it (its COCO table is kept out of this report)."""
    metrics = folder / f"{path.stem}.metrics.json"
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["eval", "--checkpoint", os.fspath(path), "--data", "synth", "--workers", "0",
                         "--results", os.fspath(folder / f"{path.stem}.results.json"), "--metrics-json",
                         os.fspath(metrics)])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"singleshot eval --checkpoint {path} exited with {code}")
    return float(json.loads(metrics.read_text())["AP"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/cpu_tiny/checkpoints/best.pt", help="the trained default model")
    p.add_argument("--models", nargs="+", default=["trained", "ssd300_resnet34"])
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--int8-head", choices=["fp32", "int8", "both"], default="both",
                   help="trained model: keep the head fp32, quantize it, or measure both")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    args = p.parse_args(argv)

    val, train = load_dataset("synth", split="val"), load_dataset("synth", split="train")
    load0 = os.getloadavg()[0]
    print(f"bench_int8: ONNX Runtime CPU, {args.threads} threads, {os.cpu_count()} CPUs, load average {load0:.1f}; "
          f"calibration {args.calibration_images} synthetic train images; mAP: singleshot eval of each graph on the "
          f"{len(val)} synthetic val images")
    header = (f"{'model':<34} {'graph':<13} {'b1 img/s':>9} {'b8 img/s':>9} {'x b1':>6} {'x b8':>6} {'mAP':>7} "
              f"{'dmAP pt':>8}")
    print(header + "\n" + "-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for name in args.models:
            if name == "trained":
                loaded = load_model(args.checkpoint, device="cpu")
                model, classes = loaded.module, loaded.classes
                label = f"{model.spec.name} (trained)"
                heads = {"fp32": [True], "int8": [False], "both": [True, False]}[args.int8_head]
            else:
                torch.manual_seed(0)
                model, label, heads = build_model(name, num_classes=81).eval(), f"{name} (random init)", [True]
                classes = [f"class{i}" for i in range(1, 81)]
            spec = model.spec
            meta = {**export_metadata(model, classes), "export_format": "onnx"}
            fp32 = export(model, Path(tmp) / f"{name}_fp32.onnx", "onnx", classes=classes)
            graphs = [("fp32", fp32)]
            for keep_head in heads:
                calib = calibration_batches((train[i][0] for i in range(min(args.calibration_images, len(train)))),
                                            spec.image_size, spec.mean, spec.std)
                out = Path(tmp) / f"{name}_int8_{keep_head}.onnx"
                graphs.append(("int8" + (" head fp32" if keep_head else " all"), quantize_onnx(
                    model, out, calib, metadata=meta, exclude_head=keep_head)))
            example = next(calibration_batches((val[i][0] for i in range(8)), spec.image_size, spec.mean, spec.std))
            base: dict[int, float] = {}
            base_map = None
            for kind, path in graphs:
                sess = session(path, args.threads)
                speed = {b: throughput(sess, example[:b], args.seconds) for b in (1, 8)}
                if kind == "fp32":
                    base = speed
                m = eval_map(path, Path(tmp)) if name == "trained" else None
                if kind == "fp32":
                    base_map = m
                d = "" if m is None or base_map is None or kind == "fp32" else f"{100 * (m - base_map):+.2f}"
                print(f"{label:<34} {kind:<13} {speed[1]:9.1f} {speed[8]:9.1f} {speed[1] / base[1]:5.2f}x "
                      f"{speed[8] / base[8]:5.2f}x {'' if m is None else f'{m:.4f}':>7} {d:>8}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f} (x = img/s relative to fp32 in the same run; dmAP pt = "
          "mAP change in points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
