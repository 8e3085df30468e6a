"""INT8 vs fp32 ONNX Runtime on the CPU: throughput at batch 1 and 8, and the COCO mAP of both.

    python benchmarks/bench_int8.py --checkpoint runs/cpu_tiny/checkpoints/best.pt
    python benchmarks/bench_int8.py --checkpoint best.pt --models trained --int8-head both

Models: ``trained`` (the checkpoint: speed and mAP on the synthetic validation split) and ``ssd300_resnet34`` at
random initialization (speed only; its mAP would mean nothing). INT8 is ``singleshot export --int8``: ONNX Runtime
static QDQ quantization calibrated on ``--calibration-images`` images of the synthetic training split, the heads kept
in fp32 unless ``--int8-head`` says otherwise. Inputs are the validation images, preprocessed as ``Detector`` does;
mAP decodes the raw outputs with the preset's evaluation post-processing (score > 0.05) in PyTorch for both graphs.
The machine is usually shared: compare rows of one run, the ratio columns are what this prints them for.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from singleshot.box.factory import build_postprocessor
from singleshot.checkpoint import model_from_checkpoint
from singleshot.data.formats import load_dataset
from singleshot.evaluation.groundtruth import coco_ground_truth
from singleshot.evaluation.loop import detections_to_rows, label_lookup
from singleshot.evaluation.metrics import coco_bbox_metrics
from singleshot.inference.export import export_onnx
from singleshot.inference.quantize import calibration_batches, quantize_onnx
from singleshot.interop import read_checkpoint
from singleshot.models import build_model


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


def coco_map(sess, model: torch.nn.Module, ds, batches: list[tuple[np.ndarray, list[int]]]) -> float:  # type: ignore[no-untyped-def]
    """COCO mAP@[.5:.95] of a raw-output graph on ``ds`` (boxes decoded in PyTorch, original-image pixels)."""
    post = build_postprocessor(model.spec)
    lookup = label_lookup(ds.label_to_category_id, torch.device("cpu"))
    rows = []
    for batch, indices in batches:
        bbox, logits = (torch.from_numpy(a) for a in sess.run(None, {"images": batch}))
        sizes = torch.tensor([ds.image_size(i) for i in indices])  # (B, 2) (H, W)
        ids = torch.tensor([ds.image_id(i) for i in indices])
        rows.append(detections_to_rows(post(bbox, logits, sizes), ids, lookup).numpy())
    ids = [ds.image_id(i) for i in range(len(ds))]
    return coco_bbox_metrics(coco_ground_truth(ds), np.concatenate(rows), image_ids=ids).stats["AP"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/cpu_tiny/checkpoints/best.pt", help="the trained default model")
    p.add_argument("--models", nargs="+", default=["trained", "ssd300_resnet34"])
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--val-images", type=int, default=200, help="validation images for mAP (200 = the whole split)")
    p.add_argument("--int8-head", choices=["fp32", "int8", "both"], default="both",
                   help="trained model: keep the head fp32, quantize it, or measure both")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    args = p.parse_args(argv)

    val, train = load_dataset("synth", split="val"), load_dataset("synth", split="train")
    load0 = os.getloadavg()[0]
    print(f"bench_int8: ONNX Runtime CPU, {args.threads} threads, {os.cpu_count()} CPUs, load average {load0:.1f}; "
          f"calibration {args.calibration_images} synthetic train images; mAP on {args.val_images} synthetic val "
          "images")
    header = (f"{'model':<34} {'graph':<13} {'b1 img/s':>9} {'b8 img/s':>9} {'x b1':>6} {'x b8':>6} {'mAP':>7} "
              f"{'dmAP pt':>8}")
    print(header + "\n" + "-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for name in args.models:
            if name == "trained":
                model = model_from_checkpoint(read_checkpoint(args.checkpoint)).eval()
                label = f"{model.spec.name} (trained)"
                heads = {"fp32": [True], "int8": [False], "both": [True, False]}[args.int8_head]
            else:
                torch.manual_seed(0)
                model, label, heads = build_model(name, num_classes=81).eval(), f"{name} (random init)", [True]
            spec = model.spec
            fp32 = export_onnx(model, Path(tmp) / f"{name}_fp32.onnx")
            graphs = [("fp32", fp32)]
            for keep_head in heads:
                calib = calibration_batches((train[i][0] for i in range(min(args.calibration_images, len(train)))),
                                            spec.image_size, spec.mean, spec.std)
                out = Path(tmp) / f"{name}_int8_{keep_head}.onnx"
                graphs.append(("int8" + (" head fp32" if keep_head else " all"), quantize_onnx(
                    model, out, calib, exclude_head=keep_head)))
            n_val = min(args.val_images, len(val))
            val_batches = []
            if name == "trained":
                for start in range(0, n_val, 8):
                    idx = list(range(start, min(start + 8, n_val)))
                    arr = next(calibration_batches((val[i][0] for i in idx), spec.image_size, spec.mean, spec.std,
                                                   batch_size=len(idx)))
                    val_batches.append((arr, idx))
            example = next(calibration_batches((val[i][0] for i in range(8)), spec.image_size, spec.mean, spec.std))
            base: dict[int, float] = {}
            base_map = None
            for kind, path in graphs:
                sess = session(path, args.threads)
                speed = {b: throughput(sess, example[:b], args.seconds) for b in (1, 8)}
                if kind == "fp32":
                    base = speed
                m = coco_map(sess, model, val.head(n_val), val_batches) if val_batches else None
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
