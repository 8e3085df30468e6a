"""Evaluation cost beyond the model forward: 5,000 images x ~100 detections (COCO val scale), SSD300 outputs.

Raw outputs of SSD300 (8,732 default boxes x 81 classes) are synthesised per batch from random COCO-like ground
truth: the anchors the encoder matches to a ground-truth box get its class (so detections land on the objects
with a little localisation noise) and about ``100 - #gt`` random anchors per image fire as false positives. Making
the outputs is not timed; timed are decoding + NMS (``build_postprocessor``, MLPerf settings), conversion to COCO
rows, and faster-coco-eval's evaluate + accumulate + summarize.

    python benchmarks/bench_eval.py [--images 5000] [--batch 50] [--pycocotools] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
import torch

import singleshot
from singleshot.evaluation import STAT_NAMES, coco_bbox_metrics, detections_to_rows
from singleshot.evaluation.loop import label_lookup


def make_ground_truth(num_images: int, num_classes: int, rng: np.random.Generator) -> tuple[dict, list]:
    """COCO GT dict with 640x480-ish images and 1-14 boxes each, plus per-image (boxes xyxy normalized, labels)."""
    images, anns, per_image = [], [], []
    for i in range(num_images):
        w, h = int(rng.integers(400, 641)), int(rng.integers(300, 481))
        n = int(rng.integers(1, 15))
        wh = rng.uniform(0.05, 0.6, (n, 2)) ** 1.5  # many small and medium, some large
        xy = rng.uniform(0, 1, (n, 2)) * (1 - wh)
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(1, num_classes, n)
        images.append({"id": i + 1, "width": w, "height": h})
        for (x0, y0, x1, y1), lab in zip(boxes.tolist(), labels.tolist()):
            bw, bh = (x1 - x0) * w, (y1 - y0) * h
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": lab, "bbox": [x0 * w, y0 * h, bw, bh],
                         "area": bw * bh, "iscrowd": 0})
        per_image.append((boxes, labels, (h, w)))
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes)]
    return {"images": images, "annotations": anns, "categories": cats}, per_image


def make_outputs(items: list, spec, encoder, noise: torch.Tensor, g: torch.Generator, dets_per_image: int):
    """Raw outputs ``(bbox_regression [B, A, 4], cls_logits [B, A, C])`` for a batch of GT items."""
    b, m = len(items), max(len(it[1]) for it in items)
    boxes, labels = torch.zeros(b, m, 4), torch.full((b, m), -1)
    for j, (bx, lb, _) in enumerate(items):
        boxes[j, : len(lb)] = torch.from_numpy(bx).float()
        labels[j, : len(lb)] = torch.from_numpy(lb)
    offsets, target = encoder(boxes, labels)  # (B, A, 4), (B, A)
    a, c = noise.shape
    logits = noise.expand(b, a, c).clone()
    pos = target > 0
    logits[(*pos.nonzero(as_tuple=True), target[pos])] += 9.0
    n_fp = max(0, dets_per_image - m)
    fp_anchor = torch.randint(0, a, (b, n_fp), generator=g)
    fp_class = torch.randint(1, c, (b, n_fp), generator=g)
    logits[torch.arange(b)[:, None], fp_anchor, fp_class] += torch.empty(b, n_fp).uniform_(6.0, 11.0, generator=g)
    regression = offsets + torch.randn(b, a, 4, generator=g) * 0.1
    sizes = torch.tensor([it[2] for it in items])
    return regression, logits, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--dets", type=int, default=100, help="target detections per image")
    parser.add_argument("--pycocotools", action="store_true", help="also time pycocotools on the same detections")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = CPU seconds, the target's unit)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    spec = singleshot.models.get_spec("ssd300_resnet34")
    num_classes = 81
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(0)
    gt, per_image = make_ground_truth(args.images, num_classes, rng)
    encoder = singleshot.TargetEncoder(spec.anchors)
    post = singleshot.build_postprocessor(spec)
    noise = torch.randn(8732, num_classes, generator=g) * 0.5
    noise[:, 0] += 8.0  # background wins where nothing fires (p ~0.97, as a trained SSD on empty anchors)
    lookup = label_lookup({i: i for i in range(1, num_classes)}, torch.device("cpu"))

    t_post = t_rows = t_make = 0.0
    chunks = []
    for start in range(0, args.images, args.batch):
        t0 = time.perf_counter()
        regression, logits, sizes = make_outputs(per_image[start : start + args.batch], spec, encoder, noise, g,
                                                 args.dets)
        t1 = time.perf_counter()
        dets = post(regression, logits, sizes)
        t2 = time.perf_counter()
        ids = torch.arange(start + 1, start + 1 + len(dets))
        chunks.append(detections_to_rows(dets, ids, lookup))
        t3 = time.perf_counter()
        t_make, t_post, t_rows = t_make + t1 - t0, t_post + t2 - t1, t_rows + t3 - t2
    t0 = time.perf_counter()
    rows = torch.cat(chunks).numpy()
    t_rows += time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = coco_bbox_metrics(gt, rows)
    t_metrics = time.perf_counter() - t0

    total = t_post + t_rows + t_metrics
    print(f"bench_eval: {args.images} images, {len(rows)} detections ({len(rows) / args.images:.1f}/image), "
          f"{len(gt['annotations'])} ground-truth boxes; SSD300 outputs (8732 x 81), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"  (making the synthetic raw outputs, not counted: {t_make:.2f} s)")
    print(f"  decode + NMS (build_postprocessor)      {t_post:7.2f} s  ({1e3 * t_post / args.images:.2f} ms/image)")
    print(f"  detections -> COCO rows                 {t_rows:7.2f} s")
    print(f"  COCO metrics (faster-coco-eval)         {t_metrics:7.2f} s")
    print(f"  total beyond the model forward          {total:7.2f} s  (target: well under 10 s)")
    print("  " + ", ".join(f"{n}={metrics.stats[n]:.3f}" for n in STAT_NAMES[:6]))
    if args.pycocotools:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            ev = COCOeval(coco_gt, coco_gt.loadRes(rows), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        t_ref = time.perf_counter() - t0
        same = np.allclose(ev.stats, [metrics.stats[n] for n in STAT_NAMES], atol=1e-9)
        print(f"  COCO metrics (pycocotools)              {t_ref:7.2f} s  ({t_ref / t_metrics:.1f}x slower; "
              f"12 numbers identical: {same})")


if __name__ == "__main__":
    main()
