"""The YOLOv8n peer of ``bench_accuracy.py``: train Ultralytics YOLOv8n from scratch on a COCO-format set, offline,
and write its validation predictions as a COCO results JSON in the set's own image and category ids.

Run as a subprocess by ``bench_accuracy.py`` (it isolates Ultralytics' global settings, thread count and logging):

    python benchmarks/yolo_peer.py --set DIR --work DIR --imgsz 160 --epochs 9 [--batch 16 --workers 1 --threads 2]

``DIR`` is a singleshot synthetic set (``{train,val}/*.jpg``, ``annotations/instances_{train,val}.json``). The
peer writes into ``--work``: the YOLO layout of the set (images symlinked), Ultralytics' run folders,
``results_val.json`` (COCO results: ``[{"image_id", "category_id", "bbox": [x, y, w, h] original pixels,
"score"}]``) and ``peer.json`` (timings, settings, Ultralytics' own validation numbers, network attempts).

Ultralytics is a peer in this benchmark only, never a singleshot dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

SPLITS = ("train", "val")


def load_coco(path: Path) -> dict[str, Any]:
    """A COCO instances JSON; a missing key is an error naming the file and the key."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: no {key!r} field")
    return data


def coco_to_yolo(set_dir: Path, out_dir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Write the YOLO layout of a COCO set: ``images/{split}`` (symlinks), ``labels/{split}/*.txt``, ``data.yaml``.

    Label lines are ``class cx cy w h``, box centre and size normalized by the image's width/height from the JSON
    (YOLO's format); class = index of the category in id order. Crowd annotations are left out (YOLO has no
    crowd concept); images without boxes get an empty label file (background images).

    Returns:
        ``(data.yaml path, categories sorted by id)``: YOLO class k is ``categories[k]``.
    """
    import yaml

    categories: list[dict[str, Any]] | None = None
    for split in SPLITS:
        ann_file = set_dir / "annotations" / f"instances_{split}.json"
        coco = load_coco(ann_file)
        cats = sorted(coco["categories"], key=lambda c: int(c["id"]))
        if categories is None:
            categories = cats
        elif [c["id"] for c in cats] != [c["id"] for c in categories]:
            raise ValueError(f"{ann_file}: categories differ from the train split's")
        index = {int(c["id"]): k for k, c in enumerate(cats)}
        img_dir, lbl_dir = out_dir / "images" / split, out_dir / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        lines: dict[int, list[str]] = {int(im["id"]): [] for im in coco["images"]}
        sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in coco["images"]}
        for n, ann in enumerate(coco["annotations"]):
            if ann.get("iscrowd", 0):
                continue
            where = f"{ann_file}: annotation #{n} (id {ann.get('id')})"
            try:
                image_id, cat = int(ann["image_id"]), int(ann["category_id"])
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{where}: missing or malformed field: {exc!r}") from None
            if image_id not in sizes:
                raise ValueError(f"{where}: field 'image_id': no image has id {image_id}")
            if cat not in index:
                raise ValueError(f"{where}: field 'category_id': {cat} is not among the categories")
            width, height = sizes[image_id]
            k = index[cat]
            if w <= 0 or h <= 0:
                continue
            cx, cy = min(max((x + w / 2) / width, 0.0), 1.0), min(max((y + h / 2) / height, 0.0), 1.0)
            lines[image_id].append(f"{k} {cx:.6f} {cy:.6f} {min(w / width, 1.0):.6f} {min(h / height, 1.0):.6f}")
        for im in coco["images"]:
            src = (set_dir / split / im["file_name"]).resolve()
            link = img_dir / Path(im["file_name"]).name
            if not link.is_symlink():
                link.symlink_to(src)
            body = "\n".join(lines[int(im["id"])])
            (lbl_dir / f"{Path(im['file_name']).stem}.txt").write_text(body + "\n" if body else "")
    assert categories is not None
    data = {"path": str(out_dir.resolve()), "train": "images/train", "val": "images/val",
            "names": {k: str(c.get("name", c["id"])) for k, c in enumerate(categories)}}
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml, categories


def predictions_to_results(
    predictions: list[dict[str, Any]], val_coco: dict[str, Any], categories: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Ultralytics' ``predictions.json`` rows -> COCO results in the set's ids.

    Ultralytics numbers classes 1..K in its JSON (``class_map``) and names images by file stem; the set's own ids
    come back through the category order and ``file_name``. Boxes are already xywh in original-image pixels.
    """
    by_name = {Path(im["file_name"]).name: int(im["id"]) for im in val_coco["images"]}
    return [
        {"image_id": by_name[p["file_name"]], "category_id": int(categories[int(p["category_id"]) - 1]["id"]),
         "bbox": [float(v) for v in p["bbox"]], "score": float(p["score"])}
        for p in predictions
    ]


class NetworkGuard:
    """Refuses (OSError) and records every attempt to resolve a remote host or open an internet socket.

    Ultralytics probes the network in a few places even offline (fonts for plots, settings sync); this makes
    sure a benchmark run never reaches out, and says so in ``peer.json`` if something tried.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._getaddrinfo = socket.getaddrinfo
        self._connect = socket.socket.connect

    def install(self) -> None:
        guard = self

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host not in (None, "localhost", "127.0.0.1", "::1"):
                guard.attempts.append(f"getaddrinfo({host!r})")
                raise OSError(f"network access blocked by the benchmark: resolve {host!r}")
            return guard._getaddrinfo(host, *args, **kwargs)

        def connect(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.attempts.append(f"connect({address!r})")
                raise OSError(f"network access blocked by the benchmark: connect {address!r}")
            return guard._connect(sock, address)

        socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
        socket.socket.connect = connect  # type: ignore[method-assign]


def configure_offline(work: Path) -> None:
    """Environment for an offline, self-contained Ultralytics; call before importing it."""
    os.environ["YOLO_OFFLINE"] = "1"  # ultralytics.utils.is_online() -> False: no events, no update checks
    os.environ["YOLO_CONFIG_DIR"] = str(work / "ultralytics_config")  # its settings.json stays in the run folder
    os.environ.setdefault("MPLBACKEND", "Agg")


def quiet_ultralytics() -> None:
    """Turn off Ultralytics' integrations and its font check (after import)."""
    import ultralytics.data.utils as ydata
    from ultralytics.utils import SETTINGS

    off = {k: False for k in ("sync", "hub", "tensorboard", "wandb", "mlflow", "comet", "clearml", "dvc", "neptune",
                               "raytune") if k in SETTINGS}
    SETTINGS.update(off)
    # check_det_dataset downloads Arial.ttf for plot labels when it is not installed; plots are off here.
    ydata.check_font = lambda *args, **kwargs: None


def run(args: argparse.Namespace) -> dict[str, Any]:
    set_dir, work = Path(args.set).resolve(), Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    configure_offline(work)
    guard = NetworkGuard()
    guard.install()
    try:
        import torch
        from ultralytics import YOLO
    except ImportError as exc:
        raise SystemExit(f"yolo_peer: the ultralytics package is missing ({exc}); install it in the venv to run "
                         "the YOLOv8n peer (`pip install ultralytics`), or run bench_accuracy.py --only ours") from None
    import ultralytics

    quiet_ultralytics()
    t0 = time.perf_counter()
    data_yaml, categories = coco_to_yolo(set_dir, work / "data")
    convert_s = time.perf_counter() - t0

    model = YOLO("yolov8n.yaml")  # architecture only: built from the yaml, random weights, nothing downloaded
    threads = args.threads or torch.get_num_threads()

    def set_threads(_trainer: Any) -> None:
        # Ultralytics' select_device sets min(8, cpus - 1) threads on CPU; match the harness (and singleshot).
        torch.set_num_threads(threads)

    model.add_callback("on_train_start", set_threads)
    train_kwargs = {
        "data": str(data_yaml), "imgsz": args.imgsz, "epochs": args.epochs, "batch": args.batch,
        "workers": args.workers, "device": "cpu", "seed": args.seed, "deterministic": True, "plots": False,
        "amp": False, "val": False, "project": str(work), "name": "train", "exist_ok": True, "verbose": False,
    }
    if args.time_s is not None:  # Ultralytics' own time budget (hours): it re-plans its epochs to end in time
        train_kwargs["time"] = args.time_s / 3600
    t0 = time.perf_counter()
    model.train(**train_kwargs)
    train_s = time.perf_counter() - t0
    epochs_done = int(getattr(model.trainer, "epoch", args.epochs - 1)) + 1
    last = work / "train" / "weights" / "last.pt"
    if not last.is_file():
        raise SystemExit(f"yolo_peer: training ended without {last}")

    # Its own validator (multi-label NMS, rect batches) at its val defaults conf 0.001 and IoU 0.7, max_det 100 (not
    # its 300) since COCO scores 100 per image; save_json gives boxes in original pixels with file names.
    val_kwargs = {"data": str(data_yaml), "imgsz": args.imgsz, "batch": args.batch, "workers": args.workers,
                  "device": "cpu", "conf": 0.001, "iou": 0.7, "max_det": 100, "save_json": True, "plots": False,
                  "project": str(work), "name": "val", "exist_ok": True, "verbose": False}
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    metrics = YOLO(str(last)).val(**val_kwargs)
    val_s = time.perf_counter() - t0
    pred_file = work / "val" / "predictions.json"
    predictions = json.loads(pred_file.read_text()) if pred_file.is_file() else []
    val_coco = load_coco(set_dir / "annotations" / "instances_val.json")
    results = predictions_to_results(predictions, val_coco, categories)
    results_file = work / "results_val.json"
    results_file.write_text(json.dumps(results, separators=(",", ":")))
    own = {k: float(v) for k, v in getattr(metrics, "results_dict", {}).items()}
    info = {
        "ultralytics": ultralytics.__version__, "model": "yolov8n.yaml (from scratch)", "train_kwargs": train_kwargs,
        "val_kwargs": val_kwargs, "threads": threads, "convert_s": convert_s, "train_wall_s": train_s, "val_s": val_s,
        "results_file": str(results_file), "num_detections": len(results), "ultralytics_own_metrics": own,
        "epochs_done": epochs_done,
        "network_attempts": guard.attempts,
    }
    (work / "peer.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", required=True, help="COCO-format set folder (train/, val/, annotations/)")
    p.add_argument("--work", required=True, help="output folder")
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch", type=int, default=16, help="Ultralytics' default 16")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-s", type=float, default=None,
                   help="train for this many seconds (Ultralytics' time=, which re-plans the epochs) instead")
    info = run(p.parse_args(argv))
    print(f"yolo_peer: trained in {info['train_wall_s']:.1f}s, {info['num_detections']} val detections; "
          f"network attempts: {len(info['network_attempts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
