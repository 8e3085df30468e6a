"""A SLURM-style launch (srun's variables only, no torchrun ones): two CPU processes join one gloo group."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch.multiprocessing as mp
from train_helpers import tiny_config

from singleshot.engine import distributed as D
from singleshot.engine.trainer import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        os.environ.pop(key, None)
    # What srun sets for 2 tasks on one node; the master address comes from the node list.
    os.environ.update(
        SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank), SLURM_JOB_NODELIST="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    info = D.detect_environment()
    result = train(tiny_config(Path(out, "run"), **{"train.max_steps": 2, "data.batch_size": 2}))
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"launcher": info.launcher, "world": info.world_size, "step": result.step, "status": result.status})
    )


def test_slurm_variables_start_a_two_process_run(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r == {"launcher": "slurm", "world": 2, "step": 2, "status": "finished"} for r in reports), reports
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()  # written once, by rank 0
    train_lines = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(train_lines) == 2  # one record per step, not one per rank
