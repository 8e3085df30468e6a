"""``singleshot predict``: detections for images, videos and GIFs as JSON, pictures, YOLO txt labels and crops.

    singleshot predict --checkpoint runs/exp/last.pt photos/ extra.png clip.mp4        # -> runs/predict
    singleshot predict --checkpoint model.safetensors 'shots/**/*.jpg' --save-txt --save-crop --out predictions/
    singleshot predict --checkpoint model_int8.onnx photos/ --out predictions/      # an export, on the CPU

Inputs: image files, folders (their image and video files, sorted; not recursive, as Ultralytics: use a quoted
pattern 'photos/**/*.jpg' for sub-folders), quoted glob patterns, videos (.mp4 .avi .mov .mkv .webm ...: every frame;
needs PyAV: pip install 'singleshot[video]') and animated GIF/WebP/PNG or multi-page TIFF (every frame). Frame i of
clip.mp4 is named clip_i (i from 0).

Writes to --out (default: a new numbered folder runs/predict, runs/predict2, ... as Ultralytics does):
  predictions.json   one record per image or frame: file, frame (null for a still image), height, width,
                     detections (box xyxy pixels, score, label 1..K, name, class_id, class_name), picture
  <stem>.jpg         the picture with labelled boxes (.png for PNG inputs; --no-pictures: none)
  labels/<stem>.txt  --save-txt: one per image (empty when nothing is found), YOLO format
                     "class_id cx cy w h" normalized to the image (+ " score" with --save-conf)
  crops/<class name>/<stem>_<k>.jpg   --save-crop: the pixels of detection k (0 = the highest score)

class_id is the dataset's own id, as the checkpoint stores it: 0-based for a YOLO data.yaml, the category ids for a
COCO file. A file that cannot be read is skipped with a warning naming it ("skipped PATH: reason"); the exit status is
0 when at least one image was predicted, 1 when none was, 2 when the model cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("runs") / "predict"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("predict", help="detect objects in images, videos and GIFs (JSON, pictures, YOLO txt)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="MODEL",
                   help="singleshot, MLPerf or NVIDIA SSD300 checkpoint, .safetensors, or a raw-output graph that "
                        "`singleshot export` wrote (.onnx, INT8 included; .torchscript.pt; .pt2), run on the CPU")
    p.add_argument("inputs", nargs="+", metavar="SOURCE",
                   help="image or video files, folders (not recursive) and/or quoted glob patterns "
                        "('photos/**/*.jpg')")
    p.add_argument("--out", default=None,
                   help=f"output folder (default: a new numbered {DEFAULT_OUT}, {DEFAULT_OUT}2, ...)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="minimum score to keep (default 0.3)")
    p.add_argument("--batch-size", type=int, default=8, help="images (or frames) per forward pass (default 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--no-pictures", action="store_true", help="no pictures with drawn boxes")
    p.add_argument("--save-txt", action="store_true", help="labels/<stem>.txt per image, YOLO format")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt: the score as a sixth column")
    p.add_argument("--save-crop", action="store_true", help="crops/<class name>/<stem>_<k>.jpg per detection")
    p.set_defaults(func=run)


def _new_folder(base: Path) -> Path:
    """``base``, else the first of ``base2``, ``base3``, ... that does not exist (created, so two runs started at
    once get different folders)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{base.name}{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def _unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem_1``, ``stem_2``, ... when another input gave it (pictures, txt and crops share it)."""
    name, n = stem, 1
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name


def yolo_lines(boxes_xyxy_pixels: Any, class_ids: Any, scores: Any, height: int, width: int, conf: bool) -> str:
    """YOLO label text for one image: ``"class_id cx cy w h[ score]\\n"`` per detection.

    Args:
        boxes_xyxy_pixels: ``float[K, 4]`` xyxy in the image's pixels.
        class_ids, scores: ``[K]``.
        height, width: the image's size in pixels; the centre and size are divided by it (normalized 0..1).
        conf: append the score.
    """
    from torchvision.ops import box_convert

    cxcywh = box_convert(boxes_xyxy_pixels.reshape(-1, 4).float(), "xyxy", "cxcywh")  # (K, 4) pixels
    cxcywh = cxcywh / cxcywh.new_tensor([width, height, width, height])  # (K, 4) normalized
    lines = []
    for cid, box, score in zip(class_ids.tolist(), cxcywh.tolist(), scores.tolist()):
        values = [cid, *box, score] if conf else [cid, *box]
        lines.append(" ".join(f"{v:g}" for v in values) + "\n")
    return "".join(lines)


def run(args: argparse.Namespace) -> int:
    from singleshot.inference.detector import Detector, Frame
    from singleshot.inference.draw import save_prediction_pictures

    if args.batch_size < 1:
        print(f"singleshot predict: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        detector = Detector.from_checkpoint(args.checkpoint, device=args.device, score_threshold=args.score_threshold)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"singleshot predict: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out is not None else _new_folder(DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    if args.save_txt:
        (out / "labels").mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    skipped: list[Any] = []
    crops = 0

    def skip(item: Any, error: Exception) -> None:
        name = os.fspath(item)
        reason = str(error).removeprefix(f"{name}: ").replace(f" {name}", "", 1)  # the path is named once, first
        print(f"singleshot predict: skipped {name}: {reason}", file=sys.stderr)
        skipped.append(item)

    for item, image, result in detector.stream(args.inputs, batch_size=args.batch_size, on_error=skip):
        path, frame = (item.path, item.index) if isinstance(item, Frame) else (Path(item), None)
        stem = _unique_stem(path.stem if frame is None else f"{path.stem}_{frame}", used)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        boxes, scores, labels, class_ids = result["boxes"], result["scores"], result["labels"], result["class_ids"]
        record: dict[str, Any] = {
            "file": os.fspath(path), "frame": frame, "height": height, "width": width,
            "detections": [
                {"box": [round(v, 2) for v in box], "score": round(score, 4), "label": label, "name": name,
                 "class_id": class_id, "class_name": name}
                for box, score, label, name, class_id in zip(boxes.tolist(), scores.tolist(), labels.tolist(),
                                                             result["names"], class_ids.tolist())
            ],
        }  # fmt: skip
        if not args.no_pictures:
            record["picture"] = stem + (".png" if frame is None and path.suffix.lower() == ".png" else ".jpg")
        if args.save_txt:
            text = yolo_lines(boxes, class_ids, scores, height, width, args.save_conf)
            (out / "labels" / f"{stem}.txt").write_text(text, encoding="utf-8")
        if "picture" in record or args.save_crop:
            crops += len(save_prediction_pictures(
                image, boxes, labels, scores, detector.classes, stem=stem,
                picture=out / record["picture"] if "picture" in record else None,
                crops_dir=out / "crops" if args.save_crop else None,
            ))  # fmt: skip
        records.append(record)
    with open(out / "predictions.json", "w", encoding="utf-8") as f:
        json.dump({"checkpoint": os.fspath(args.checkpoint), "model": detector.spec.name,
                   "score_threshold": args.score_threshold, "images": records}, f, indent=1)
    total = sum(len(r["detections"]) for r in records)
    print(f"{len(records)} images, {total} detections -> {out / 'predictions.json'}"
          + (f"; {len(skipped)} input(s) skipped (see the warnings above)" if skipped else ""))
    saved = [what for what, on in (("labels/", args.save_txt), (f"crops/ ({crops})", args.save_crop)) if on]
    print(f"results saved to {out}" + (f" ({', '.join(saved)})" if saved else ""))
    if not records:
        print("singleshot predict: error: no image was predicted", file=sys.stderr)
        return 1
    return 0
