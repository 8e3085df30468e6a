"""GPU paths of the loop: fp16 autocast + GradScaler, bf16, channels-last, deferred photometric work, pinned memory.

Skipped automatically without CUDA (conftest). Tiny runs; they check that training moves the weights, stays finite,
and that the scaler state lands in the checkpoint and resumes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from singleshot.checkpoint import load_checkpoint
from singleshot.engine.trainer import Trainer, train


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_cuda_training_with_amp_and_channels_last(tmp_path: Path, precision: str) -> None:
    cuda = {"train.device": "cuda", "train.precision": precision, "train.deterministic": "false"}
    trainer = Trainer(tiny_config(tmp_path / "run", **cuda, **{"train.max_steps": 6}))
    result = trainer.run()
    assert result.status == "finished" and result.step == 6
    assert trainer.parts.channels_last and trainer.device.type == "cuda"
    assert trainer.parts.data.train_loader.loader.pin_memory
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    if precision == "fp16":
        assert ckpt["scaler"]["scale"] > 0
        resumed = train(tiny_config(tmp_path / "run", **cuda, **{"train.max_steps": 8}))
        assert resumed.step == 8


@pytest.mark.gpu
def test_auto_precision_is_fp16_with_scaler_on_cuda(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path / "run", **{"train.deterministic": "false", "train.max_steps": 1}))
    trainer.run()
    assert trainer.precision == "fp16" and trainer.parts.scaler.is_enabled()
