"""What one training step asks of a GPU, counted on a CPU: operator calls per section of :class:`TrainStep`.

On a GPU each operator is at least one kernel launch; a step of many small launches is bound by the host that
queues them, not by the GPU. This runs the real step (the model, its target encoder and loss in their fixed-shape
forms, the NaN guard, backward, the optimizer with the fp16 gradient scaler's bookkeeping, the lr schedule) on a
synthetic batch and counts the ATen operators dispatched in each section with a ``TorchDispatchMode``, for

- ``foreach + undo``: a foreach optimizer, whose non-finite step is undone from a snapshot (the CPU's default);
- ``fused + skip``: the fused kernel, which skips a flagged step itself (CUDA's default; no snapshot).

"operators" leaves out the ones that only make views (no kernel). The CPU milliseconds beside them are this
machine's and say nothing about a GPU's; what they show is where the operators go.

    python benchmarks/bench_step_launches.py [--models ssd300_resnet34 ssd300_resnet50] [--batch 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("SINGLESHOT_SYNC_FREE", "1")  # the encoder and loss take the forms they take on a GPU

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from singleshot.box.factory import build_encoder, build_loss
from singleshot.engine.optim import build_optimizer
from singleshot.engine.schedule import LRScheduler, build_schedule
from singleshot.engine.step import TrainStep
from singleshot.models import build_architecture, get_spec

SECTIONS = ("encode", "forward", "loss", "guard", "zero_grad", "backward", "optimizer")
VIEWS = frozenset({
    "aten.view", "aten._unsafe_view", "aten.select", "aten.slice", "aten.unbind", "aten.split", "aten.expand",
    "aten.alias", "aten.detach", "aten.t", "aten.transpose", "aten.unsqueeze", "aten.squeeze", "aten.as_strided",
    "aten.permute", "aten.split_with_sizes", "aten.reshape", "aten.flatten", "aten.expand_as", "aten.view_as",
})  # fmt: skip


class SectionOps(TorchDispatchMode):
    """Counts non-view operators per section; also a SectionTimer stand-in (``with counter("encode"): ...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.section = "other"
        self.counts: dict[str, Counter[str]] = {}
        self.seconds: Counter[str] = Counter()
        self.enabled = False

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        before, self.section = self.section, name
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
            self.section = before

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func.overloadpacket)
        if self.enabled and name not in VIEWS:
            self.counts.setdefault(self.section, Counter())[name] += 1
        return func(*args, **(kwargs or {}))


def batch_for(spec: Any, batch: int, objects: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """``images: float32[B, 3, S, S]``, ``boxes: float32[B, M, 4]`` (xyxy normalized, padded rows with label 0),
    ``labels: int64[B, M]``."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, objects, 2, generator=g) * 0.6
    wh = 0.05 + torch.rand(batch, objects, 2, generator=g) * 0.35
    boxes = torch.cat([xy, (xy + wh).clamp(max=1.0)], dim=-1)
    labels = torch.randint(1, 81, (batch, objects), generator=g)
    labels[:, -1] = 0  # one padding row per image, as the loader pads
    size = spec.image_size
    return {"images": torch.randn(batch, 3, size, size, generator=g), "boxes": boxes, "labels": labels}


def count(model_name: str, fused: bool, batch: int, steps: int = 3) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """Operator counts per section of the last of ``steps`` steps, and the CPU seconds per section of that step."""
    torch.manual_seed(0)
    spec = get_spec(model_name)
    model = build_architecture(model_name, num_classes=81)
    optimizer = build_optimizer(model, name="sgd", lr=0.01, fused=fused, no_decay_bn_bias=True)
    schedule = build_schedule(kind="multistep", peak_lr=0.01, steps_per_epoch=10, total_steps=100, warmup_steps=5,
                              milestones_epochs=[5.0], gamma=0.1)  # fmt: skip
    counter = SectionOps()
    step = TrainStep(
        model=model, params=list(model.parameters()), encoder=build_encoder(spec), loss_fn=build_loss(spec),
        optimizer=optimizer, scheduler=LRScheduler(optimizer, schedule),
        scaler=torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**10), autocast=contextlib.nullcontext,
        timer=counter,  # type: ignore[arg-type]
    )  # fmt: skip
    data = batch_for(spec, batch)
    with counter:
        for i in range(steps):
            counter.enabled = i == steps - 1
            counter.seconds.clear()
            step(data, False)
    return counter.counts, counter.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["ssd300_resnet34", "ssd300_resnet50"])
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    head = f"{'model':<22}{'optimizer':<17}" + "".join(f"{s:>10}" for s in SECTIONS) + f"{'total':>8}{'copies':>8}"
    print(f"operators per training step (batch {args.batch}, fp16 scaler bookkeeping on, fixed-shape encoder and "
          "loss; CPU ms per section in brackets)")  # fmt: skip
    print(head)
    print("-" * len(head))
    for name in args.models:
        totals = {}
        for fused in (False, True):
            counts, seconds = count(name, fused, args.batch)
            per = {s: sum(counts.get(s, Counter()).values()) for s in SECTIONS}
            total = sum(per.values())
            copies = sum(c["aten._foreach_copy_"] + c["aten.copy_"] + c["aten.where"] for c in counts.values())
            totals[fused] = total
            label = "fused + skip" if fused else "foreach + undo"
            print(f"{name:<22}{label:<17}" + "".join(f"{per[s]:>10}" for s in SECTIONS) + f"{total:>8}{copies:>8}")
            print(f"{'':<39}" + "".join(f"{'[' + format(seconds[s] * 1e3, '.0f') + ']':>10}" for s in SECTIONS))
        print(f"{name:<22}fused/foreach operators: {totals[True] / totals[False]:.2f}x")
    print("copies = copy_ + _foreach_copy_ + where (the snapshot and its put-back)")


if __name__ == "__main__":
    main()
