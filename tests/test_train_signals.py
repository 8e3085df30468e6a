"""Never lose work: SIGTERM saves and exits cleanly; SIGKILL mid-training leaves a readable checkpoint; both resume
to exactly the weights of an uninterrupted run (CPU, deterministic mode, 1 thread)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config, tiny_overrides

from singleshot.checkpoint import load_checkpoint
from singleshot.engine.trainer import train

STEPS = 16  # 4 epochs of 4 steps
COMMON = {"train.max_steps": STEPS, "schedule.name": "multistep", "schedule.milestones": "[2]"}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert train(tiny_config(run, **COMMON)).step == STEPS
    return load_checkpoint(run / "checkpoints" / "last.pt")


def _launch(run: Path, **extra: object) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "singleshot", "train", *tiny_overrides(run, **COMMON, **extra)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_steps(proc: subprocess.Popen, run: Path, n: int, timeout: float = 120) -> None:
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training exited early ({proc.returncode}):\n{out}\n{err}")
        if metrics.is_file() and metrics.read_text().count('"kind": "train"') >= n:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("training did not reach the wanted step in time")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, atol=1e-6, rtol=0, msg=f"weights differ at {key}")


def test_sigterm_saves_exits_cleanly_and_resumes_exactly(tmp_path: Path, straight: dict) -> None:
    run = tmp_path / "run"
    proc = _launch(run)
    _wait_for_steps(proc, run, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "interrupted by SIGTERM; checkpoint saved" in err
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 2 <= ckpt["step"] < STEPS and ckpt["train_state"]["status"] == "running"
    resumed = subprocess.run(proc.args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run}" in resumed.stdout
    _assert_same_weights(straight, load_checkpoint(run / "checkpoints" / "last.pt"))


def test_sigkill_mid_training_then_rerun_finishes(tmp_path: Path, straight: dict) -> None:
    run = tmp_path / "run"
    proc = _launch(run, **{"train.checkpoint_every_steps": 1})
    _wait_for_steps(proc, run, 5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    for path in (run / "checkpoints").glob("*.pt"):  # whatever the kill interrupted, the named files are whole
        load_checkpoint(path)
    killed_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 4 <= killed_at < STEPS
    resumed = subprocess.run(proc.args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = load_checkpoint(run / "checkpoints" / "last.pt")
    assert final["train_state"]["finished"]
    _assert_same_weights(straight, final)
