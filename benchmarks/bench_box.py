"""Box-math benchmark: singleshot vs the MLPerf reference algorithms, side by side on one CPU thread.

Run: ``python benchmarks/bench_box.py [--repeats 5] [--skip-reference-decode] [--classes-per-box 12]``

1. encoding a batch of 32 images with 1-12 boxes each;
2. loss forward + backward at batch 32 for the SSD300 head (8732 anchors, 81 classes);
3. decode + NMS of a batch of 32 where ~300 default boxes per image score above 0.05;
4. the same on dense outputs, as an early-training SSD300 gives at each MLPerf evaluation: random logits with +4 on
   the background and 300 anchors per image pushed +7 on a random class (~8,500 candidates per image above 0.05);
5. SSD320 v1.2 decode + NMS (no reference: its reference is TF): batch 32, 12,804 anchors, 80 sigmoid classes,
   threshold 1e-8, NMS 0.6, 100 per class kept after NMS, 100 per image; logits of a freshly initialised head
   (bias -4.6) plus noise, so every (anchor, class) is a candidate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.ops import box_convert

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mlperf_reference_ops as ref

from singleshot.box import SSD300_ANCHORS, MultiBoxLoss, PostProcessor, TargetEncoder, default_boxes
from singleshot.box.factory import build_postprocessor
from singleshot.models import get_spec


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def make_gt(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(batch):
        n = int(torch.randint(1, 13, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 0.7
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.02
        boxes.append(torch.cat([xy, xy + wh], 1))
        labels.append(torch.randint(1, 81, (n,), generator=g))
    m = max(len(b) for b in boxes)
    padded = torch.zeros(batch, m, 4)
    padded_labels = torch.full((batch, m), -1, dtype=torch.long)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        padded[i, : len(b)], padded_labels[i, : len(b)] = b, lab
    return boxes, labels, padded, padded_labels


def make_outputs(batch: int, per_image: int = 300, classes_per_box: int = 12, seed: int = 0):
    """Raw SSD300 outputs where ~``per_image`` default boxes per image score above 0.05, each in
    ``classes_per_box`` classes (an undertrained detector: a low background score spread over several classes);
    every other anchor is confidently background. Offsets are small, so boxes stay near their anchors."""
    g = torch.Generator().manual_seed(seed)
    a = 8732
    logits = torch.randn(batch, a, 81, generator=g)
    logits[..., 0] += 12.0
    for i in range(batch):
        idx = torch.randperm(a, generator=g)[:per_image]
        cls = torch.stack([torch.randperm(80, generator=g)[:classes_per_box] + 1 for _ in range(per_image)])
        logits[i, idx, 0] -= 14.0
        logits[i, idx[:, None], cls] += 14.0
    reg = torch.randn(batch, a, 4, generator=g) * 0.3
    return reg, logits


def make_dense_outputs(batch: int, seed: int = 0):
    """Raw SSD300 outputs of an undertrained detector: N(0, 1) logits with +4 on the background, and 300 anchors
    per image pushed +7 on one random class (~8,500 (box, class) pairs per image above 0.05)."""
    g = torch.Generator().manual_seed(seed)
    a = 8732
    logits = torch.randn(batch, a, 81, generator=g)
    logits[..., 0] += 4.0
    for i in range(batch):
        idx = torch.randperm(a, generator=g)[:300]
        logits[i, idx, torch.randint(1, 81, (300,), generator=g)] += 7.0
    return torch.randn(batch, a, 4, generator=g) * 0.3, logits


def make_ssd320_outputs(batch: int, seed: int = 0):
    """Raw SSD320 outputs ([B, 12804, 4], [B, 12804, 80]): class logits -4.6 + N(0, 1), 20 anchors per image
    pushed +8 on a random class, small offsets."""
    g = torch.Generator().manual_seed(seed)
    a = 12804
    logits = torch.randn(batch, a, 80, generator=g) - 4.6
    for i in range(batch):
        logits[i, torch.randperm(a, generator=g)[:20], torch.randint(0, 80, (20,), generator=g)] += 8.0
    return torch.randn(batch, a, 4, generator=g) * 0.3, logits


def reference_decode_ms(reg, logits, anchors) -> float:
    """One run of the reference's per-image, per-class decode (it takes seconds to tens of seconds)."""
    ploc, plabel = reg.permute(0, 2, 1), logits.permute(0, 2, 1)
    t0 = time.perf_counter()
    ref.decode_batch(ploc, plabel, anchors)
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-reference-decode", action="store_true", help="the reference decode takes ~7 s")
    parser.add_argument(
        "--classes-per-box", type=int, default=12, help="decode case: classes above 0.05 per scoring box (max 19)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    b = 32
    anchors = default_boxes(SSD300_ANCHORS)
    dboxes_ltrb = box_convert(anchors, "cxcywh", "xyxy")
    rows = []

    # 1. encoding
    boxes, labels, padded, padded_labels = make_gt(b)
    encoder = TargetEncoder(SSD300_ANCHORS)
    t_ref = timed(lambda: [ref.encode_image(bx, lb, dboxes_ltrb) for bx, lb in zip(boxes, labels)], args.repeats)
    t_ours = timed(lambda: encoder(padded, padded_labels), args.repeats)
    rows.append(("encode 32 images, 1-12 boxes", t_ref, t_ours, 5.0))

    # 2. loss forward + backward
    offsets, tl = encoder(padded, padded_labels)
    gloc_xywh = torch.stack(
        [torch.stack(ref.encode_image(bx, lb, dboxes_ltrb)[0:1])[0] for bx, lb in zip(boxes, labels)]
    )
    reg, logits = make_outputs(b, classes_per_box=args.classes_per_box)
    loss_fn = MultiBoxLoss()

    def ref_loss():
        ploc = reg.permute(0, 2, 1).contiguous().requires_grad_()
        plabel = logits.permute(0, 2, 1).contiguous().requires_grad_()
        ref.loss(ploc, plabel, gloc_xywh.permute(0, 2, 1), tl, anchors.t()[None]).backward()

    def our_loss():
        r, c = reg.clone().requires_grad_(), logits.clone().requires_grad_()
        loss_fn(r, c, offsets, tl)["loss"].backward()

    rows.append(
        ("loss fwd+bwd, batch 32, SSD300 head", timed(ref_loss, args.repeats), timed(our_loss, args.repeats), 1.5)
    )

    # 3. decode + NMS
    post = PostProcessor(SSD300_ANCHORS)
    sizes = torch.tensor([[480, 640]] * b)
    scores = logits.softmax(-1)[..., 1:]
    above = (scores > 0.05).any(-1).sum(1).float().mean()
    pairs = (scores > 0.05).sum((1, 2)).float().mean()
    print(
        f"decode input: {above:.0f} default boxes per image above 0.05, {pairs:.0f} (box, class) candidates per image"
    )
    t_ours = timed(lambda: post(reg, logits, sizes), args.repeats)
    t_ref = float("nan") if args.skip_reference_decode else reference_decode_ms(reg, logits, anchors)
    rows.append(("decode + NMS, batch 32", t_ref, t_ours, 100.0))

    # 4. dense decode + NMS
    reg_d, logits_d = make_dense_outputs(b)
    pairs = (logits_d.softmax(-1)[..., 1:] > 0.05).sum((1, 2)).float().mean()
    print(f"dense decode input: {pairs:.0f} (box, class) candidates per image above 0.05")
    t_ours = timed(lambda: post(reg_d, logits_d, sizes), args.repeats)
    t_ref = float("nan") if args.skip_reference_decode else reference_decode_ms(reg_d, logits_d, anchors)
    rows.append(("decode + NMS, batch 32, dense", t_ref, t_ours, 100.0))

    # 5. SSD320 decode + NMS (ours only)
    post320 = build_postprocessor(get_spec("ssd320_resnet50_fpn"))
    reg_f, logits_f = make_ssd320_outputs(b)
    t_ours = timed(lambda: post320(reg_f, logits_f, torch.tensor([[480, 640]] * b)), args.repeats)
    rows.append(("SSD320 decode + NMS, batch 32, thr 1e-8", float("nan"), t_ours, float("nan")))

    print(f"torch {torch.__version__}, 1 CPU thread, median of {args.repeats} (reference decode: one run)")
    print(f"{'operation':40s} {'reference ms':>13s} {'singleshot ms':>14s} {'speed-up':>9s} {'target':>7s}")
    for name, r, o, target in rows:
        if r != r:  # no reference number
            print(f"{name:40s} {'-':>13s} {o:14.2f} {'-':>9s} {'-':>7s}")
        else:
            print(f"{name:40s} {r:13.2f} {o:14.2f} {r / o:8.1f}x {target:6.1f}x")


if __name__ == "__main__":
    main()
