"""Long-run soak: does a run's memory or its open files grow over thousands of steps with evaluations between?

Runs the real trainer (``cpu_tiny`` preset, ``ssd_tiny``) on a small synthetic set for ``--steps`` steps with an
evaluation every ``--eval-every`` epochs and loader worker processes (kept between epochs, as the built-in loader
keeps them; the evaluation's workers too), and samples every ``--sample-every`` steps: the training process's
resident memory (RSS), the RSS of its child processes (the loader workers), its open file descriptors and its
threads. Prints the samples and, for each series, the least-squares slope per 1,000 steps over the samples after
the first evaluation.

    python benchmarks/bench_soak.py                       # 3,000 steps, ~11 minutes on 2 cores
    python benchmarks/bench_soak.py --steps 500 --sample-every 50
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from singleshot.data.synth import generate
from singleshot.engine.config import load_config
from singleshot.engine.hooks import TrainHook
from singleshot.engine.trainer import Trainer

MiB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (``/proc/<pid>/status`` VmRSS); 0 when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


class Sampler(TrainHook):
    """Every ``every`` steps: (step, seconds, RSS MiB, workers' RSS MiB, open fds, threads, evaluations so far)."""

    def __init__(self, every: int) -> None:
        self.every, self.rows, self.evals, self.t0 = every, [], 0, time.perf_counter()

    def eval_end(self, epoch_num: int, stats: dict[str, float]) -> None:
        self.evals += 1

    def step_end(self, step: int) -> None:
        if step % self.every:
            return
        pid = os.getpid()
        kids = sum(rss(c) for c in children(pid))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
        self.rows.append((step, time.perf_counter() - self.t0, rss(pid) / MiB, kids / MiB, fds, threads, self.evals))


def slope_per_1000(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--sample-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=5, help="epochs between evaluations")
    p.add_argument("--images", type=int, default=64, help="training images (batch 8: images/8 steps per epoch)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if not Path("/proc/self/status").is_file():
        raise SystemExit("bench_soak reads /proc: Linux only")
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        data = work / "data"
        generate(data, num_train=args.images, num_val=16, image_size=(128, 96), max_objects=4, seed=5)
        cfg = load_config("cpu_tiny", [
            f"data.train={data}", f"data.val={data}", "data.batch_size=8", f"data.num_workers={args.workers}",
            f"train.max_steps={args.steps}", "train.epochs=100000", f"eval.every={args.eval_every}",
            "eval.target_map=null", "train.progress=none", "train.log_every=50", f"run.dir={work / 'run'}",
            "run.report=false", "run.tensorboard=true", "schedule.warmup_steps=10",
        ])  # fmt: skip
        sampler = Sampler(args.sample_every)
        Trainer(cfg, hooks=[sampler]).run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps_per_epoch = args.images // 8
    print(f"bench_soak: {args.steps} steps ({steps_per_epoch} per epoch, an evaluation of 16 images every "
          f"{args.eval_every} epochs, {args.workers} loader workers for training and {args.workers} for evaluation), "
          f"sampled every "
          f"{args.sample_every} steps")  # fmt: skip
    print(f"{'step':>6} {'s':>7} {'RSS MiB':>9} {'workers MiB':>12} {'fds':>5} {'threads':>8} {'evals':>6}")
    for step, t, main_rss, kids, fds, threads, evals in sampler.rows:
        print(f"{step:>6} {t:>7.0f} {main_rss:>9.1f} {kids:>12.1f} {fds:>5} {threads:>8} {evals:>6}")
    rows = [r for r in sampler.rows if r[0] > steps_per_epoch * args.eval_every]  # after the first evaluation
    xs = [float(r[0]) for r in rows]
    if rows:
        first, last = rows[0], rows[-1]
        for name, col, unit in (("RSS", 2, "MiB"), ("workers' RSS", 3, "MiB"), ("open fds", 4, ""),
                                ("threads", 5, "")):  # fmt: skip
            s = slope_per_1000(xs, [float(r[col]) for r in rows])
            print(f"{name:<13} {first[col]:>8.1f} at step {first[0]} -> {last[col]:>8.1f} at step {last[0]}; "
                  f"slope {s:+.2f} {unit} per 1,000 steps")  # fmt: skip


if __name__ == "__main__":
    main()
