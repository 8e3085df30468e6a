"""Exact resume, run-folder reuse rules, and a tiny end-to-end run with evaluation, report and MLPerf log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from singleshot.checkpoint import load_checkpoint, model_from_checkpoint
from singleshot.engine.checkpointing import RunConfigMismatch
from singleshot.engine.trainer import train

# A step schedule in epochs does not depend on the run length, so a 3-step run is a true prefix of a 6-step one.
STEP_SCHEDULE = {"schedule.name": "multistep", "schedule.milestones": "[1]", "schedule.gamma": 0.5}


def assert_same_training_state(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] and a["sampler"] == b["sampler"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, atol=atol, rtol=0, msg=f"weights differ at {key}")
    for pid, st in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][pid]["momentum_buffer"], st["momentum_buffer"],
                                   atol=atol, rtol=0)  # fmt: skip


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_half_then_resume_equals_straight(tmp_path: Path, fused: bool) -> None:
    kw = {**STEP_SCHEDULE, "optim.fused": fused}  # fused: the CUDA default's optimizer kernel, here on the CPU
    straight = train(tiny_config(tmp_path / "straight", **kw))
    assert straight.status == "finished" and straight.step == 6
    first = train(tiny_config(tmp_path / "resumed", **kw, **{"train.max_steps": 3}))
    assert first.step == 3
    mid = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert mid["sampler"]["epoch"] == 0 and mid["sampler"]["start"] == 12  # mid-epoch: 3 batches of 4 consumed
    second = train(tiny_config(tmp_path / "resumed", **kw))
    assert second.status == "finished" and second.step == 6
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert_same_training_state(a, b)
    # and the weights really moved: the test would catch a resume that reloads the 3-step state and stops
    assert any(not torch.equal(mid["state_dict"][k], v) for k, v in a["state_dict"].items() if v.is_floating_point())


def test_rerun_resumes_or_refuses_on_changed_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(run, **{"train.max_steps": 2}))
    again = train(tiny_config(run, **{"train.max_steps": 2}))
    assert again.status == "already_finished" and again.step == 2
    with pytest.raises(RunConfigMismatch, match=r"optim\.lr: 0\.02 -> 0\.05"):
        train(tiny_config(run, **{"train.max_steps": 2, "optim.lr": 0.05}))
    longer = train(tiny_config(run, **{"train.max_steps": 4}))  # the run length may grow
    assert longer.status == "finished" and longer.step == 4


def test_tiny_run_with_eval_report_and_mlperf_log(tmp_path: Path) -> None:
    data = tiny_config(tmp_path).data.train
    run = tmp_path / "run"
    cfg = tiny_config(run, **{"data.val": data, "train.max_steps": 8, "eval.every": 1, "eval.num_pictures": 2,
                              "run.report": "true", "run.tensorboard": "true", "run.mlperf_log": "true"})  # fmt: skip
    result = train(cfg)
    assert result.status == "finished" and len(result.final_stats) == 12
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "curves.png",
        "mlperf.log",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert len(list((run / "predictions").glob("*.jpg"))) == 2
    assert list((run / "tensorboard").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2]  # 4 steps per epoch: after epochs 1 and 2
    assert all(0.0 <= r["AP"] <= 1.0 for r in evals)
    assert sum(r["kind"] == "train" for r in records) == 8
    # the checkpoint rebuilds the model and loads with weights_only=True
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    model_from_checkpoint(ckpt)
    assert ckpt["config"]["data"]["val"] == data and ckpt["train_state"]["finished"]
    log = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in (run / "mlperf.log").read_text().splitlines()]
    keys = [e["key"] for e in log]
    for key in (
        "init_start",
        "init_stop",
        "run_start",
        "run_stop",
        "seed",
        "global_batch_size",
        "train_samples",
        "eval_samples",
        "opt_base_learning_rate",
        "opt_learning_rate_warmup_steps",
        "max_samples",
        "block_start",
        "epoch_start",
        "epoch_stop",
        "eval_start",
        "eval_stop",
        "eval_accuracy",
    ):
        assert key in keys, key
    acc = [e for e in log if e["key"] == "eval_accuracy"]
    assert [e["metadata"]["epoch_num"] for e in acc] == [1, 2]
    assert next(e for e in log if e["key"] == "epoch_start")["metadata"]["epoch_num"] == 1
    assert log[-1]["key"] == "run_stop" and log[-1]["metadata"]["status"] in ("success", "aborted")


def test_a_run_saved_under_an_earlier_key_name_resumes(tmp_path: Path) -> None:
    """A run folder whose checkpoint and config.yaml say data.max_samples (data.crop_attempts' earlier name)
    resumes; a different value under the earlier name is still a different configuration."""
    import yaml

    from singleshot.checkpoint import atomic_save

    def rename_back(config: dict) -> dict:
        config["data"]["max_samples"] = config["data"].pop("crop_attempts")
        return config

    run = tmp_path / "run"
    train(tiny_config(run, **{"train.max_steps": 2}))
    for path in (run / "checkpoints").glob("*.pt"):
        ckpt = load_checkpoint(path)
        rename_back(ckpt["config"])
        atomic_save(ckpt, path)
    (run / "config.yaml").write_text(yaml.safe_dump(rename_back(yaml.safe_load((run / "config.yaml").read_text()))))
    assert "max_samples" in load_checkpoint(run / "checkpoints" / "last.pt")["config"]["data"]
    with pytest.raises(RunConfigMismatch, match=r"data\.crop_attempts: 1 -> 50"):
        train(tiny_config(run, **{"train.max_steps": 4, "data.crop_attempts": 50}))
    longer = train(tiny_config(run, **{"train.max_steps": 4}))
    assert longer.status == "finished" and longer.step == 4


def test_padded_last_batch_resumes_exactly(tmp_path: Path) -> None:
    """data.last_batch=pad (the MLPerf preset's): 16 images at batch 3 -> 6 steps per epoch, the last batch filled
    from the epoch's start; a run stopped mid-epoch and resumed ends where the straight run does."""
    kw = {**STEP_SCHEDULE, "data.batch_size": 3, "data.last_batch": "pad", "train.max_steps": 10}
    straight = train(tiny_config(tmp_path / "straight", **kw))
    assert straight.step == 10 and straight.epoch == 1  # 6 + 4 steps: one whole epoch (16 -> 18 images)
    train(tiny_config(tmp_path / "resumed", **{**kw, "train.max_steps": 4}))
    assert train(tiny_config(tmp_path / "resumed", **kw)).step == 10
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert_same_training_state(a, b, atol=0)


def test_dali_counter_epochs_run_and_resume_exactly(tmp_path: Path) -> None:
    """data.epoch_length=dali_counter (the NVIDIA v1.1 preset's): 16 images at batch 3 count epochs of 6, 5, 6
    steps (the first batch prefetched, the overshoot carried: 18 -> 2, 17 -> 1), the samples running on across
    them; evaluations fall at those epochs' ends, and a run stopped inside the second resumes exactly."""
    from train_helpers import tiny_dataset

    kw = {**STEP_SCHEDULE, "data.batch_size": 3, "data.epoch_length": "dali_counter", "train.max_steps": 17,
          "data.val": str(tiny_dataset()), "eval.every": 1, "eval.target_map": "null"}  # fmt: skip
    straight = train(tiny_config(tmp_path / "straight", **kw))
    assert straight.step == 17 and straight.epoch == 3
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in records if r["kind"] == "eval"] == [(6, 1), (11, 2), (17, 3)]
    train(tiny_config(tmp_path / "resumed", **{**kw, "train.max_steps": 8}))
    assert train(tiny_config(tmp_path / "resumed", **kw)).step == 17
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert_same_training_state(a, b, atol=0)
