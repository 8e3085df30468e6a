"""End-of-run report: loss and mAP curves (PNG) from ``metrics.jsonl``, and validation pictures with predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from singleshot.data.base import DetectionDataset


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train records, eval records)`` of a metrics JSONL; a resumed run's repeated steps keep the latest line."""
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("kind") == "train":
                train[rec["step"]] = rec
            elif rec.get("kind") == "eval":
                evals[rec["step"]] = rec
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def plot_curves(metrics_path: Path, out_path: Path) -> Path:
    """Training loss (box, cls, total) and validation mAP / AP50 against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = read_metrics(metrics_path)
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    if train:
        steps = [r["step"] for r in train]
        for key, style in (("loss", "-"), ("box", "--"), ("cls", ":")):
            ax_loss.plot(steps, [r[key] for r in train], style, label=key)
        ax_loss.set_yscale("log")
        ax_loss.legend()
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss")
    ax_loss.grid(alpha=0.3)
    if evals:
        steps = [r["step"] for r in evals]
        ax_map.plot(steps, [r["AP"] for r in evals], "o-", label="mAP@[.5:.95]")
        ax_map.plot(steps, [r["AP50"] for r in evals], "s--", label="AP@.5")
        ax_map.legend()
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("step")
    ax_map.set_title("validation COCO AP")
    ax_map.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


@torch.no_grad()
def prediction_pictures(
    model: nn.Module,
    dataset: DetectionDataset,
    postprocess: nn.Module,
    out_dir: Path,
    device: torch.device,
    num: int = 8,
    min_score: float = 0.3,
) -> list[Path]:
    """Draw the model's detections (score >= ``min_score``) on the first ``num`` validation images as JPEGs."""
    from torchvision.transforms.v2 import functional as TF

    from singleshot.inference.draw import draw_detections, save_image

    spec = model.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(3, 1, 1)
    paths = []
    try:
        for i in range(min(num, len(dataset))):
            image, target = dataset[i]  # uint8[3, H, W]
            h, w = image.shape[-2:]
            x = TF.resize(image.to(device), [spec.image_size] * 2, antialias=True).float() / 255
            x = ((x - mean) / std)[None]  # (1, 3, S, S)
            bbox, logits = model(x)
            det = postprocess(bbox.float(), logits.float(), torch.tensor([[h, w]], device=device))[0]
            keep = det["scores"] >= min_score
            boxes, labels, scores = det["boxes"][keep], det["labels"][keep], det["scores"][keep]
            drawn = draw_detections(image, boxes, labels, scores, dataset.classes)
            path = out_dir / f"val_{target['image_id']:06d}.jpg"
            save_image(drawn, path)
            paths.append(path)
    finally:
        model.train(was_training)
    return paths


def write_report(
    run_dir: Path,
    *,
    model: nn.Module,
    dataset: DetectionDataset | None,
    postprocess: nn.Module,
    device: torch.device,
    num_pictures: int = 8,
) -> list[Path]:
    """``curves.png`` and ``predictions/*.jpg`` in ``run_dir``; returns what was written."""
    written = [plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")]
    if dataset is not None and num_pictures > 0:
        pics = prediction_pictures(model, dataset, postprocess, run_dir / "predictions", device, num_pictures)
        if pics:
            written.append(run_dir / "predictions")
    return written
