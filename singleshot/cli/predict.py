"""``singleshot predict``: detections for images as JSON plus pictures with labelled boxes.

    singleshot predict --checkpoint runs/exp/last.pt photos/ extra.png --out predictions/
    singleshot predict --checkpoint model.safetensors "shots/**/*.jpg" --out predictions/
    singleshot predict --checkpoint model_int8.onnx photos/ --out predictions/      # an export, on the CPU

Writes ``OUT/predictions.json`` (one record per image: file, size, detections with ``box`` xyxy pixels, ``score``,
``label``, ``name``) and ``OUT/<name>.jpg`` (``.png`` for PNG inputs) per image. Unreadable files are reported by
name on stderr and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("predict", help="detect objects in images (JSON + drawn pictures)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="MODEL",
                   help="singleshot, MLPerf or NVIDIA SSD300 checkpoint, .safetensors, or a raw-output graph that "
                        "`singleshot export` wrote (.onnx, INT8 included; .torchscript.pt; .pt2), run on the CPU")
    p.add_argument("inputs", nargs="+", metavar="IMAGES",
                   help='image files, folders (not recursive) and/or quoted glob patterns ("photos/**/*.jpg")')
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.3, help="minimum score to keep (default 0.3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--no-pictures", action="store_true", help="write the JSON only")
    p.set_defaults(func=run)


def _picture_name(path: Path, used: set[str]) -> str:
    suffix = ".png" if path.suffix.lower() == ".png" else ".jpg"
    name, n = path.stem + suffix, 1
    while name in used:
        name, n = f"{path.stem}_{n}{suffix}", n + 1
    used.add(name)
    return name


def run(args: argparse.Namespace) -> int:
    from singleshot.inference.detector import Detector
    from singleshot.inference.draw import save_detections

    try:
        detector = Detector.from_checkpoint(args.checkpoint, device=args.device, score_threshold=args.score_threshold)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"singleshot predict: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    failed: list[Any] = []

    def skip(item: Any, error: Exception) -> None:
        what = "error" if isinstance(error, FileNotFoundError) else f"skipped {item}"
        print(f"singleshot predict: {what}: {error}", file=sys.stderr)
        failed.append(item)

    for path, image, result in detector.stream(args.inputs, batch_size=args.batch_size, on_error=skip):
        record: dict[str, Any] = {
            "file": os.fspath(path), "height": int(image.shape[-2]), "width": int(image.shape[-1]),
            "detections": [
                {"box": [round(v, 2) for v in box], "score": round(score, 4), "label": label, "name": name}
                for box, score, label, name in zip(result["boxes"].tolist(), result["scores"].tolist(),
                                                   result["labels"].tolist(), result["names"])
            ],
        }
        if not args.no_pictures:
            record["picture"] = _picture_name(Path(path), used)
            save_detections(out / record["picture"], image, result["boxes"], result["labels"], result["scores"],
                            detector.classes)
        records.append(record)
    with open(out / "predictions.json", "w", encoding="utf-8") as f:
        json.dump({"checkpoint": os.fspath(args.checkpoint), "model": detector.spec.name,
                   "score_threshold": args.score_threshold, "images": records}, f, indent=1)
    total = sum(len(r["detections"]) for r in records)
    print(f"{len(records)} images, {total} detections -> {out / 'predictions.json'}"
          + (f"; {len(failed)} input(s) failed (see above)" if failed else ""))
    return 1 if failed else 0
