"""``singleshot convert``: MLPerf / NVIDIA SSD300 checkpoints to singleshot checkpoints, and back.

singleshot convert --from nvidia nvidia_ssdpyt_amp_200703.pt --out ssd300_r50_coco.pt
singleshot convert --from mlperf mlperf_ssd_epoch60.pt --out ssd300_r34_coco.pt
singleshot convert --to nvidia runs/r50/best.pt --out for_nvidia.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from singleshot.interop.keymaps import FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert MLPerf / NVIDIA SSD300 checkpoints to singleshot checkpoints and back",
        description=(
            "Convert a checkpoint of the MLPerf reference SSD300-ResNet-34 or NVIDIA SSD300 v1.1 ResNet-50 to a "
            "singleshot checkpoint (--from), or a singleshot checkpoint to theirs (--to). Every tensor must map "
            "exactly; otherwise the offending keys are listed and nothing is written. "
            "eval, predict and the Detector API also read the originals directly."
        ),
    )
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument(
        "--from",
        dest="from_kind",
        choices=[*FORMATS, "auto"],
        help="kind of SRC, converted to a singleshot checkpoint ('auto' detects it)",
    )
    way.add_argument("--to", dest="to_kind", choices=list(FORMATS), help="write SRC (any readable kind) in this format")
    p.add_argument("src", metavar="SRC", type=Path, help="checkpoint to convert")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="DST", help="output file")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read SRC with full unpickling (only for files you trust; needed when it stores Python objects)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `singleshot --help` stays fast.
    from singleshot.checkpoint import atomic_save
    from singleshot.interop import InteropError, read_checkpoint, to_foreign

    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    if args.out.exists() and args.out.resolve() == args.src.resolve():
        print(f"error: --out {args.out} is the source file", file=sys.stderr)
        return 1
    try:
        if args.from_kind is not None:
            kind = None if args.from_kind == "auto" else args.from_kind
            ckpt = read_checkpoint(args.src, kind, trust_pickle=args.trust_pickle)
            source = ckpt.get("source", {}).get("kind", "singleshot")
            out = ckpt
            what = f"{source} -> singleshot {ckpt['model']['name']}"
        else:
            ckpt = read_checkpoint(args.src, trust_pickle=args.trust_pickle)
            out = to_foreign(ckpt, args.to_kind, source=str(args.src))
            what = f"{ckpt['model']['name']} -> {args.to_kind}"
    except (InteropError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    atomic_save(out, args.out)
    n = len(out["state_dict"] if "state_dict" in out else out["model"])
    print(f"{args.src}: {what}, {ckpt['model']['num_classes']} classes, {n} tensors -> {args.out}")
    return 0
