"""The evaluation loop shared by training (in the loop) and ``singleshot eval``.

Each rank runs the model over its shard of the validation loader (batched forward, then decoding + NMS on the
device), turns the detections into COCO rows on the device, and moves one small array per batch to the host.
Rank 0 gathers the rows, scores them with faster-coco-eval and shares the numbers with every rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from singleshot.accelerator import rank_and_world_size
from singleshot.evaluation.groundtruth import coco_ground_truth, find_dataset
from singleshot.evaluation.metrics import (
    STAT_NAMES,
    CocoMetrics,
    coco_bbox_metrics,
    format_per_class,
    write_results_json,
)
from singleshot.inference.core import InferenceCore


def detections_to_rows(
    detections: list[dict[str, Tensor]], image_ids: Tensor, label_to_category: Tensor
) -> Tensor:
    """Post-processor output -> COCO rows, batched on the device.

    Args:
        detections: per image ``boxes [K, 4]`` xyxy original pixels, ``scores [K]``, ``labels [K]`` in 1..K.
        image_ids: ``Tensor[B] int64``.
        label_to_category: ``Tensor[K + 1] int64`` lookup from label to COCO category id.
    Returns:
        ``Tensor[N, 7] float64`` rows ``(image_id, x, y, w, h, score, category_id)``, xywh in original pixels.
    """
    device = label_to_category.device
    if not detections:
        return torch.zeros(0, 7, dtype=torch.float64, device=device)
    counts = torch.tensor([len(d["scores"]) for d in detections], device=device)
    boxes = torch.cat([d["boxes"] for d in detections]).to(device, torch.float64)  # (N, 4) xyxy
    scores = torch.cat([d["scores"] for d in detections]).to(device, torch.float64)
    labels = torch.cat([d["labels"] for d in detections]).to(device)
    ids = image_ids.to(device).repeat_interleave(counts).to(torch.float64)
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # (N, 4) xyxy -> xywh
    cats = label_to_category[labels].to(torch.float64)
    return torch.cat([ids[:, None], xywh, scores[:, None], cats[:, None]], dim=1)


def label_lookup(label_to_category_id: dict[int, int], device: torch.device) -> Tensor:
    """``{label: category_id}`` -> ``Tensor[max_label + 1] int64`` (index 0, background, maps to -1)."""
    table = torch.full((max(label_to_category_id, default=0) + 1,), -1, dtype=torch.int64)
    for label, cat in label_to_category_id.items():
        table[int(label)] = int(cat)
    return table.to(device)


def _gather_rows(rows: np.ndarray, seen: list[int]) -> tuple[np.ndarray, list[int]] | None:
    """All ranks' rows on rank 0 (None elsewhere); images repeated by the sampler's padding are counted once."""
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return rows, seen
    gathered: list[Any] = [None] * world_size if rank == 0 else []
    dist.gather_object((rows, seen), gathered if rank == 0 else None, dst=0)
    if rank != 0:
        return None
    all_rows, all_seen, done = [], [], set()
    for rank_rows, rank_seen in gathered:
        new = set(rank_seen) - done
        all_seen += [i for i in rank_seen if i in new]
        all_rows.append(rank_rows[np.isin(rank_rows[:, 0].astype(np.int64), list(new))])
        done |= new
    return np.concatenate(all_rows), sorted(set(all_seen))


def _broadcast(result: dict[str, Any] | None) -> dict[str, Any]:
    if rank_and_world_size()[1] == 1:
        assert result is not None
        return result
    box = [result]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def evaluate(
    core: InferenceCore,
    loader: Iterable[dict[str, Any]],
    *,
    ground_truth: dict[str, Any] | str | None = None,
    label_to_category_id: dict[int, int] | None = None,
    results_file: str | None = None,
    keep_detections: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """COCO bbox evaluation of ``core``'s model over ``loader``; safe to call from every DDP rank.

    Args:
        core: the model with its precision and post-processing (:class:`~singleshot.inference.core.InferenceCore`;
            the model may be plain, an EMA copy, compiled or an exported graph). The model is put in eval mode and
            restored afterwards.
        loader: batches as the data layer collates them (``images`` normalized, ``image_ids``, ``orig_sizes``
            (H, W)), on the core's device or moved there here; under DDP each rank iterates its own shard
            (``build_loader(..., shuffle=False)`` does this).
        ground_truth: COCO instances dict or JSON path; default: from the loader's dataset (its JSON for COCO
            datasets, built from the parsed annotations otherwise). Only the images the loader yielded are scored.
        label_to_category_id: label (1..K) -> COCO category id; default: the loader's dataset's.
        results_file: if given, rank 0 writes the COCO results JSON there (xywh original pixels, category ids).
        keep_detections: rank 0's result also holds ``"detections"`` (``float64[N, 7]`` rows ``(image_id, x, y, w,
            h, score, category_id)``, what the results JSON holds), ``"image_ids"`` (the images scored) and
            ``"ground_truth"`` (the COCO dict or path scored against), for reports made from the same evaluation.
        log: where rank 0 prints the 12 lines and the per-class table (None: silent).

    Returns (identical on every rank, apart from what ``keep_detections`` adds on rank 0):
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}``: floats in
        [0, 1] (-1.0 where an area range has no ground truth, as pycocotools); ``"per_class_AP"``: ``{name: AP}``;
        ``"num_images"``, ``"num_detections"``: ints; ``"inference_s"`` (forward + decode + NMS, rank 0's shard)
        and ``"metrics_s"`` (faster-coco-eval): wall seconds.
    """
    dataset = find_dataset(loader)
    if label_to_category_id is None:
        if dataset is None:
            raise ValueError("pass label_to_category_id: the loader has no singleshot dataset to take it from")
        label_to_category_id = dataset.label_to_category_id
    if ground_truth is None and (dataset is None or rank_and_world_size()[0] == 0):
        if dataset is None:
            raise ValueError("pass ground_truth: the loader has no singleshot dataset to build it from")
        ground_truth = coco_ground_truth(dataset)
    device = core.device
    lookup = label_lookup(label_to_category_id, device)

    was_training = core.model.training
    core.model.eval()
    chunks: list[Tensor] = []
    seen: list[int] = []
    start = time.perf_counter()
    try:
        for batch in loader:
            # A loader built for the device (build_loader(device=...)) already put the batch there: no-op moves.
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
            dets = core.detect_batch(batch["images"], batch["orig_sizes"])
            chunks.append(detections_to_rows(dets, batch["image_ids"], lookup).cpu())
            seen += batch["image_ids"].tolist()
    finally:
        core.model.train(was_training)
    rows = torch.cat(chunks).numpy() if chunks else np.zeros((0, 7))
    inference_s = time.perf_counter() - start

    gathered = _gather_rows(rows, seen)
    result: dict[str, Any] | None = None
    if gathered is not None:
        all_rows, all_seen = gathered
        start = time.perf_counter()
        metrics = coco_bbox_metrics(ground_truth, all_rows, image_ids=all_seen)  # type: ignore[arg-type]
        result = metrics_dict(metrics, inference_s, time.perf_counter() - start)
        if log is not None:
            log(metrics.summary)
            if metrics.precision50 >= 0:
                log(f" precision {metrics.precision50:.3f}, recall {metrics.recall50:.3f} at IoU 0.5 (score >= "
                    f"{metrics.confidence50:.2f}, the best F1)")
            log(format_per_class(metrics.per_class))
        if results_file:  # after the numbers are shown: a failed write then loses no result
            write_results_json(all_rows, results_file)
    shared = _broadcast(result)
    if keep_detections and gathered is not None:
        shared = {**shared, "detections": gathered[0], "image_ids": gathered[1], "ground_truth": ground_truth}
    return shared


def metrics_dict(metrics: CocoMetrics, inference_s: float, metrics_s: float) -> dict[str, Any]:
    """The flat dict :func:`evaluate` returns."""
    return {
        **{name: metrics.stats[name] for name in STAT_NAMES},
        "precision50": metrics.precision50,
        "recall50": metrics.recall50,
        "confidence50": metrics.confidence50,
        "per_class_AP": dict(metrics.per_class),
        "num_images": metrics.num_images,
        "num_detections": metrics.num_detections,
        "inference_s": inference_s,
        "metrics_s": metrics_s,
    }
