"""``singleshot eval``: COCO bbox mAP of a checkpoint (the 12 numbers, precision and recall at IoU 0.5, per-class
AP, results JSON, and the report pictures a training run writes: PR curves, confusion matrix, predictions).

    singleshot eval --checkpoint runs/exp/last.pt                        # built-in synthetic val split
    singleshot eval --checkpoint ssd300.pt --data /data/coco             # COCO 2017 val
    singleshot eval --checkpoint ssd_int8.onnx --data /data/coco         # an exported graph (ONNX Runtime, CPU)
    torchrun --nproc_per_node 8 -m singleshot eval --checkpoint ssd300.pt --data /data/coco   # sharded over 8 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="COCO bbox evaluation of a checkpoint",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="singleshot, MLPerf or NVIDIA SSD300 checkpoint, or a raw-output graph that `singleshot "
                        "export` wrote (.onnx, INT8 included; .torchscript.pt; .pt2), run on the CPU")
    p.add_argument("--data", default="synth",
                   help="dataset folder or COCO JSON (COCO/VOC/YOLO); default: the built-in synthetic set")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="image folder of a COCO JSON whose images are elsewhere (default: found near the JSON)")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass, per process")
    p.add_argument("--workers", type=int, default=None, help="loader worker processes (default: cores - 1, max 8)")
    p.add_argument("--backend", default="builtin", choices=["builtin", "device", "dali"],
                   help="input pipeline: builtin, device (JPEG decode and resize on the GPU), or dali (NVIDIA DALI, "
                        "pip install 'singleshot[dali]'; --workers threads)")
    p.add_argument("--device", default="auto",
                   help="auto (this rank's GPU, else CPU; exported graphs: CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="autocast for the forward (auto: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--score-threshold", type=float, default=None, help="override the preset's (0.05 for SSD300)")
    p.add_argument("--out", default=None, metavar="FOLDER",
                   help="where eval_<split>_results.json goes (default: the checkpoint's run folder when it sits in "
                        "RUN/checkpoints/, else the current folder); checked before evaluating")
    p.add_argument("--results", default=None, help="COCO results JSON to write (overrides --out for this file)")
    p.add_argument("--metrics-json", default=None, help="also write the returned metrics as JSON here")
    p.add_argument("--no-report", action="store_true",
                   help="skip the report pictures (eval_<split>/: per_class_ap.csv, pr_curves.png, "
                        "confusion_matrix.png, predictions/*.jpg, beside the results JSON)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from singleshot.cli import describe_error
    from singleshot.data.errors import DataError
    from singleshot.engine.data import eval_loader, open_dataset
    from singleshot.engine.distributed import cleanup_distributed, detect_environment, init_distributed
    from singleshot.evaluation import category_ids_by_name, evaluate
    from singleshot.inference.core import InferenceCore
    from singleshot.inference.loading import load_model

    info = detect_environment()
    try:
        loaded = load_model(args.checkpoint, device=args.device, local_rank=info.local_rank)
        dataset = open_dataset(args.data, args.split, image_dir=args.images)
        if len(dataset) == 0:
            raise DataError(f"{dataset.summary()}: no image with annotations to evaluate on (an empty annotation "
                            "list, or every box dropped; `singleshot data check` says which)")
        results = args.results or str(_output_folder(args) / f"eval_{args.split}_results.json")
        if info.is_main:  # found out now, not after the whole evaluation
            for target in filter(None, (results, args.metrics_json)):
                _check_writable(Path(target))
    except (OSError, ValueError, RuntimeError, DataError) as e:
        print(f"singleshot eval: error: {describe_error(e)}", file=sys.stderr)
        return 2
    device = loaded.device
    from singleshot.engine.failures import PeerLost

    try:
        init_distributed(info, device)
    except PeerLost as e:
        print(f"singleshot eval: error: {e}", file=sys.stderr)
        return 1
    try:
        # The checkpoint's labels meet the dataset's by class name: same names in another order score the same.
        label_to_category_id = category_ids_by_name(loaded.classes, dataset, f"checkpoint {args.checkpoint}")
        core = InferenceCore(InferenceCore.prepare(loaded.module, device), device=device, precision=args.precision,
                             score_threshold=args.score_threshold)
        spec = core.spec
        loader = eval_loader(dataset, args.backend, image_size=spec.image_size, batch_size=args.batch_size,
                             workers=args.workers, mean=spec.mean, std=spec.std, device=device,
                             channels_last=core.channels_last, rank=info.rank, world_size=info.world_size)
        if info.is_main:
            print(f"evaluating {Path(args.checkpoint).name} ({spec.name}, {loaded.kind}) on {dataset.summary()} "
                  f"[{device}, {core.precision}, {info.world_size} process(es)]")
        metrics = evaluate(core, loader, label_to_category_id=label_to_category_id, results_file=results,
                           log=print if info.is_main else None, keep_detections=info.is_main and not args.no_report)
        if info.is_main:
            print(f"{metrics['num_images']} images, {metrics['num_detections']} detections; inference "
                  f"{metrics['inference_s']:.1f}s, metrics {metrics['metrics_s']:.1f}s; results: {results}")
            if not args.no_report:  # the pictures a training run's report has, for this evaluation
                from singleshot.engine.report import analysis_report

                folder = Path(results).parent / f"eval_{args.split}"
                for path in analysis_report(folder, dataset=dataset, core=core, evaluation=metrics,
                                            classes=loaded.classes, log=None):
                    print(f"wrote {path}")
                metrics = {k: v for k, v in metrics.items() if k not in ("detections", "image_ids", "ground_truth")}
            if args.metrics_json:
                os.makedirs(os.path.dirname(args.metrics_json) or ".", exist_ok=True)
                with open(args.metrics_json, "w", encoding="utf-8") as f:
                    json.dump(metrics, f, indent=2)
    except DataError as e:
        print(f"singleshot eval: error: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup_distributed()
    return 0


def _output_folder(args: argparse.Namespace) -> Path:
    """``--out``, else the run folder of a checkpoint in ``RUN/checkpoints/``, else the current folder."""
    if args.out:
        return Path(args.out)
    ckpt = Path(args.checkpoint).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else Path.cwd()


def _check_writable(target: Path) -> None:
    """Create ``target``'s folder and a scratch file in it; raises the OSError (read-only, full) with the name."""
    import tempfile

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"):
            pass
    except OSError as e:  # name the file the user asked for, not the scratch file
        raise OSError(e.errno, e.strerror, str(target)) from e
