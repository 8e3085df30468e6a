"""DDP on CPU (gloo): 2 processes at batch b follow the loss curve of 1 process at batch 2b.

Same global batch, same images per step (the sampler strides one permutation across ranks), same per-sample
augmentation (seeded by (seed, epoch, index)), same lr, and DDP averages gradients. The one legitimate difference
is BatchNorm in training mode: each rank normalizes with the statistics of its own b images (SyncBatchNorm is
CUDA-only). Hence two tolerances:

* BatchNorm frozen (``train.freeze_bn=true``): measured 6e-5 relative at worst (float summation order, compounded
  over 8 SGD steps); the test allows 5e-4;
* live BatchNorm: measured per-step differences of 2-10% relative over 8 steps on the 96x72 test images with
  b = 2; the test allows 15%.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import tiny_config, tiny_dataset

from singleshot.engine.trainer import train

STEPS = 8
COMMON = {"train.max_steps": STEPS, "optim.lr": 0.01}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, ports: tuple[int, int], out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    for port, freeze in zip(ports, ("true", "false")):
        os.environ["MASTER_PORT"] = str(port)
        run = Path(out, f"ddp_freeze_{freeze}")
        extra = {"data.batch_size": 2, "train.freeze_bn": freeze}
        if freeze == "false":
            extra["data.val"] = str(tiny_dataset())
        result = train(tiny_config(run, **COMMON, **extra))
        Path(out, f"rank{rank}_{freeze}.json").write_text(
            json.dumps({"stats": result.final_stats, "step": result.step})
        )


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def test_two_ranks_at_b_follow_one_rank_at_2b(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, (_free_port(), _free_port()), str(tmp_path)), nprocs=2, join=True)
    for freeze, tolerance in (("true", 5e-4), ("false", 0.15)):
        single = tmp_path / f"single_freeze_{freeze}"
        train(tiny_config(single, **COMMON, **{"data.batch_size": 4, "train.freeze_bn": freeze}))
        ref, got = _losses(single), _losses(tmp_path / f"ddp_freeze_{freeze}")
        assert len(ref) == len(got) == STEPS
        rel = [abs(a - b) / abs(a) for a, b in zip(ref, got)]
        print(f"freeze_bn={freeze}: max relative difference {max(rel):.2e}; per step {[f'{r:.3f}' for r in rel]}")
        assert max(rel) < tolerance, (ref, got)
        assert ref[-1] < ref[0] and got[-1] < got[0]  # both actually train
    # sharded evaluation: every rank ends with the same 12 numbers, computed over all 8 validation images
    r0, r1 = (json.loads((tmp_path / f"rank{r}_false.json").read_text()) for r in (0, 1))
    assert r0["step"] == r1["step"] == STEPS
    assert r0["stats"] == r1["stats"] and len(r0["stats"]) == 12


def _poisoned_worker(rank: int, world: int, port: int, out: str, fused: str) -> None:
    from test_train_guard import _poisoned

    from singleshot.engine.trainer import Trainer

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    cfg = tiny_config(Path(out, "run"), **{"train.max_steps": 5, "data.batch_size": 2, "optim.fused": fused})
    Trainer(cfg, loss_fn=_poisoned({2} if rank == 1 else set())).run()  # NaN on rank 1 only, at step 3


@pytest.mark.parametrize("fused", ["false", "true"], ids=["foreach-undo", "fused-skip"])
def test_a_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path: Path, fused: str) -> None:
    """The guard's all-reduce makes every rank skip together: the run finishes, the checkpoint counts one skipped
    step, and its weights are finite (a rank that stepped alone would have diverged from the other: DDP's gradient
    average of a NaN is NaN everywhere, so a step taken anywhere would poison the weights)."""
    from singleshot.checkpoint import load_checkpoint

    mp.spawn(_poisoned_worker, args=(2, _free_port(), str(tmp_path), fused), nprocs=2, join=True)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 5 and state["train_state"]["bad_steps_total"] == 1
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
