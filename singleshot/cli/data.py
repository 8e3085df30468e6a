"""``singleshot data``: make the synthetic dataset, validate and summarize any dataset.

    singleshot data synth --out /tmp/shapes                       # 1500 train + 200 val images, 320x240
    singleshot data synth --out /tmp/big --num-train 5000 --image-size 640x480 --seed 3
    singleshot data synth --out /tmp/other --style-seed 7                # another look: classes, sizes, clutter
    singleshot data check /data/coco                              # COCO, VOC or YOLO; exit status 1 on errors
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def _image_size(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
            return w, h
        return int(text), int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH or a single side, got {text!r}") from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="synthetic dataset generation and dataset checks", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    # Defaults (None here) come from singleshot.data.synth.DEFAULTS in run_synth: importing it loads numpy and
    # Pillow, which `singleshot --help` should not wait for. The help texts state them (a test compares).
    s = sub.add_parser("synth", help="write the synthetic shapes dataset (COCO format)")
    s.add_argument("--out", required=True, help="output folder (must be empty or absent unless --force)")
    s.add_argument("--num-train", type=int, default=None, help="training images (default 1500)")
    s.add_argument("--num-val", type=int, default=None, help="validation images (default 200)")
    s.add_argument("--seed", type=int, default=None, help="(default 0)")
    s.add_argument("--image-size", type=_image_size, default=None, metavar="WxH",
                   help="image size, e.g. 320x240 (default) or 300")
    s.add_argument("--max-objects", type=int, default=6, help="objects per image are 1..N")
    s.add_argument("--style-seed", type=int, default=None, metavar="N",
                   help="draw a whole random style (classes, colours, sizes, clutter...; replaces --image-size "
                        "and --max-objects), e.g. to test that a recipe generalizes")
    s.add_argument("--style", choices=["outline", "crowded", "decoys"], default=None,
                   help="a fixed style that is hard in one way (synth.HARD_STYLES: hollow outlines over stripes; "
                        "up to 40 small overlapping objects; unlabelled look-alike shapes); replaces --image-size "
                        "and --max-objects")
    s.add_argument("--force", action="store_true", help="write into a non-empty folder")
    s.set_defaults(func=run_synth)

    c = sub.add_parser("check", help="validate a dataset and print a summary")
    c.add_argument("path", help="dataset folder (COCO, VOC or YOLO), COCO JSON file or Ultralytics data.yaml")
    c.add_argument("--images", default=None, metavar="FOLDER",
                   help="image folder of a COCO JSON whose images are elsewhere (default: found near the JSON)")
    c.add_argument("--split", action="append", help="split to check (repeatable; default: all found)")
    c.add_argument("--format", choices=["coco", "voc", "yolo"], help="skip format detection")
    c.add_argument("--quick", action="store_true", help="read image headers only (misses truncated files)")
    c.add_argument("--max-problems", type=int, default=200, help="problems to list (default 200; 0: all)")
    c.set_defaults(func=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from singleshot.data.synth import DEFAULTS, generate

    for key in ("num_train", "num_val", "seed", "image_size"):
        if getattr(args, key) is None:
            setattr(args, key, DEFAULTS[key])
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"error: {out} is not empty (use --force)", file=sys.stderr)
        return 1
    from singleshot.data.synth import HARD_STYLES, SynthStyle, random_style

    if args.style is not None:
        style = HARD_STYLES[args.style]
    elif args.style_seed is not None:
        style = random_style(args.style_seed)
    else:
        style = SynthStyle(image_size=args.image_size, max_objects=args.max_objects)
    start = time.perf_counter()
    generate(out, num_train=args.num_train, num_val=args.num_val, seed=args.seed, style=style)
    print(f"wrote {args.num_train} train + {args.num_val} val images ({style.describe()}) to {out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from singleshot.data.check import check_dataset
    from singleshot.data.errors import DataError

    try:
        report = check_dataset(args.path, splits=args.split, decode=not args.quick, format=args.format,
                               image_dir=args.images)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.text(max_problems=args.max_problems or None))
    return 0 if report.ok else 1
