"""Run folders and evaluation cadence as a user coming from Ultralytics expects them: a changed configuration gets
``NAME2``, the same command finds and resumes its own run, ``run.resume`` / ``run.exist_ok``; automatic evaluation
cadence said at the start; a warning for a warmup as long as the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import tiny_overrides

from singleshot.cli import main
from singleshot.engine.config import load_config
from singleshot.engine.loop_state import auto_eval_every


def _train(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """``singleshot train`` on the tiny set in ``tmp_path/runs/tiny`` (run.root/run.name, no run.dir)."""
    args = [a for a in tiny_overrides(tmp_path / "unused", **{"train.max_steps": 2}) if not a.startswith("run.dir=")]
    code = main(["train", *args, f"run.root={tmp_path / 'runs'}", "run.name=tiny", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_changed_configuration_gets_a_numbered_folder_and_each_command_finds_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    code, out = _train(tmp_path, capsys)  # singleshot train ... run.name=tiny
    assert code == 0 and f"run folder: {runs / 'tiny'}" in out
    code, out = _train(tmp_path, capsys)  # the same command again: its run, already finished
    assert code == 0 and f"run {runs / 'tiny'} already finished" in out
    code, out = _train(tmp_path, capsys, "optim.lr=0.01")  # another lr: a new numbered folder, said why
    assert code == 0
    assert (f"{runs / 'tiny'} holds a run with another configuration (optim.lr differs): starting {runs / 'tiny2'}"
            in out)
    assert f"run folder: {runs / 'tiny2'}" in out
    code, out = _train(tmp_path, capsys)  # the first command finds its own folder, not a third one
    assert code == 0 and f"run {runs / 'tiny'} already finished" in out
    code, out = _train(tmp_path, capsys, "optim.lr=0.01")  # and the second its own
    assert code == 0 and f"run {runs / 'tiny2'} already finished" in out
    code, out = _train(tmp_path, capsys, "resume=false")  # always a new run
    assert code == 0 and f"run.resume=false: starting a new run in {runs / 'tiny3'}" in out
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "tiny2", "tiny3"]


def test_exist_ok_replaces_the_run_in_the_named_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert _train(tmp_path, capsys)[0] == 0
    (runs / "tiny" / "notes.txt").write_text("mine")
    code, out = _train(tmp_path, capsys, "optim.lr=0.01", "exist_ok=true")
    assert code == 0
    assert f"run.exist_ok=true: replacing the run in {runs / 'tiny'} (another configuration) with a fresh one" in out
    assert f"run folder: {runs / 'tiny'}" in out and not (runs / "tiny2").exists()
    assert "lr: 0.01" in (runs / "tiny" / "config.yaml").read_text()
    steps = [json.loads(line)["step"] for line in (runs / "tiny" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert steps == [1, 2]  # the old run's records are gone, not mixed in
    assert (runs / "tiny" / "notes.txt").read_text() == "mine"  # what is not the run's state stays


def test_an_explicit_run_dir_is_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "exact"
    base = tiny_overrides(run, **{"train.max_steps": 2})
    assert main(["train", *base]) == 0
    capsys.readouterr()
    assert main(["train", *base, "optim.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert f"run folder {run} holds a run with a different configuration (optim.lr: 0.02 -> 0.01)" in err
    assert "run.exist_ok=true" in err and "run.dir=PATH" in err


def test_auto_evaluation_cadence_is_said_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 16 images, batch 4: 4 steps per epoch; 12 epochs; 8 val images
    from train_helpers import tiny_dataset

    extra = [f"data.val={tiny_dataset()}", "train.max_steps=null", "train.epochs=12", "eval.every=null"]
    code, out = _train(tmp_path, capsys, *extra)
    assert code == 0
    every, fraction = auto_eval_every(12, 16, 8)
    assert every == 0  # each evaluation's fixed cost alone is more than a tenth of a 192-image run
    assert ("evaluating after epoch 12 (eval.every auto: only the final one: it alone costs about "
            f"{fraction:.0%} of a run this short; eval.every=N sets it)") in out
    records = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r.get("kind") == "eval"] == [12]
    # on the built-in set (10 epochs of 1,488 images, 200 val images) the rule picks what the default preset pins;
    # on a larger one it evaluates more often
    assert auto_eval_every(10, 1488, 200)[0] == 5
    assert auto_eval_every(10, 10000, 5000) == (4, pytest.approx(0.09))
    # the default preset keeps its evaluations after epochs 5 and 10
    cfg = load_config(None)
    assert cfg.eval.every == 5 and cfg.train.epochs == 10


def test_a_warmup_as_long_as_the_run_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _train(tmp_path, capsys, "schedule.warmup_steps=10")
    assert code == 0
    assert ("warning: the learning-rate warmup (10 steps: schedule.warmup_steps=10, schedule.warmup_epochs=0) is as "
            "long as the run (2 steps), which never trains at the full learning rate; set schedule.warmup_steps=1 "
            "for example") in out
    code, out = _train(tmp_path, capsys, "schedule.warmup_steps=1", "run.name=short")
    assert code == 0 and "warning: the learning-rate warmup" not in out
