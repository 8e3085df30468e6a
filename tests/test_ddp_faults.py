"""Several processes (CPU, gloo, 2 ranks): a rank that dies ends the others in one line that names it and the step
each rank reached, well within ``train.dist_timeout``; under ``torchrun --max-restarts=1`` the job restarts, resumes
from the last checkpoint and ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_overrides

from singleshot.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the ranks")
TIMEOUT = 60  # train.dist_timeout: the survivor must stop well before it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(run: Path, steps: int) -> list[str]:
    return tiny_overrides(run, **{"train.max_steps": steps, "data.batch_size": 2, "train.checkpoint_every_steps": 2,
                                  "train.dist_timeout": TIMEOUT})  # fmt: skip


def _wait_for_train_records(run: Path, n: int, procs: list[subprocess.Popen], timeout: float = 180) -> None:
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + timeout
    while not (metrics.is_file() and metrics.read_text().count('"kind": "train"') >= n):
        for p in procs:
            assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "training did not reach the wanted step in time"
        time.sleep(0.05)


@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_rank_is_named_by_the_survivor(tmp_path: Path, killed: int) -> None:
    run, port = tmp_path / "run", _free_port()
    cmd = [sys.executable, "-m", "singleshot", "train", *_overrides(run, 400)]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONUNBUFFERED": "1"}  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    _wait_for_train_records(run, 6, procs)
    procs[killed].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    survivor = procs[1 - killed]
    _, err = survivor.communicate(timeout=TIMEOUT)
    took = time.monotonic() - t0
    procs[killed].communicate()
    assert survivor.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("singleshot train:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    if killed == 1:  # rank 0 holds the store: it tells who went silent and where every rank was
        assert line.startswith("singleshot train: rank 0 of 2: rank 1 stopped responding (dead, or hung for longer "
                               f"than train.dist_timeout={TIMEOUT} s) (")  # fmt: skip
        assert "; steps reached: rank 0: " in line and ", rank 1: " in line
    else:  # the store died with rank 0
        assert line.startswith("singleshot train: rank 1 of 2: lost contact with the other ranks and with the store")
    assert "is intact; re-run the same command to resume" in line
    assert took < TIMEOUT / 2, took
    load_checkpoint(run / "checkpoints" / "last.pt")  # whole


def _torchrun(run: Path, steps: int, restarts: int) -> subprocess.Popen:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", f"--max-restarts={restarts}", "-m", "singleshot", "train",
           *_overrides(run, steps)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})  # fmt: skip


def _rank_pid(agent: int, rank: int) -> int:
    for task in Path(f"/proc/{agent}/task").iterdir():
        for pid in map(int, (task / "children").read_text().split()):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return pid
    raise AssertionError(f"no worker with RANK={rank} under {agent}")


def test_torchrun_restarts_and_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    """torchrun --max-restarts=1, rank 1 killed at step ~7: the second round resumes from the checkpoint and ends
    with the uninterrupted run's weights. (Before ``restart_round_store`` the second round read the first round's
    gloo addresses from torchrun's store and failed about 5 times in 12.)"""
    steps = 24
    straight = _torchrun(tmp_path / "straight", steps, 0)
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err
    job = _torchrun(tmp_path / "restarted", steps, 1)
    _wait_for_train_records(tmp_path / "restarted", 7, [job])
    os.kill(_rank_pid(job.pid, 1), signal.SIGKILL)
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err
    assert "resuming " in out  # the restarted workers resumed from the checkpoint
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "restarted" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == steps and b["train_state"]["finished"]
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), f"weights differ at {key}"


def test_each_torchrun_round_has_its_own_keys() -> None:
    """Outside torchrun's agent: no store of our own; inside it: the agent's store with keys prefixed by the round."""
    from datetime import timedelta

    from torch import distributed as dist

    from singleshot.engine.distributed import restart_round_store

    assert restart_round_store(env={"RANK": "0", "WORLD_SIZE": "2"}) is None
    agent = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=5))
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent.port)}
    rounds = [restart_round_store(30, {**env, "TORCHELASTIC_RESTART_COUNT": str(n)}) for n in (0, 1)]
    rounds[0].set("rank_1", "old address")
    rounds[1].set("rank_1", "new address")
    assert rounds[0].get("rank_1") == b"old address" and rounds[1].get("rank_1") == b"new address"
    assert agent.check(["singleshot/round_0/rank_1", "singleshot/round_1/rank_1"]) and not agent.check(["rank_1"])
