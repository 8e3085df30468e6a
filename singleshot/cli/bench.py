"""``singleshot bench infer|train``: throughput (img/s) and latency (ms, median and p90) per batch size for eager
PyTorch, torch.compile and ONNX Runtime, printed as a table and written as JSON.

    singleshot bench infer                                     # ssd_tiny on CPU, batch 1, 8, 32
    singleshot bench infer --model ssd300_resnet50 --batch-sizes 1 8 32 64 --out bench_infer.json   # on a GPU
    singleshot bench train --model ssd300_resnet50 --batch-sizes 32 64

Inference rows time forward + decode + NMS on inputs already on the device (NVIDIA publishes forward only).
Weights are random unless --checkpoint is given; ``dets/img`` shows how much NMS work the rows contain.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="inference / training throughput and latency", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["infer", "train"])
    p.add_argument("--model", default=None,
                   help="preset (default: ssd_tiny on CPU, ssd300_resnet50 on CUDA); ignored with --checkpoint")
    p.add_argument("--checkpoint", default=None, help="benchmark these weights instead of random ones")
    p.add_argument("--num-classes", type=int, default=81, help="with --model (default 81, COCO)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="default: 1 8 32 on CPU (infer), 8 32 (train); 1 2 4 8 16 32 64 on CUDA")
    p.add_argument("--backends", nargs="+", default=None, choices=["eager", "compile", "onnxruntime"],
                   help="default: all three for infer, eager and compile for train")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto: fp16 autocast on CUDA, fp32 on CPU (ONNX Runtime rows are always fp32)")
    p.add_argument("--min-seconds", type=float, default=None, help="timed seconds per row (default 3 CPU, 2 CUDA)")
    p.add_argument("--out", default=None, help="JSON file (default: bench_<task>.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from singleshot.accelerator import default_device, use_channels_last
    from singleshot.inference import bench
    from singleshot.inference.bench_train import train_bench
    from singleshot.inference.loading import load_model
    from singleshot.models import build_architecture
    from singleshot.precision import resolve_precision

    device = torch.device(args.device) if args.device else default_device()
    cuda = device.type != "cpu"  # an accelerator: larger batches, shorter timing windows
    precision = resolve_precision(args.precision, device)
    default_sizes = [1, 2, 4, 8, 16, 32, 64] if cuda else ([1, 8, 32] if args.task == "infer" else [8, 32])
    batch_sizes = args.batch_sizes or default_sizes
    backends = args.backends or (["eager", "compile", "onnxruntime"] if args.task == "infer" else ["eager", "compile"])
    min_seconds = args.min_seconds if args.min_seconds is not None else (2.0 if cuda else 3.0)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def fresh_model() -> torch.nn.Module:
        if args.checkpoint:
            return load_model(args.checkpoint, device="cpu").module
        name = args.model or ("ssd300_resnet50" if cuda else "ssd_tiny")
        return build_architecture(name, num_classes=args.num_classes)

    name = fresh_model().spec.name
    rows: list[bench.BenchRow] = []
    for backend in backends:
        model = fresh_model().to(device)
        if use_channels_last(device):
            model = model.to(memory_format=torch.channels_last)
        if args.task == "train":
            if backend == "onnxruntime":
                print("skipping onnxruntime for train: ONNX Runtime is an inference engine")
                continue
            rows += train_bench(model, backend, device, precision, batch_sizes, min_seconds)
        elif backend == "onnxruntime":
            with tempfile.TemporaryDirectory() as tmp:
                rows += bench.infer_onnxruntime(model.cpu().eval(), os.path.join(tmp, "m.onnx"), device,
                                                batch_sizes, min_seconds)
        else:
            rows += bench.infer_eager_or_compiled(model.eval(), backend, device, precision, batch_sizes, min_seconds)
        print(bench.format_table(rows[-len(batch_sizes):], f"[{backend} done]"), flush=True)
    title = (f"singleshot bench {args.task}: {name}"
             + (" (random weights)" if not args.checkpoint else f" ({args.checkpoint})")
             + ("; inference = forward + decode + NMS, input tensors already on the device"
                if args.task == "infer" else "; train step = forward + loss + backward + SGD, no data loading"))
    print()
    print(bench.format_table(rows, title))
    out = args.out or f"bench_{args.task}.json"
    bench.write_json(rows, out, {"task": args.task, "model": name, "checkpoint": args.checkpoint,
                                 "batch_sizes": batch_sizes, "min_seconds": min_seconds})
    print(f"wrote {out}")
    return 0
