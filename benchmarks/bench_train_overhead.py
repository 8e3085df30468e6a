"""Share of a training step spent outside the model's forward and backward (target: <= 10%).

Runs the real training loop (:class:`singleshot.engine.Trainer`) on the built-in synthetic set with a section timer
and prints, per preset, the time per step of each section: data (wait + host-to-device + photometric finish, all
the loader's), box target encoding, model forward, loss, NaN guard (+ all-reduce of the flags), backward,
optimizer + lr schedule, logging. "Overhead" is everything except forward and backward. On CUDA the timer
synchronizes at each boundary.

    python benchmarks/bench_train_overhead.py                        # ssd_tiny and ssd300_resnet34
    python benchmarks/bench_train_overhead.py --models ssd_tiny --steps 30 --workers 1
    python benchmarks/bench_train_overhead.py --models ssd_tiny --override data.augment=none
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from singleshot.engine.config import load_config
from singleshot.engine.runtime import SectionTimer
from singleshot.engine.trainer import Trainer

MODEL_PART = ("forward", "backward")
# Each model runs its own recipe's data pipeline and optimizer settings, on the synthetic set.
PRESETS = {
    "ssd_tiny": "cpu_tiny",
    "ssd300_resnet34": "mlperf_ssd300_resnet34",
    "ssd300_resnet50": "nvidia_ssd300_resnet50",
    "ssd320_resnet50_fpn": "nvidia_ssd320_resnet50_fpn",
}
ORDER = ("data", "encode", "forward", "loss", "guard", "zero_grad", "backward", "optimizer", "logging")


def measure(
    model: str, batch: int, steps: int, warmup: int, workers: int | None, device: str, overrides: list[str] = ()
) -> dict[str, float]:
    run = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        cfg = load_config(PRESETS.get(model, "cpu_tiny"), [
            f"model.name={model}", "model.num_classes=null", "data.train=synth", "data.val=null",
            f"data.batch_size={batch}", f"train.max_steps={steps + warmup}",
            f"train.device={device}", "train.progress=none", "train.log_every=10", "eval.target_map=null",
            f"run.dir={run}", "run.tensorboard=true", "run.report=false", "run.mlperf_log=false",
        ] + ([f"data.num_workers={workers}"] if workers is not None else []) + list(overrides))  # fmt: skip
        timer = SectionTimer(True, torch.device("cuda") if device.startswith("cuda") else None, skip_steps=warmup)
        t0 = time.perf_counter()
        Trainer(cfg, timer=timer).run()
        wall = time.perf_counter() - t0
        n = timer.recorded_steps
        per_step = {k: v / n for k, v in timer.totals.items()}
        per_step["_wall"] = wall
        return per_step
    finally:
        shutil.rmtree(run, ignore_errors=True)


def report(model: str, batch: int, per_step: dict[str, float]) -> float:
    total = sum(v for k, v in per_step.items() if not k.startswith("_"))
    model_time = sum(per_step.get(k, 0.0) for k in MODEL_PART)
    print(
        f"\n{model} ({PRESETS.get(model, 'cpu_tiny')} recipe)  batch {batch}  {total * 1000:.1f} ms/step  "
        f"({batch / total:.1f} img/s)"
    )
    for name in ORDER:
        v = per_step.get(name, 0.0)
        tag = "model" if name in MODEL_PART else "overhead"
        print(f"  {name:10s} {v * 1000:9.2f} ms  {v / total * 100:5.1f}%  {tag}")
    share = 1 - model_time / total
    verdict = "meets" if share <= 0.10 else "MISSES"
    print(f"  outside forward+backward: {share * 100:.1f}% of the step ({verdict} the <= 10% target)")
    return share


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["ssd_tiny", "ssd300_resnet34"])
    p.add_argument("--batch", type=int, nargs="+", default=None, help="per model (default: 32 tiny, 8 ssd300 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default: 20 tiny, 4 ssd300 on CPU)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the preset's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--override", nargs="*", default=[], metavar="key=value", help="extra config overrides")
    args = p.parse_args()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    print(
        f"torch {torch.__version__}, {'CUDA ' + torch.cuda.get_device_name() if cuda else 'CPU'}, "
        f"{torch.get_num_threads()} threads, {args.workers} loader workers"
    )
    for i, model in enumerate(args.models):
        small = model == "ssd_tiny"
        batch = args.batch[i] if args.batch else (32 if small or cuda else 8)
        steps = args.steps or (20 if small or cuda else 4)
        per_step = measure(model, batch, steps, args.warmup, args.workers, args.device, args.override)
        report(model, batch, per_step)


if __name__ == "__main__":
    main()
