"""``singleshot export``: ONNX with a dynamic batch dimension, raw outputs or with decoding + NMS in the graph.

    singleshot export --checkpoint last.pt --format onnx --out ssd.onnx              # bbox_regression, cls_logits
    singleshot export --checkpoint last.pt --format onnx --out ssd_nms.onnx --with-nms
        # boxes [B, D, 4] xyxy normalized, scores [B, D], labels [B, D] (0 = padding), num_detections [B]

Input: ``images float32[B, 3, S, S]``, RGB resized to the preset's square size and ImageNet-normalized.
After export the graph is run in ONNX Runtime and compared with PyTorch (skip with --no-verify).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--with-nms", action="store_true", help="decode + NMS inside the graph (padded outputs)")
    p.add_argument("--score-threshold", type=float, default=None, help="NMS variant: override the preset's")
    p.add_argument("--max-detections", type=int, default=None, help="NMS variant: D, override the preset's")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from singleshot.checkpoint import model_from_checkpoint
    from singleshot.inference.export import export_onnx, verify_onnx
    from singleshot.interop import read_checkpoint

    try:
        model = model_from_checkpoint(read_checkpoint(args.checkpoint)).eval()
    except (OSError, ValueError, RuntimeError) as e:
        print(f"singleshot export: error: {e}", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    if args.score_threshold is not None:
        overrides["score_threshold"] = args.score_threshold
    if args.max_detections is not None:
        overrides["max_detections"] = args.max_detections
    path = export_onnx(model, args.out, with_nms=args.with_nms, opset=args.opset, **overrides)
    print(f"wrote {path} ({model.spec.name}, input [B, 3, {model.spec.image_size}, {model.spec.image_size}], "
          f"{'decode + NMS inside' if args.with_nms else 'raw outputs'})")
    if not args.no_verify:
        report = verify_onnx(model, path, with_nms=args.with_nms, batch=2, **overrides)
        print(report)
        if "MISMATCH" in report:
            return 1
    return 0
