"""Accuracy on unseen data: the default recipe vs YOLOv8n from scratch, same images, image size and image budget.

For each of ``--sets`` freshly generated synthetic sets (a random generator style per set, seeds from
``--base-seed``), trains

* **ours**: ``singleshot train`` with the default preset (or ``--config``), ``data.train/val`` = the set and
  ``train.epochs`` = budget / num_train; scored from the last checkpoint, and
* **YOLOv8n**: Ultralytics' ``yolov8n.yaml`` from scratch (``benchmarks/yolo_peer.py``, offline, Ultralytics'
  default recipe at batch 16), the same epochs, at the default model's image size; scored from its validator's
  predictions (``save_json``),

and scores both from COCO results JSON files with singleshot's own evaluation (faster-coco-eval,
``singleshot.evaluation.coco_bbox_metrics``) on every validation image of the set. Prints per set mAP, AP50,
APs/APm/APl and training wall time, and the ours/YOLO mAP ratio with its mean over sets; writes all numbers as JSON
and the table as markdown into ``--out``.

    python benchmarks/bench_accuracy.py                                   # 3 sets, fresh seeds, default budget
    python benchmarks/bench_accuracy.py --base-seed 1234 --sets 3         # reproduce a run (seed is printed)
    python benchmarks/bench_accuracy.py --only ours --config my.yaml --override optim.lr=0.1
    python benchmarks/bench_accuracy.py --sets 1 --num-train 200 --num-val 50 --budget-images 400   # smoke test
    python benchmarks/bench_accuracy.py --image-size 320 --out runs/bench_accuracy_320   # both models at 320 px

The default image budget is the default run's: ``cpu_tiny``'s ``train.epochs`` x the built-in set's ``num_train``.
Finished per-set results are reused when the same command is re-run into the same ``--out`` (an interrupted
benchmark continues); a half-finished training is started again from scratch so that wall times stay honest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from singleshot.data import synth
from singleshot.engine.config import load_config
from singleshot.evaluation import STAT_NAMES, coco_bbox_metrics
from singleshot.models import get_spec

TABLE_STATS = ("AP", "AP50", "APs", "APm", "APl")
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------------ budget and sets
def default_budget() -> tuple[int, str]:
    """The default run's training-image budget and how it was derived (from the preset and the synth defaults)."""
    cfg = load_config(None)
    if cfg.train.max_steps is not None:
        budget = cfg.train.max_steps * cfg.data.batch_size
        return budget, f"default preset train.max_steps {cfg.train.max_steps} x data.batch_size {cfg.data.batch_size}"
    num_train = int(synth.DEFAULTS["num_train"])
    budget = round(cfg.train.epochs * num_train)
    return budget, f"default preset train.epochs {cfg.train.epochs:g} x built-in set num_train {num_train}"


def make_set(root: Path, seed: int, num_train: int, num_val: int, styled: bool | str) -> tuple[Path, str, float]:
    """Generate (or reuse) one set; returns ``(folder, style description, generation seconds)``. ``styled``: True =
    a random style drawn from the seed, False = the built-in style, a name = that style of ``synth.HARD_STYLES``.

    A set in ``root/sets`` is reused when its recorded style description and synth version match what this
    checkout would generate for the seed (delete the folder after changing the generator without either changing).
    """
    kwargs: dict[str, Any] = {"num_train": num_train, "num_val": num_val, "seed": seed}
    description = "the built-in generator style"
    if isinstance(styled, str):
        kwargs["style"] = synth.HARD_STYLES[styled]
        description = f"{styled}: {kwargs['style'].describe()}"
    elif styled:
        random_style = getattr(synth, "random_style", None)
        if random_style is None:
            raise SystemExit("bench_accuracy: singleshot.data.synth.random_style is missing (the generator styles of "
                             "issue 10 are not in this checkout); use --builtin-style to benchmark on the built-in "
                             "style with fresh seeds")
        style = random_style(seed)
        kwargs["style"] = style
        description = style.describe()
    name = f"seed{seed}-{num_train}x{num_val}" + (f"-{styled}" if isinstance(styled, str) else "" if styled
                                                    else "-builtin")  # fmt: skip
    final = root / "sets" / name
    marker = final / ".complete"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("description") == description and info.get("synth_version") == synth.SYNTH_VERSION:
            return final, description, float(info["seconds"])
    tmp = final.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        synth.generate(tmp, **kwargs)
        seconds = time.perf_counter() - t0
        record = {"description": description, "synth_version": synth.SYNTH_VERSION, "seconds": seconds,
                  "num_train": num_train, "num_val": num_val, "seed": seed}
        (tmp / ".complete").write_text(json.dumps(record))
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, description, seconds


# ------------------------------------------------------------------------------------------------ scoring
def score_results(ground_truth: Path, results_file: Path) -> dict[str, Any]:
    """COCO bbox numbers of a results JSON (``[{"image_id", "category_id", "bbox": xywh pixels, "score"}]``) on
    every image of ``ground_truth``: the one scoring path for both models."""
    results = json.loads(results_file.read_text())
    rows = np.array([[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in results], dtype=np.float64)
    metrics = coco_bbox_metrics(str(ground_truth), rows.reshape(-1, 7))
    return {**metrics.stats, "per_class_AP": metrics.per_class, "num_images": metrics.num_images,
            "num_detections": metrics.num_detections}


def evaluate_checkpoint(checkpoint: Path, set_dir: Path, results_file: Path, workers: int) -> None:
    """Run a singleshot checkpoint over the set's val split (every image, empty ones too) into a results JSON,
    with the post-processing its training run used (the run's ``eval.score_threshold``, else the model's)."""
    from singleshot.checkpoint import load_checkpoint
    from singleshot.data.formats import load_dataset
    from singleshot.data.loader import build_loader
    from singleshot.data.transforms import SSDValTransform
    from singleshot.evaluation import evaluate
    from singleshot.inference import InferenceCore, load_model

    threshold = load_checkpoint(checkpoint).get("config", {}).get("eval", {}).get("score_threshold")
    core = InferenceCore(load_model(checkpoint, device="cpu").module, score_threshold=threshold)
    spec = core.spec
    dataset = load_dataset(set_dir, split="val", keep_empty=True)  # YOLO is scored on every image too
    loader = build_loader(dataset, SSDValTransform(spec.image_size), batch_size=32, shuffle=False, drop_last=False,
                          num_workers=workers, mean=spec.mean, std=spec.std)
    evaluate(core, loader, results_file=str(results_file), log=None)


def _last_eval_record(metrics_jsonl: Path) -> dict[str, Any] | None:
    last = None
    if metrics_jsonl.is_file():
        for line in metrics_jsonl.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "eval":
                last = record
    return last


def child_env(threads: int) -> dict[str, str]:
    """The environment of both training commands: ``OMP_NUM_THREADS`` set to the benchmark's thread count.

    Importing ultralytics sets ``OMP_NUM_THREADS=1`` in this process's environment; inherited, it made ours train on
    one torch thread while YOLOv8n set its own two (every earlier wall-time comparison of this benchmark)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}


def _run_logged(cmd: list[str], log_file: Path, prefix: str, threads: int) -> tuple[int, float]:
    """Run ``cmd`` with ``threads`` torch threads, copying its output to ``log_file`` and (prefixed) to stdout;
    returns (exit code, wall s)."""
    t0 = time.perf_counter()
    with open(log_file, "w", encoding="utf-8") as log, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=child_env(threads)
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                print(f"  [{prefix}] {line.rstrip()}", flush=True)
        except BaseException:  # Ctrl-C or SIGTERM: stop the training too (a re-run starts it afresh anyway)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return proc.returncode, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ the two models
def run_ours(set_dir: Path, work: Path, epochs: int, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    run_dir = work / "run"
    cmd = [sys.executable, "-m", "singleshot", "train"]
    if args.config:
        cmd += ["--config", args.config]
    cmd += [f"data.train={set_dir}", f"data.val={set_dir}", f"run.dir={run_dir}", f"train.epochs={epochs}",
            "train.max_steps=null", f"data.num_workers={args.workers}", "train.progress=log",
            f"train.threads={threads}"]
    cmd += args.override
    print("  $ " + " ".join(cmd), flush=True)
    code, wall = _run_logged(cmd, work / "train.log", "ours", threads)
    if code != 0:
        raise SystemExit(f"bench_accuracy: `singleshot train` failed (exit {code}); log: {work / 'train.log'}")
    match = re.search(r"on (\d+) images \((\d+) steps/epoch, (\d+) steps, global batch (\d+)",
                      (work / "train.log").read_text())
    steps, batch = (int(match.group(3)), int(match.group(4))) if match else (None, None)
    results_file = work / "results_val.json"
    t0 = time.perf_counter()
    evaluate_checkpoint(run_dir / "checkpoints" / "last.pt", set_dir, results_file, args.workers)
    in_training = _last_eval_record(run_dir / "metrics.jsonl")
    return {
        "command": cmd, "train_wall_s": wall, "scoring_inference_s": time.perf_counter() - t0,
        "steps": steps, "global_batch": batch, "train_images_seen": steps * batch if steps and batch else None,
        "results_file": str(results_file),
        "in_training_final_eval": {k: in_training[k] for k in STAT_NAMES} if in_training else None,
    }


def run_yolo(set_dir: Path, work: Path, epochs: int, imgsz: int, num_train: int, threads: int,
             args: argparse.Namespace, time_s: float | None = None) -> dict[str, Any]:
    """The YOLOv8n peer for ``epochs`` epochs, or for ``time_s`` training seconds (``--equal-time``)."""
    cmd = [sys.executable, str(HERE / "yolo_peer.py"), "--set", str(set_dir), "--work", str(work), "--imgsz",
           str(imgsz), "--epochs", str(epochs), "--batch", str(args.yolo_batch), "--workers", str(args.workers),
           "--threads", str(threads), "--seed", "0"] + ([] if time_s is None else ["--time-s", f"{time_s:.1f}"])
    print("  $ " + " ".join(cmd), flush=True)
    code, wall = _run_logged(cmd, work / "peer.log", "yolo", threads)
    if code != 0:
        raise SystemExit(f"bench_accuracy: the YOLOv8n peer failed (exit {code}); log: {work / 'peer.log'}")
    peer = json.loads((work / "peer.json").read_text())
    if peer["network_attempts"]:
        print(f"  warning: Ultralytics tried to reach the network (blocked): {peer['network_attempts']}")
    seen = peer.get("epochs_done", epochs) * num_train if time_s is not None else epochs * num_train
    return {**peer, "command": cmd, "peer_wall_s": wall, "train_images_seen": seen}


def run_cached(work: Path, params: dict[str, Any], fn: Any) -> dict[str, Any]:
    """``fn()`` unless ``work/result.json`` holds a finished result for the same ``params``."""
    cached = work / "result.json"
    if cached.is_file():
        old = json.loads(cached.read_text())
        if old.get("params") == params:
            print(f"  reusing {cached}")
            return old
    shutil.rmtree(work, ignore_errors=True)  # a half-finished run would resume and misstate its wall time
    work.mkdir(parents=True)
    result = {"params": params, **fn()}
    cached.write_text(json.dumps(result, indent=2))
    return result


def _check_against_training(ours: dict[str, Any]) -> None:
    """The harness re-scores the last checkpoint; say so if that differs from the run's own final evaluation
    (it should not, unless the run evaluated other weights or skipped images without boxes)."""
    own = ours.get("in_training_final_eval")
    if own is None:
        return
    ours["in_training_AP_diff"] = diff = ours["metrics"]["AP"] - own["AP"]
    note = "" if abs(diff) < 0.002 else "  <- differs: check which weights the run evaluated"
    print(f"  ours: mAP {ours['metrics']['AP']:.4f} (harness) vs {own['AP']:.4f} (the run's final eval){note}")


# ------------------------------------------------------------------------------------------------ report
def _fmt(v: float | None) -> str:
    return "n/a" if v is None or v < 0 else f"{v:.3f}"


def _wall(s: float | None) -> str:
    return "" if s is None else f"{int(s // 60)} min {s % 60:02.0f} s"


# ours; YOLOv8n on the same images; YOLOv8n for the same seconds (--equal-time)
MODEL_ROWS = ("ours", "yolo", "yolo_time")


def _row_name(report: dict[str, Any], key: str) -> str:
    return {"ours": report["ours_name"], "yolo": "YOLOv8n, same images", "yolo_time": "YOLOv8n, same seconds"}[key]


def _ratio_cell(entry: dict[str, Any], min_fmt: str = "") -> str:
    """'same images' ratio, and ' / same seconds' ratio when measured (with their minima over sets for the mean)."""
    cells = []
    for key in ("ratio", "ratio_time"):
        if entry.get(key) is not None:
            low = entry.get("min_" + key)
            cells.append(f"{entry[key]:.2f}" + (min_fmt.format(low) if min_fmt and low is not None else ""))
    return " / ".join(cells)


def markdown_table(report: dict[str, Any]) -> str:
    head = "| set | model | mAP | AP50 | APs | APm | APl | train wall | images | ours/YOLO mAP |"
    lines = [head, "|" + "---|" * 10]
    for s in report["sets"]:
        for key in MODEL_ROWS:
            if key in s:
                r = s[key]
                cells = " | ".join(_fmt(r["metrics"][k]) for k in TABLE_STATS)
                lines.append(f"| {s['index']} | {_row_name(report, key)} | {cells} | {_wall(r['train_wall_s'])} | "
                             f"{r.get('train_images_seen', '')} | {_ratio_cell(s) if key == 'ours' else ''} |")
    mean = report.get("mean", {})
    for key in MODEL_ROWS:
        if key in mean:
            cells = " | ".join(_fmt(mean[key][k]) for k in TABLE_STATS)
            ratio = _ratio_cell(mean, " (min {:.2f})") if key == "ours" else ""
            lines.append(f"| mean | {_row_name(report, key)} | {cells} | {_wall(mean[key]['train_wall_s'])} | | "
                         f"{ratio} |")
    legend = [f"- set {s['index']}: seed {s['seed']}, {s['num_train']} train / {s['num_val']} val images; "
              f"{s['style']}" for s in report["sets"]]
    return "\n".join([*lines, "", *legend])


def markdown_header(report: dict[str, Any], args: argparse.Namespace) -> str:
    """How the table was made: the command that repeats it, the budget, and the machine and its load."""
    sets = "--hard-styles" if getattr(args, "hard_styles", False) else f"--sets {args.sets}"
    cmd = (f"python benchmarks/bench_accuracy.py --base-seed {report['base_seed']} {sets} "
           f"--num-train {args.num_train} --num-val {args.num_val}")
    if args.budget_images is not None:
        cmd += f" --budget-images {args.budget_images}"
    if getattr(args, "equal_time", False):
        cmd += " --equal-time"
    if args.config:
        cmd += f" --config {args.config}"
    if args.override:
        cmd += " --override " + " ".join(args.override)
    m = report["machine"]
    load = f"{m['load_average_start'][0]:.1f} at the start, {m.get('load_average_end', [0.0])[0]:.1f} at the end"
    return (f"`{cmd}`: each model trains on {report['epochs']} epochs x {report['num_train']} images "
            f"({report['budget_from']}: {report['budget_images']} images) at {report['image_size']} px, from scratch, "
            f"on the CPU ({report['threads']} torch threads; {m['cpus']} CPUs, load average {load}). YOLOv8n: "
            f"Ultralytics {m['ultralytics']} defaults, batch {report['yolo_batch']}. Both scored by singleshot's COCO "
            "evaluation on every validation image; train wall = the training command, including its own "
            "evaluations."
            + (" Equal wall time (--equal-time): YOLOv8n also trains for the seconds ours took (Ultralytics' time=, "
               "which re-plans its epochs; 'same seconds' rows, images = the epochs it finished x the set); the "
               "ratio column is ours/YOLO at the same images / at the same seconds." if report.get("equal_time")
               else ""))


def summarize(report: dict[str, Any]) -> None:
    sets = report["sets"]
    mean: dict[str, Any] = {}
    for key in MODEL_ROWS:
        if sets and all(key in s for s in sets):
            mean[key] = {k: float(np.mean([s[key]["metrics"][k] for s in sets])) for k in TABLE_STATS}
            mean[key]["train_wall_s"] = float(np.mean([s[key]["train_wall_s"] for s in sets]))
    for name in ("ratio", "ratio_time"):
        ratios = [s[name] for s in sets if s.get(name) is not None]
        if ratios and len(ratios) == len(sets):
            mean[name], mean["min_" + name] = float(np.mean(ratios)), float(np.min(ratios))
    report["mean"] = mean


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", type=int, default=3, help="number of generated sets (default 3)")
    p.add_argument("--base-seed", type=int, default=None,
                   help="set k uses seed base+k (default: from the clock, printed so a run can be repeated)")
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-val", type=int, default=300)
    p.add_argument("--only", choices=("ours", "yolo", "both"), default="both")
    p.add_argument("--out", default="runs/bench_accuracy", help="output folder (default runs/bench_accuracy)")
    p.add_argument("--budget-images", type=int, default=None,
                   help="training images per model (default: the default run's, cpu_tiny epochs x built-in num_train)")
    p.add_argument("--workers", type=int, default=None, help="loader processes, both models (default: the preset's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads, both models (default: torch's)")
    p.add_argument("--yolo-batch", type=int, default=16, help="YOLOv8n batch (default 16, Ultralytics' default)")
    p.add_argument("--image-size", type=int, default=None,
                   help="train and score both models at this size (ours: model.image_size, YOLOv8n: imgsz; default: "
                        "the preset model's own size); use a separate --out per size")
    p.add_argument("--config", default=None, help="ours: preset or YAML instead of the default preset")
    p.add_argument("--override", nargs="*", default=[], metavar="key=value", help="ours: extra config overrides")
    p.add_argument("--builtin-style", action="store_true",
                   help="generate the sets with the built-in style (fresh seeds) instead of random styles")
    p.add_argument("--equal-time", action="store_true",
                   help="YOLOv8n also trains for the seconds ours took (Ultralytics' time=), beside the same "
                        "images; needs both models")
    p.add_argument("--hard-styles", action="store_true",
                   help="one set per style of singleshot.data.synth.HARD_STYLES (outline, crowded, decoys), fixed "
                        "styles hard in one way each, instead of --sets random styles")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    if args.equal_time and args.only != "both":
        raise SystemExit("bench_accuracy: --equal-time gives YOLOv8n the seconds ours took: it needs --only both")
    # SIGTERM unwinds like Ctrl-C, so that a killed benchmark does not leave its training subprocess running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base_seed = args.base_seed if args.base_seed is not None else int(time.time()) % 1_000_000
    budget, how = default_budget()
    if args.budget_images is not None:
        budget, how = args.budget_images, "--budget-images"
    epochs = max(1, round(budget / args.num_train))
    if args.image_size is not None:  # both models at that size: ours through model.image_size, YOLO's imgsz
        args.override = [*args.override, f"model.image_size={args.image_size}"]
    ours_cfg = load_config(args.config, list(args.override))
    if args.workers is None:  # the preset's; its auto (null) is 0 on a CPU, where this benchmark runs
        args.workers = ours_cfg.data.num_workers if ours_cfg.data.num_workers is not None else 0
    imgsz = get_spec(ours_cfg.model.name, ours_cfg.model.image_size).image_size
    threads = args.threads or torch.get_num_threads()  # read before ultralytics' import sets OMP_NUM_THREADS=1
    if args.only != "ours":
        try:
            import ultralytics
        except ImportError:
            print("bench_accuracy: the ultralytics package is not installed; it is needed for the YOLOv8n peer "
                  "(`.venv/bin/pip install ultralytics`, a benchmark-only package), or run with --only ours",
                  file=sys.stderr)
            return 2
        yolo_version = ultralytics.__version__
    n_sets = len(synth.HARD_STYLES) if args.hard_styles else args.sets
    print(f"bench_accuracy: base seed {base_seed} (repeat with --base-seed {base_seed}); {n_sets} set(s) of "
          f"{args.num_train} train / {args.num_val} val images; budget {budget} images ({how}) -> {epochs} epochs "
          f"= {epochs * args.num_train} images; image size {imgsz}; {threads} torch thread(s), {args.workers} "
          f"loader worker(s); load average {os.getloadavg()[0]:.2f}; out {out}", flush=True)
    ours_name = f"ours ({ours_cfg.model.name}, {args.config or 'default preset'})"
    report: dict[str, Any] = {
        "base_seed": base_seed, "budget_images": budget, "budget_from": how, "epochs": epochs,
        "num_train": args.num_train, "num_val": args.num_val, "image_size": imgsz, "threads": threads,
        "workers": args.workers, "ours_name": ours_name, "ours_config": args.config, "ours_overrides": args.override,
        "yolo_batch": args.yolo_batch, "only": args.only, "builtin_style": args.builtin_style,
        "equal_time": args.equal_time,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "ultralytics": yolo_version if args.only != "ours" else None,
                    "load_average_start": os.getloadavg()},
        "command": [sys.executable, *sys.argv], "sets": [],
    }
    stem = f"bench_accuracy-seed{base_seed}"
    kinds: list[bool | str] = list(synth.HARD_STYLES) if args.hard_styles else [not args.builtin_style] * args.sets
    for k, kind in enumerate(kinds):
        seed = base_seed + k
        set_dir, style, gen_s = make_set(out, seed, args.num_train, args.num_val, kind)
        print(f"\n== set {k}: seed {seed}: {style} (generated in {gen_s:.0f} s)", flush=True)
        gt = set_dir / "annotations" / "instances_val.json"
        entry: dict[str, Any] = {"index": k, "seed": seed, "style": style, "dir": str(set_dir),
                                 "num_train": args.num_train, "num_val": args.num_val, "generate_s": gen_s}
        work = out / f"set{k}-seed{seed}"
        common = {"set": str(set_dir), "style": style, "epochs": epochs, "workers": args.workers,
                  "threads": threads}
        if args.only != "yolo":
            params = {**common, "config": args.config, "override": args.override}
            fn = partial(run_ours, set_dir, work / "ours", epochs, args, threads)
            entry["ours"] = run_cached(work / "ours", params, fn)
            entry["ours"]["metrics"] = score_results(gt, Path(entry["ours"]["results_file"]))
            _check_against_training(entry["ours"])
        if args.only != "ours":
            # the same images; with --equal-time also the seconds ours took (its own evaluations included)
            budgets = [("yolo", None)] + ([("yolo_time", entry["ours"]["train_wall_s"])] if args.equal_time else [])
            for key, time_s in budgets:
                params = {**common, "imgsz": imgsz, "batch": args.yolo_batch}
                if time_s is not None:
                    params["time_s"] = round(time_s, 1)
                fn = partial(run_yolo, set_dir, work / key, epochs, imgsz, args.num_train, threads, args, time_s)
                entry[key] = run_cached(work / key, params, fn)
                entry[key]["metrics"] = score_results(gt, Path(entry[key]["results_file"]))
                own = entry[key]["ultralytics_own_metrics"].get("metrics/mAP50-95(B)")
                print(f"  {_row_name(report, key)}: mAP {entry[key]['metrics']['AP']:.4f} (harness) vs {own} "
                      "(Ultralytics' own validator, its own matching and interpolation)")
        for key in MODEL_ROWS:
            if key in entry and entry[key].get("train_images_seen"):
                r = entry[key]
                r["train_s_per_1k_images"] = 1000 * r["train_wall_s"] / r["train_images_seen"]
                print(f"  {key}: {r['train_images_seen']} training images in {r['train_wall_s']:.0f} s "
                      f"({r['train_s_per_1k_images']:.0f} s per 1,000 incl. its evaluations and start-up)")
        for key, name in (("yolo", "ratio"), ("yolo_time", "ratio_time")):
            if "ours" in entry and key in entry and entry[key]["metrics"]["AP"] > 0:
                entry[name] = entry["ours"]["metrics"]["AP"] / entry[key]["metrics"]["AP"]
        report["sets"].append(entry)
        summarize(report)
        report["machine"]["load_average_end"] = os.getloadavg()
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
        table = markdown_table(report)
        (out / f"{stem}.md").write_text(markdown_header(report, args) + "\n\n" + table + "\n")
        print("\n" + table, flush=True)
    print(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
