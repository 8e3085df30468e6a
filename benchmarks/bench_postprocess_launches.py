"""What post-processing asks of a GPU, counted on a CPU: operator calls, NMS calls and host reads per batch.

On a GPU each operator is at least one kernel launch and each host read (``.item()``, ``nonzero``, ``.tolist()``)
waits for the queue to drain. This counts them with a ``TorchDispatchMode`` for the dense SSD300 workload (an
early-training SSD300 at MLPerf's threshold 0.05: ~8,500 candidates per image, as ``bench_box.py`` makes them) at
batch 1, 8 and 64, for:

- ``list / torchvision``: the list path with ``torchvision.ops.nms`` in blocks (what CUDA ran before the fixed path);
- ``fixed``: the fixed-shape path (what CUDA runs now). Its NMS is one Triton kernel launch on CUDA; here it runs
  as the torch loop, whose operators are not counted (they are what the one launch replaces).

"operators" leaves out those that only make views (no kernel); "host reads" counts the reads before the per-image
split (``item``, ``nonzero``, ...); both paths end with one ``.tolist()`` for the split, not counted.

The CPU wall times printed beside them are this machine's and say nothing about a GPU's.

    python benchmarks/bench_postprocess_launches.py [--batches 1 8 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_box import make_dense_outputs

from singleshot.box import coder as coder_module
from singleshot.box import nms as nms_module
from singleshot.box import postprocess_fixed
from singleshot.box.factory import build_postprocessor
from singleshot.models import get_spec

HOST_READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique")
# Operators that only make views (no kernel on a GPU): the per-image split makes a few per image.
VIEWS = ("aten.view", "aten._unsafe_view", "aten.select", "aten.slice", "aten.unbind", "aten.split", "aten.expand",
         "aten.alias", "aten.detach", "aten.t", "aten.transpose", "aten.unsqueeze", "aten.squeeze", "aten.as_strided",
         "aten.permute", "aten.split_with_sizes")  # fmt: skip


class Counted(TorchDispatchMode):
    """Counts operator calls (by name) while not paused."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.paused = False

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not self.paused:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count(path: str, batch: int) -> dict[str, Any]:
    reg, logits = make_dense_outputs(batch)
    post = build_postprocessor(get_spec("ssd300_resnet34"))
    sizes = torch.tensor([[480, 640]] * batch)
    coder_module._SYNC_FREE = "1" if path == "fixed" else "0"
    nms_module._BACKEND = "torchvision"
    nms_module._PADDED_BACKEND = "torch"
    post(reg, logits, sizes)  # caches (default boxes) outside the count
    counter = Counted()
    launches = []
    padded = postprocess_fixed.padded_nms

    def one_launch(*args: Any) -> torch.Tensor:
        launches.append(1)
        counter.paused = True
        try:
            return padded(*args)
        finally:
            counter.paused = False

    postprocess_fixed.padded_nms = one_launch
    try:
        with counter:
            dets = post(reg, logits, sizes)
    finally:
        postprocess_fixed.padded_nms = padded
    t0 = time.perf_counter()
    post(reg, logits, sizes)
    wall = time.perf_counter() - t0
    ops = counter.ops
    nms_calls = ops["torchvision.nms"] + len(launches)
    kernels = sum(n for name, n in ops.items() if name not in VIEWS)
    return {"path": "fixed" if path == "fixed" else "list / torchvision", "batch": batch, "ops": kernels,
            "nms_calls": nms_calls, "host_reads": sum(ops[k] for k in HOST_READS), "cpu_ms": wall * 1e3,
            "detections": sum(len(d["scores"]) for d in dets)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    print(f"{'path':<20} {'batch':>5} {'operators':>9} {'NMS calls':>9} {'host reads':>10} {'CPU ms':>8} {'dets':>7}")
    for path in ("list", "fixed"):
        for b in args.batches:
            r = count(path, b)
            print(f"{r['path']:<20} {r['batch']:>5} {r['ops']:>9} {r['nms_calls']:>9} {r['host_reads']:>10} "
                  f"{r['cpu_ms']:>8.0f} {r['detections']:>7}")  # fmt: skip


if __name__ == "__main__":
    main()
