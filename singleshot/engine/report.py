"""The run folder's report: curves, tables and pictures, written at each evaluation and at the start of a run.

At the first step (:func:`start_report`): ``labels.png`` (the training labels, as ``data check`` counts them) and
``train_batch.jpg`` (the first augmented batch with its boxes). At each evaluation (:func:`evaluation_report`):
``results.csv`` (one row per evaluation), ``per_class_ap.csv`` (+ the same table on the console),
``pr_curves.png``, ``confusion_matrix.png``, ``curves.png`` (loss, AP, learning rate), ``predictions/*.jpg``
(ground truth left, predictions right) and ``coco_results.json`` (the latest evaluation's detections, written by
the evaluation itself). The pictures also go to TensorBoard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from singleshot.data.base import DetectionDataset
from singleshot.inference.core import InferenceCore


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
    fig, (ax_loss, ax_map, ax_lr) = plt.subplots(1, 3, figsize=(15, 4), dpi=100)
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
    lr_points = [(r["step"], r["lr"]) for r in train if "lr" in r]
    if lr_points:
        ax_lr.plot(*zip(*lr_points), "-", color="tab:green")
    ax_lr.set_xlabel("step")
    ax_lr.set_title("learning rate")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


@torch.no_grad()
def prediction_pictures(
    core: InferenceCore,
    dataset: DetectionDataset,
    out_dir: Path,
    num: int = 8,
    min_score: float = 0.3,
    classes: list[str] | None = None,
) -> list[Path]:
    """The first ``num`` validation images as JPEGs: ground truth (left) next to the detections of ``core``'s model
    with score >= ``min_score`` (right).

    ``classes`` names the model's labels (default: the dataset's, when both use one label order).
    """
    from singleshot.inference.draw import draw_detections, save_image

    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = core.model.training
    core.model.eval()
    paths = []
    try:
        for i in range(min(num, len(dataset))):
            image, target = dataset[i]  # uint8[3, H, W]
            h, w = image.shape[-2:]
            det = core.detect([image])[0]
            keep = det["scores"] >= min_score
            boxes, labels, scores = det["boxes"][keep], det["labels"][keep], det["scores"][keep]
            predicted = draw_detections(image, boxes, labels, scores, classes or dataset.classes)
            truth = draw_detections(image, target["boxes"], target["labels"], None, dataset.classes)
            gap = torch.full((3, h, max(2, w // 100)), 255, dtype=torch.uint8)
            drawn = torch.cat([truth, gap, predicted], dim=2)  # ground truth | predictions, side by side
            path = out_dir / f"val_{target['image_id']:06d}.jpg"
            save_image(drawn, path)
            paths.append(path)
    finally:
        core.model.train(was_training)
    return paths


def write_report(
    run_dir: Path,
    *,
    core: InferenceCore,
    dataset: DetectionDataset | None,
    num_pictures: int = 8,
    classes: list[str] | None = None,
) -> list[Path]:
    """``curves.png`` and ``predictions/*.jpg`` in ``run_dir`` (``classes``: the model's label names)."""
    written = [plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")]
    if dataset is not None and num_pictures > 0 and prediction_pictures(
        core, dataset, run_dir / "predictions", num_pictures, classes=classes
    ):
        written.append(run_dir / "predictions")
    return written


RESULTS_CSV, PER_CLASS_CSV, RESULTS_JSON = "results.csv", "per_class_ap.csv", "coco_results.json"
_LOSS_KEYS = ("loss", "box", "cls")


def write_results_csv(run_dir: Path) -> Path:
    """``results.csv``: one row per evaluation in ``metrics.jsonl``: epoch, step, the learning rate of the last
    logged step before it, the training losses averaged over the steps logged since the previous evaluation (the
    epoch or epochs it follows), precision and recall at IoU 0.5 (at the confidence of the best F1, see
    :func:`singleshot.evaluation.metrics.precision_recall_at_best_f1`), the 12 COCO numbers. Rewritten whole, so that
    a resumed run stays consistent."""
    from singleshot.evaluation import STAT_NAMES

    train, evals = read_metrics(run_dir / "metrics.jsonl")
    header = ["epoch", "step", "lr", *_LOSS_KEYS, "precision", "recall", *STAT_NAMES]
    lines = [",".join(header)]
    previous = -1
    for ev in evals:
        stretch = [r for r in train if previous < r["step"] <= ev["step"]]
        before = [r for r in train if r["step"] <= ev["step"]]
        losses = [_mean([r.get(k) for r in stretch]) for k in _LOSS_KEYS]
        values = [ev.get("epoch", ""), ev["step"], _fmt(before[-1].get("lr") if before else None, 6),
                  *(_fmt(v, 4) for v in losses), _fmt(ev.get("precision50"), 4), _fmt(ev.get("recall50"), 4),
                  *(_fmt(ev.get(k), 4) for k in STAT_NAMES)]
        lines.append(",".join(str(v) for v in values))
        previous = ev["step"]
    path = run_dir / RESULTS_CSV
    path.write_text("\n".join(lines) + "\n")
    return path


def _mean(values: list[Any]) -> float | None:
    """Mean of the numbers among ``values`` (None when there are none)."""
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(numbers) / len(numbers) if numbers else None


def _fmt(value: Any, digits: int) -> str:
    """``digits`` significant digits (the learning rate) or decimals (losses, AP), "" when missing."""
    if value is None:
        return ""
    return f"{float(value):.{digits}g}" if digits > 4 else f"{float(value):.{digits}f}"


def write_per_class_csv(analysis: Any, path: Path) -> Path:
    """``per_class_ap.csv``: class, category_id, num_gt, AP, AP50, AP75 (fractions, 4 decimals; -1 = no ground
    truth)."""
    lines = ["class,category_id,num_gt,AP,AP50,AP75"]
    for r in analysis.table_rows():
        name = '"' + r["class"].replace('"', '""') + '"' if "," in r["class"] or '"' in r["class"] else r["class"]
        lines.append(f"{name},{r['category_id']},{r['num_gt']},{r['AP']:.4f},{r['AP50']:.4f},{r['AP75']:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluation_report(
    run_dir: Path,
    *,
    dataset: DetectionDataset,
    core: InferenceCore,
    step: int,
    classes: list[str] | None = None,
    num_pictures: int = 8,
    evaluation: dict[str, Any],
    score_threshold: float = 0.3,
    tensorboard: Any = None,
    log: Any = print,
) -> list[Path]:
    """Everything the module docstring lists for one evaluation of a training run: ``results.csv`` and
    ``curves.png`` from the run's ``metrics.jsonl``, then :func:`analysis_report` into the run folder."""
    written = [write_results_csv(run_dir), plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")]
    written += analysis_report(run_dir, dataset=dataset, core=core, step=step, classes=classes,
                               num_pictures=num_pictures, evaluation=evaluation, score_threshold=score_threshold,
                               tensorboard=tensorboard, log=log)
    return written


def analysis_report(
    folder: Path,
    *,
    dataset: DetectionDataset,
    core: InferenceCore,
    evaluation: dict[str, Any],
    step: int = 0,
    classes: list[str] | None = None,
    num_pictures: int = 8,
    score_threshold: float = 0.3,
    tensorboard: Any = None,
    log: Any = print,
) -> list[Path]:
    """The per-class table (``per_class_ap.csv`` + the console), ``pr_curves.png``, ``confusion_matrix.png`` and
    ``predictions/*.jpg`` of one evaluation, into ``folder`` (a training run's folder, or ``singleshot eval``'s).

    Args:
        dataset: the validation set that was evaluated (its ground truth and its first ``num_pictures`` images).
        core: the evaluated model with its precision and post-processing (the pictures' detections).
        evaluation: what :func:`singleshot.evaluation.evaluate` returned with ``keep_detections=True`` (its
            ``detections``, ``image_ids`` and ``ground_truth``: the tables and figures are made from them).
        score_threshold: detections counted in the confusion matrix and drawn on the pictures.
        tensorboard: a ``SummaryWriter`` (or None) that receives the figures and pictures at ``step``.
        log: where the per-class table goes (None: nowhere).
    """
    from singleshot.engine.plots import plot_confusion_matrix, plot_pr_curves
    from singleshot.evaluation.analysis import analyze_classes, confusion_matrix
    from singleshot.evaluation.metrics import as_coco

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "detections" in evaluation:
        gt = as_coco(evaluation["ground_truth"])
        ids, rows = evaluation["image_ids"], evaluation["detections"]
        analysis = analyze_classes(gt, rows, ids)
        if log is not None:
            log(f"per-class AP (step {step}, fractions):\n{analysis.text()}")
        written.append(write_per_class_csv(analysis, folder / PER_CLASS_CSV))
        figures = {
            "pr_curves": plot_pr_curves(analysis, folder / "pr_curves.png"),
            "confusion_matrix": plot_confusion_matrix(
                confusion_matrix(gt, rows, score_threshold=score_threshold, image_ids=ids),
                folder / "confusion_matrix.png"),
        }
        written += [folder / "pr_curves.png", folder / "confusion_matrix.png"]
        if (folder / RESULTS_JSON).is_file():  # written by the evaluation itself
            written.append(folder / RESULTS_JSON)
        if tensorboard is not None:
            for tag, image in figures.items():
                tensorboard.add_image(f"eval/{tag}", image, step)
    if num_pictures > 0:
        pics = prediction_pictures(core, dataset, folder / "predictions", num_pictures, min_score=score_threshold,
                                   classes=classes)
        if pics:
            written.append(folder / "predictions")
        if tensorboard is not None:
            from torchvision.io import decode_jpeg, read_file

            for p in pics[:4]:
                tensorboard.add_image(f"predictions/{p.stem}", decode_jpeg(read_file(str(p))), step)
    if tensorboard is not None:
        tensorboard.flush()
    return written


def train_batch_picture(batch: dict[str, Any], classes: list[str], mean: tuple[float, ...], std: tuple[float, ...],
                        path: Path, max_images: int = 16) -> Tensor:
    """The first ``max_images`` images of a collated training batch with their boxes, as a grid JPEG.

    ``batch``: ``images [B, 3, S, S]`` float normalized (or uint8 when colour work is deferred to the GPU: then the
    colour jitter is not in the picture), ``boxes [B, M, 4]`` xyxy normalized, ``labels [B, M]`` (-1 = padding).
    Returns the grid ``uint8[3, H, W]``.
    """
    from torchvision.utils import make_grid

    from singleshot.inference.draw import draw_detections, save_image

    images = batch["images"][:max_images].detach().cpu()
    if images.dtype != torch.uint8:
        m = torch.tensor(mean).view(1, 3, 1, 1)
        s = torch.tensor(std).view(1, 3, 1, 1)
        images = ((images.float() * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
    size = images.shape[-1]
    drawn = []
    for i, image in enumerate(images):
        real = batch["labels"][i].cpu() > 0
        boxes = batch["boxes"][i].cpu()[real] * size  # (N, 4) xyxy normalized -> pixels of the S x S input
        drawn.append(draw_detections(image.contiguous(), boxes, batch["labels"][i].cpu()[real], None, classes))
    grid = make_grid(torch.stack(drawn), nrow=min(4, len(drawn)), padding=4, pad_value=255)
    save_image(grid, path)
    return grid


def start_report(
    run_dir: Path, *, batch: dict[str, Any], train_set: DetectionDataset, mean: tuple[float, ...],
    std: tuple[float, ...], tensorboard: Any = None,
) -> list[Path]:
    """``labels.png`` (the training set's labels) and ``train_batch.jpg`` (``batch``, the first one trained on)."""
    from singleshot.data.check import label_summary
    from singleshot.engine.plots import plot_labels

    labels = plot_labels(label_summary(train_set), list(train_set.classes), run_dir / "labels.png")
    grid = train_batch_picture(batch, list(train_set.classes), mean, std, run_dir / "train_batch.jpg")
    if tensorboard is not None:
        tensorboard.add_image("data/labels", labels, 0)
        tensorboard.add_image("data/train_batch", grid, 0)
        tensorboard.flush()
    return [run_dir / "labels.png", run_dir / "train_batch.jpg"]
