"""``singleshot train [--config FILE|PRESET] [key=value ...]``: train (or resume) a detector."""

from __future__ import annotations

import argparse
import signal
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a detector (no arguments: ssd_tiny on the built-in synthetic set, ~10 min on 2 CPU cores)",
        description=(
            "Train a detector from a recipe preset or YAML file, with key=value overrides "
            "(e.g. optim.lr=0.05 data.batch_size=16 run.name=exp1). Re-running the same command resumes the run "
            "in its folder. Multi-GPU: torchrun --nproc_per_node=N -m singleshot train ... (or srun under SLURM)."
        ),
        epilog=(
            "Every key, with its type, default and meaning: singleshot train --help-config. Fine-tuning: "
            "model.weights=CHECKPOINT (singleshot, MLPerf or NVIDIA SSD300) with --config finetune_tiny or lower "
            "optim.lr, a short schedule.warmup_steps and few train.epochs (README: 'Fine-tune on your own data')."
        ),
    )
    p.add_argument(
        "--config", "-c", default=None, help="YAML file or preset name (default: cpu_tiny); see --list-presets"
    )
    p.add_argument("--list-presets", action="store_true", help="list the shipped recipe presets and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--help-config", action="store_true",
                   help="list every config key (type, value of the --config given or default, meaning) and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides, e.g. train.epochs=10")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from singleshot.engine.config import ConfigError, help_config, load_config, preset_names

    if args.list_presets:
        print("\n".join(preset_names()))
        return 0
    try:
        if args.help_config:  # the values of the preset (and overrides) given, not only the dataclass defaults
            given = args.config is not None or bool(args.overrides)
            print(help_config(load_config(args.config, args.overrides) if given else None, args.config))
            return 0
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"singleshot train: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0

    from singleshot.data.errors import DataError
    from singleshot.engine.checkpointing import RunConfigMismatch
    from singleshot.engine.trainer import LoaderWorkerDied, OutOfMemory, PeerLost, TrainingDiverged, train

    try:
        result = train(cfg)
    except (ConfigError, RunConfigMismatch, DataError, FileNotFoundError) as exc:
        print(f"singleshot train: {exc}", file=sys.stderr)
        return 2
    except (TrainingDiverged, OutOfMemory, LoaderWorkerDied, PeerLost) as exc:  # the run cannot go on as configured
        print(f"singleshot train: {exc}", file=sys.stderr)
        return 1
    if result.status == "interrupted" or result.signum:
        # The shell's convention for "ended by signal N", so schedulers and scripts see that a signal ended it (a
        # signal after the last step: the run is done, its final checkpoint saved, its report not written).
        name = signal.Signals(result.signum).name if result.signum else "signal"
        if result.main:
            done = "" if result.status == "interrupted" else f" after the run {result.status}; final"
            print(f"interrupted by {name}{done}; checkpoint saved in {result.run_dir}/checkpoints", file=sys.stderr)
        return 128 + (result.signum or signal.SIGTERM)
    if result.final_stats is not None and result.main:
        print(
            f"final COCO mAP@[.5:.95] {result.final_stats[0]:.4f} (best {result.best_map:.4f}); "
            f"wall time {result.wall_time:.0f} s; run folder {result.run_dir}"
        )
    return 0
