"""The run report's figures (matplotlib, Agg): precision-recall curves, confusion matrix, label statistics.

Each ``plot_*`` writes a PNG and returns it as ``uint8[3, H, W]`` too, so the same picture goes to TensorBoard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from singleshot.data.check import SplitReport
from singleshot.evaluation.analysis import ClassAnalysis, ConfusionMatrix


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Tensor:
    """Write ``fig`` to ``path`` (PNG), close it, and return its pixels as ``uint8[3, H, W]``."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4)
    plt.close(fig)
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def plot_pr_curves(analysis: ClassAnalysis, path: Path, max_legend: int = 20) -> Tensor:
    """Precision against recall at IoU 0.5 per class (thin) and their mean over classes with ground truth (thick)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    r = analysis.recall
    curves = []
    for k, name in enumerate(analysis.names):
        p = analysis.precision50[k]
        if analysis.num_gt[k] == 0 or (p < 0).all():
            continue
        p = np.where(p < 0, 0.0, p)  # -1: recall level never reached -> precision 0 there
        curves.append(p)
        label = f"{name} {analysis.ap50[k]:.3f}" if len(analysis.names) <= max_legend else None
        ax.plot(r, p, linewidth=1, alpha=0.8, label=label)
    if curves:
        mean = np.mean(curves, axis=0)
        valid = [a for a in analysis.ap50 if a >= 0]
        ax.plot(r, mean, color="black", linewidth=3, label=f"mean (mAP@0.5 {np.mean(valid):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title="precision-recall at IoU 0.5 (COCO interpolation, 100 detections/image)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion_matrix(cm: ConfusionMatrix, path: Path) -> Tensor:
    """Counts, predicted class (rows) against true class (columns), with the background row and column."""
    plt = _pyplot()
    names = [*cm.names, "background"]
    n = len(names)
    side = min(max(5.0, 0.45 * n + 2.5), 30.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    counts = cm.counts
    # colour: each true class's column as a share of it, so rare and common classes read alike
    share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    ticks = range(n)
    ax.set_xticks(ticks, names if n <= 60 else [""] * n, rotation=90, fontsize=8)
    ax.set_yticks(ticks, names if n <= 60 else [""] * n, fontsize=8)
    ax.set_xlabel("true class (background column: detections matching no box)")
    ax.set_ylabel("predicted class (background row: missed boxes)")
    ax.set_title(f"confusion matrix: IoU >= {cm.iou_threshold:g}, score >= {cm.score_threshold:g}\n"
                 f"{cm.num_gt} ground-truth boxes, {cm.false_positives} unmatched detections", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's column")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_labels(summary: SplitReport, classes: list[str], path: Path) -> Tensor:
    """Boxes per class, box width x height, box centres, and box side / image side (``data check``'s buckets)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=100)
    counts = [summary.boxes_per_class.get(c, 0) for c in classes]
    ax = axes[0, 0]
    ax.bar(range(len(classes)), counts, color="tab:blue")
    ax.set_xticks(range(len(classes)), classes if len(classes) <= 40 else [""] * len(classes), rotation=90,
                  fontsize=8)
    ax.set_title(f"boxes per class ({sum(counts)} boxes, {summary.images} images)")
    boxes = np.concatenate(summary.boxes_cxcywh) if summary.boxes_cxcywh else np.zeros((0, 4), np.float32)
    ax = axes[0, 1]
    ax.hist2d(boxes[:, 2], boxes[:, 3], bins=40, range=[[0, 1], [0, 1]], cmap="Blues")
    ax.set(xlabel="box width / image width", ylabel="box height / image height", title="box sizes")
    ax = axes[1, 0]
    ax.hist2d(boxes[:, 0], boxes[:, 1], bins=40, range=[[0, 1], [0, 1]], cmap="Blues")
    ax.set(xlabel="centre x / image width", ylabel="centre y / image height", title="box centres")
    ax.invert_yaxis()  # image coordinates: y grows downwards
    ax = axes[1, 1]
    buckets = summary.relative_size_counts()
    ax.bar([b for b, _ in buckets], [c for _, c in buckets], color="tab:orange")
    areas = ", ".join(f"{k} {v}" for k, v in summary.coco_sizes.items())
    ax.set(xlabel="sqrt(box area / image area)", title=f"box size (COCO areas: {areas})")
    fig.tight_layout()
    return save_figure(fig, path)
