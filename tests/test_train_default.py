"""The product requirement: ``singleshot train`` with no arguments (ssd_tiny on the built-in synthetic set) finishes
in under 10 minutes on a 2-core CPU and reaches COCO mAP@[.5:.95] >= 0.5 on the synthetic validation split, leaving
checkpoints, metrics, the resolved config, a loss/mAP plot and prediction pictures in its run folder.

Slow (minutes): run with ``pytest -m slow tests/test_train_default.py``. The wall-time bound assumes the machine is
not shared with other heavy jobs while it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from singleshot.checkpoint import load_checkpoint, model_from_checkpoint
from singleshot.engine.config import load_config


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_default_run_reaches_target_in_time(tmp_path: Path) -> None:
    # The default command, run from a scratch working directory so that its runs/ folder lands there.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "singleshot", "train"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    print(proc.stdout[-3000:], proc.stderr[-2000:], f"\nwall time {wall:.0f} s", sep="\n")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "cpu_tiny"
    assert f"run folder: {Path('runs') / 'cpu_tiny'}" in proc.stdout

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["kind"] == "eval"][-1]
    print(f"final mAP@[.5:.95] {final['AP']:.4f}, AP50 {final['AP50']:.4f}")
    assert final["AP"] >= 0.5
    assert wall < 600

    assert yaml.safe_load((run / "config.yaml").read_text()) == load_config(None).to_dict()
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "curves.png"):
        assert (run / name).stat().st_size > 0, name
    assert len(list((run / "predictions").glob("*.jpg"))) == load_config(None).eval.num_pictures
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["train_state"]["finished"] and ckpt["model"]["name"] == "ssd_tiny"
    model_from_checkpoint(ckpt)
