"""Failures a run cannot go on from end in one line that names the way out, with the checkpoint intact: running out
of memory (simulated: the step raises torch's OutOfMemoryError, or the host's MemoryError) and a data loader worker
killed from outside. Exit status 1; the same command then resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import tiny_overrides

from singleshot.checkpoint import load_checkpoint
from singleshot.cli import main
from singleshot.engine.failures import DEVICE_OOM
from singleshot.engine.step import TrainStep

STEPS = 12  # 3 epochs of 4 steps; last.pt after each epoch


def raising_at(call: int, error: BaseException):
    original, calls = TrainStep.__call__, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise error
        return original(self, *args, **kwargs)

    return step


@pytest.mark.parametrize(
    ("call", "error", "saved"),
    [(6, DEVICE_OOM("CUDA out of memory. Tried to allocate 2.00 GiB"), 4), (1, MemoryError(), None)],
    ids=["device-oom-mid-run", "host-memoryerror-first-step"],
)
def test_out_of_memory_is_one_line_and_the_checkpoint_stays(tmp_path, monkeypatch, capsys, call, error, saved) -> None:
    run = tmp_path / "run"
    command = ["train", *tiny_overrides(run, **{"train.max_steps": STEPS})]
    with monkeypatch.context() as patch:
        patch.setattr(TrainStep, "__call__", raising_at(call, error))
        assert main(command) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"singleshot train: out of memory at step {call} with data.batch_size=4 at 160 px on cpu "
                          "(host memory ")  # fmt: skip
    assert "lower data.batch_size (e.g. data.batch_size=2) or model.image_size" in err
    last = run / "checkpoints" / "last.pt"
    if saved is None:
        assert err.endswith(f"no checkpoint was written yet ({last} does not exist)") and not last.exists()
    else:
        assert err.endswith(f"the last checkpoint ({last}, step {saved}) is intact")
        assert load_checkpoint(last)["step"] == saved
    assert main(command) == 0  # the same command resumes (or starts) and finishes
    assert load_checkpoint(last)["step"] == STEPS


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker")
def test_a_killed_loader_worker_is_named_and_the_run_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    steps = 40
    extra = {"train.max_steps": steps, "data.num_workers": 1, "train.checkpoint_every_steps": 2}
    cmd = [sys.executable, "-m", "singleshot", "train", *tiny_overrides(run, **extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count('"kind": "train"') >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "no loader worker found"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("singleshot train:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"singleshot train: a data loader worker (pid {workers[0]}) died at step ")
    # torch reports the death one of two ways, by timing: with the signal, or as "exited unexpectedly"
    assert ("(killed by signal" in lines[0] or "(it exited," in lines[0]) and "re-run the same command" in lines[0]
    assert "is intact" in lines[0]
    stopped = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 4 <= stopped["step"] < steps
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == steps
