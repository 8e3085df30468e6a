"""``singleshot export``: a checkpoint as ONNX (fp32 or INT8), TorchScript, torch.export (.pt2) or safetensors.

    singleshot export --checkpoint best.pt --format onnx --out ssd.onnx              # bbox_regression, cls_logits
    singleshot export --checkpoint best.pt --format onnx --out ssd_nms.onnx --with-nms --uint8-input
        # input uint8 [B, 3, S, S] RGB; boxes [B, D, 4] xyxy normalized, scores, labels (0 = padding), num_detections
    singleshot export --checkpoint best.pt --format onnx --int8 --calibration synth --out ssd_int8.onnx
    singleshot export --checkpoint best.pt --format torchscript --out ssd.torchscript.pt
    singleshot export --checkpoint best.pt --format pt2 --out ssd.pt2                # torch.export, dynamic batch
    singleshot export --checkpoint best.pt --format safetensors --out ssd.safetensors  # weights + JSON header

Every file carries the class names, label -> category id map, input size, mean/std, thresholds, model name and
singleshot version. Input (unless --uint8-input): ``images float32[B, 3, S, S]``, RGB resized to the preset's square
size and normalized. After export the file is loaded back and compared with PyTorch, raw outputs and detections,
on --verify-images (files, folders, globs, or "synth" for the built-in validation set); without them the check runs
on noise, where a trained model finds nothing and detections stay unverified. --no-verify skips it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("onnx", "torchscript", "pt2", "safetensors")  # singleshot.inference.formats.FORMATS, without importing torch


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint (ONNX, INT8 ONNX, TorchScript, pt2, safetensors)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="default: what --out's suffix says (.onnx, .torchscript[.pt], .ts or .jit, .pt2, "
                        ".safetensors), else onnx; a --format that disagrees with the suffix is an error")
    p.add_argument("--out", default=None,
                   help="output file (default: beside the checkpoint, its name with the format's suffix); a plain .pt "
                        "is refused as ambiguous (a checkpoint or TorchScript?)")
    p.add_argument("--with-nms", action="store_true", help="decode + NMS inside the graph (padded outputs)")
    p.add_argument("--uint8-input", action="store_true", help="graph takes uint8 RGB [B, 3, S, S], normalizes inside")
    p.add_argument("--score-threshold", type=float, default=None, help="NMS variant: override the preset's")
    p.add_argument("--max-detections", type=int, default=None, help="NMS variant: D, override the preset's")
    p.add_argument("--int8", action="store_true", help="ONNX only: static INT8 quantization (needs --calibration)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help='INT8 calibration images: a dataset ("synth", a data.yaml, a COCO folder or JSON, a VOC or '
                        'YOLO root: its train split, else its val split) or image files, folders and globs')
    p.add_argument("--calibration-images", type=int, default=300, help="how many calibration images (default 300)")
    p.add_argument("--calibration-method", default="minmax", choices=["minmax", "percentile", "entropy"])
    p.add_argument("--int8-head", action="store_true", help="INT8: quantize the head convolutions too")
    p.add_argument("--verify-images", nargs="+", default=None, metavar="IMAGES",
                   help='images for the check: files, folders, globs, or "synth" (default: noise)')
    p.add_argument("--no-verify", action="store_true", help="skip the reload-and-compare check")
    p.set_defaults(func=run)


def _is_dataset(item: str) -> bool:
    """True for "synth" and a path the data layer reads as a dataset (a data.yaml, a COCO JSON, a dataset folder)."""
    from pathlib import Path

    from singleshot.data.errors import DatasetFormatError
    from singleshot.data.formats import detect_format

    if item == "synth" and not Path(item).exists():
        return True
    try:
        detect_format(item)
    except DatasetFormatError:
        return False
    return True


def _images(items: list[str], limit: int, split: str, what: str) -> list[Any]:
    """uint8[3, H, W] images, at most ``limit``: from one dataset (its ``split``, else the split it has), or from
    files, folders of images and globs; says where they came from (``what`` names the use)."""
    from singleshot.data.base import read_image
    from singleshot.data.formats import dataset_splits, load_dataset
    from singleshot.inference.detector import expand_image_paths

    if len(items) == 1 and _is_dataset(items[0]):
        source = items[0]
        has = dataset_splits(source) if source != "synth" else ["train", "val"]
        chosen = split if not has or split in has else next((s for s in ("train", "val", "test") if s in has), split)
        ds = load_dataset(source, split=chosen)
        images = [ds[i][0] for i in range(min(limit, len(ds)))]
        print(f"{what}: {len(images)} images of the {chosen} split of {source}")
        return images
    files, errors = expand_image_paths(items)
    if errors or not files:
        raise ValueError("; ".join(errors) or f"no images in {' '.join(items)}")
    print(f"{what}: {min(limit, len(files))} images from {' '.join(items)}")
    return [read_image(f) for f in files[:limit]]


def _output(args: argparse.Namespace) -> tuple[Path, str]:
    """``(path, format)`` from --out and --format: the suffix decides, --format must agree with it; no --out:
    beside the checkpoint.

    Raises:
        ValueError: a --format that disagrees with --out's suffix, a plain ``.pt``, or --int8 with another format.
    """
    from singleshot.inference.formats import SUFFIXES, guess_format

    name = (args.out or "").lower()
    try:  # what loading the file back will read it as
        by_suffix: str | None = guess_format(name)
    except ValueError:
        by_suffix = None
    if args.format and by_suffix and args.format != by_suffix:
        raise ValueError(f"--format {args.format} but --out {args.out} names the {by_suffix} format; give one of "
                         "them, or make them agree")
    if by_suffix is None and name.endswith(".pt"):
        raise ValueError(f"--out {args.out}: a .pt file could be a checkpoint or TorchScript; name it .torchscript "
                         "(or .torchscript.pt) for TorchScript, or give another format's suffix")
    fmt = args.format or by_suffix or "onnx"
    if args.int8 and fmt != "onnx":
        raise ValueError(f"--int8 writes ONNX, but --out/--format name {fmt}; give --out NAME.onnx")
    if args.out is None:
        ckpt = Path(args.checkpoint)
        return ckpt.with_name(ckpt.name.split(".")[0] + ("_int8" if args.int8 else "") + SUFFIXES[fmt]), fmt
    out = Path(args.out)
    return (out if out.suffix else out.with_name(out.name + SUFFIXES[fmt])), fmt


def run(args: argparse.Namespace) -> int:
    from singleshot.cli import describe_error
    from singleshot.inference.formats import export, graph_format
    from singleshot.inference.loading import load_model, load_runner

    if args.int8 and not args.calibration:
        print("singleshot export: error: --int8 needs --calibration DATA", file=sys.stderr)
        return 2
    try:
        out, args.format = _output(args)
    except ValueError as e:
        print(f"singleshot export: error: {e}", file=sys.stderr)
        return 2
    args.out = str(out)
    try:
        if graph_format(args.checkpoint) is not None:
            raise ValueError(f"{args.checkpoint} is an exported graph; export from the checkpoint it came from")
        loaded = load_model(args.checkpoint, device="cpu")
        model = loaded.module
    except (OSError, ValueError, RuntimeError) as e:
        print(f"singleshot export: error: {e}", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    if args.score_threshold is not None:
        overrides["score_threshold"] = args.score_threshold
    if args.max_detections is not None:
        overrides["max_detections"] = args.max_detections
    common = {"with_nms": args.with_nms, "uint8_input": args.uint8_input, **overrides}
    classes, l2c = loaded.classes, loaded.label_to_category_id
    try:
        if args.int8:
            path = _export_int8(args, model, classes, l2c, common)
        else:
            path = export(model, args.out, args.format, classes=classes, label_to_category_id=l2c, **common)
    except (OSError, ValueError) as e:
        print(f"singleshot export: error: {describe_error(e)}", file=sys.stderr)
        return 2
    size = model.spec.image_size
    what = "weights + metadata" if args.format == "safetensors" else (
        "decode + NMS inside" if args.with_nms else "raw outputs")
    print(f"wrote {path} ({args.format}, {path.stat().st_size / 2**20:.1f} MiB; {model.spec.name}, "
          f"input [B, 3, {size}, {size}] {'uint8' if args.uint8_input else 'float32'}, {what}"
          f"{', INT8' if args.int8 else ''})")
    if args.no_verify:
        return 0
    return _verify(args, model, load_runner(path, args.format), overrides)


def _export_int8(args: argparse.Namespace, model: Any, classes: list[str], l2c: Any, common: dict[str, Any]) -> Any:
    from singleshot.inference.metadata import export_metadata
    from singleshot.inference.quantize import calibration_batches, quantize_onnx

    spec = model.spec
    try:
        images = _images([args.calibration], args.calibration_images, "train", "INT8 calibration")
    except (OSError, ValueError) as e:
        raise ValueError(f"--calibration {e}") from None
    batches = calibration_batches(images, spec.image_size, spec.mean, spec.std, uint8_input=args.uint8_input)
    meta = export_metadata(model, classes, l2c, outputs=(
        ["boxes", "scores", "labels", "num_detections"] if args.with_nms else ["bbox_regression", "cls_logits"]),
        **common)
    meta["export_format"] = "onnx"
    return quantize_onnx(model, args.out, batches, metadata=meta, exclude_head=not args.int8_head,
                         method=args.calibration_method, **common)


def _verify(args: argparse.Namespace, model: Any, runner: Any, overrides: dict[str, Any]) -> int:
    import torch

    from singleshot.data.transforms import resize_square
    from singleshot.inference.verify import verify_export

    size = model.spec.image_size
    if args.verify_images:
        try:
            images = [resize_square(im, size) for im in _images(args.verify_images, 8, "val", "verification")]
        except (OSError, ValueError) as e:
            print(f"singleshot export: error: --verify-images: {e}", file=sys.stderr)
            return 2
        batch = torch.stack(images)
    else:
        batch = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if args.int8:
        # INT8 differs from fp32 by design: report the agreement instead of failing on the fp32 tolerance.
        from singleshot.inference.verify import int8_agreement

        print(int8_agreement(model, runner, batch, **overrides))
        return 0
    result = verify_export(model, runner, batch, **overrides)
    print(result.text)
    return 1 if result.status == "MISMATCH" else 0
