"""A signal at any phase of a run is an orderly stop: ``singleshot train`` exits 143 (SIGTERM) or 130 (SIGINT), and
re-running the same command ends with exactly the weights, evaluations and numbers of an uninterrupted run.

Phases: mid-step, during each evaluation (after epochs 1 and 2, and the final one after the last step), during an
epoch's checkpoint write, and during the final checkpoint write. The signal is sent by the process to itself from
inside the phase (a wrapper around the function that runs it), so the phase is exact, not a timing guess.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import tiny_dataset, tiny_overrides

import singleshot.engine.trainer as trainer_module
from singleshot.checkpoint import load_checkpoint
from singleshot.cli import main
from singleshot.engine.step import TrainStep

STEPS = 12  # 3 epochs of 4 steps (16 images, batch 4), an evaluation after each


def command(run: Path) -> list[str]:
    extra = {"train.max_steps": STEPS, "data.val": str(tiny_dataset()), "eval.every": 1, "eval.target_map": "null",
             "schedule.name": "multistep", "schedule.milestones": "[2]", "data.augment": "ssd"}  # fmt: skip
    return ["train", *tiny_overrides(run, **extra)]


def evaluations(run: Path) -> list[tuple[int, int, float]]:
    """(step, epoch, mAP) of every evaluation the run folder's metrics.jsonl records."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["epoch"], r["AP"]) for r in records if r["kind"] == "eval"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[tuple[int, int, float]]]:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(command(run)) == 0
    evals = evaluations(run)
    assert [(s, e) for s, e, _ in evals] == [(4, 1), (8, 2), (12, 3)]
    return load_checkpoint(run / "checkpoints" / "last.pt"), evals


def signal_on_call(original: Callable[..., Any], sig: int, when: Callable[[int, tuple, dict], bool]) -> Callable:
    """``original`` that sends ``sig`` to this process before the call for which ``when(n, args, kwargs)`` holds
    (``n``: 1-based count of calls), once."""
    calls, sent = [0], [False]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if not sent[0] and when(calls[0], args, kwargs):
            sent[0] = True
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    return wrapper


PHASES: dict[str, tuple[Any, str, Callable[[int, tuple, dict], bool]]] = {
    # phase: (object, attribute, at which call)
    "mid-step 6": (TrainStep, "__call__", lambda n, a, k: n == 6),
    "evaluation 1": (trainer_module, "evaluate", lambda n, a, k: n == 1),
    "evaluation 2": (trainer_module, "evaluate", lambda n, a, k: n == 2),
    "final evaluation": (trainer_module, "evaluate", lambda n, a, k: n == 3),
    "epoch checkpoint write": (trainer_module, "save_training_checkpoint", lambda n, a, k: k["step"] == 8),
    "final checkpoint write": (trainer_module, "save_training_checkpoint", lambda n, a, k: k["state"]["finished"]),
}
CASES = [(phase, signal.SIGTERM) for phase in PHASES] + [
    (phase, signal.SIGINT) for phase in ("mid-step 6", "evaluation 2", "final checkpoint write")
]


@pytest.mark.parametrize(("phase", "sig"), CASES, ids=[f"{p}-{signal.Signals(s).name}" for p, s in CASES])
def test_a_signal_in_any_phase_resumes_to_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], straight: tuple, phase: str,
    sig: int,
) -> None:  # fmt: skip
    expected, expected_evals = straight
    run = tmp_path / "run"
    owner, name, when = PHASES[phase]
    with monkeypatch.context() as patch:
        patch.setattr(owner, name, signal_on_call(getattr(owner, name), sig, when))
        code = main(command(run))
    err = capsys.readouterr().err
    assert code == 128 + sig, err
    assert "Traceback" not in err and f"interrupted by {signal.Signals(sig).name}" in err
    stopped = load_checkpoint(run / "checkpoints" / "last.pt")  # whole and loadable

    assert main(command(run)) == 0  # the same command again
    out = capsys.readouterr().out
    final = load_checkpoint(run / "checkpoints" / "last.pt")
    assert final["train_state"]["finished"] and final["step"] == STEPS
    for key, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), f"{phase}: weights differ at {key}"
    assert evaluations(run) == expected_evals  # the same evaluations, at the same steps, with the same numbers
    if stopped["train_state"]["eval_pending"]:  # the interrupted evaluation comes first, at its own step
        assert f"evaluation after epoch {stopped['train_state']['eval_epoch']} (step {stopped['step']})" in out
