"""Device choice and capabilities go through singleshot.accelerator (CPU here; CUDA rows run where a GPU exists)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from singleshot.accelerator import capabilities, current_accelerator, default_device, resolve_device, synchronize
from singleshot.precision import resolve_precision

NO_ACCELERATOR = current_accelerator() is None


def test_auto_and_cpu_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto", local_rank=0) == default_device(0)
    if NO_ACCELERATOR:
        assert default_device(3) == torch.device("cpu")
    synchronize(torch.device("cpu"))  # a no-op, never an error
    synchronize()


def test_bf16_training_only_where_onednn_has_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from singleshot.accelerator import native_bf16_cpu

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    for amx, avx512_bf16, isa, expected in [
        (False, False, "", False),  # AVX2 / AVX-512 without bf16: emulated, slower than fp32
        (True, False, "", True),  # Sapphire Rapids
        (False, True, "", True),  # Zen 4
        (False, True, "AVX512_CORE", False),  # oneDNN held below bf16 by the user
        (True, True, "avx512_core_amx", True),
        (False, True, "ALL", True),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert native_bf16_cpu() is expected, (amx, avx512_bf16, isa)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert native_bf16_cpu() is False


@pytest.mark.skipif(not NO_ACCELERATOR, reason="needs a machine without an accelerator")
def test_unavailable_or_unknown_device_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"train\.device=cuda but cuda is not available here.*train\.device=auto"):
        resolve_device("cuda", 0, "train.device")
    with pytest.raises(ValueError, match=r"--device='gpu0' is not a device"):
        resolve_device("gpu0", 0, "--device")


def test_capabilities_decide_precision_and_layout() -> None:
    cpu, cuda = capabilities("cpu"), capabilities("cuda:1")
    assert (cpu.fp16_training, cpu.dist_backend, cpu.pin_memory) == (False, "gloo", False)
    assert cpu.channels_last == torch.backends.mkldnn.is_available()
    assert (cuda.fp16_training, cuda.dist_backend, cuda.channels_last, cuda.dali) == (True, "nccl", True, True)
    assert capabilities("xpu").dist_backend == "xccl" and capabilities("hpu").dist_backend == "hccl"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # inference keeps fp32 on a CPU
    native = torch.backends.mkldnn.is_available() and (
        torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    )
    assert resolve_precision("auto", torch.device("cpu"), training=True) == ("bf16" if native else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", torch.device("cpu"), training=True) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"), training=True)


@pytest.mark.skipif(not NO_ACCELERATOR, reason="needs a machine without an accelerator")
def test_train_cli_reports_an_unavailable_device_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from train_helpers import tiny_overrides

    from singleshot.cli import main

    assert main(["train", *tiny_overrides(tmp_path / "a", **{"train.device": "cuda"})]) == 2
    err = capsys.readouterr().err
    assert "train.device=cuda but cuda is not available" in err and "Traceback" not in err
    assert main(["train", *tiny_overrides(tmp_path / "b", **{"train.precision": "fp16"})]) == 2
    err = capsys.readouterr().err
    assert "train.precision=fp16 needs a CUDA device" in err and "Traceback" not in err


def test_process_group_questions(tmp_path: Path) -> None:
    """Outside a process group: no group, rank 0 of 1; inside a one-process gloo group: the group's answer."""
    import torch.distributed as dist

    from singleshot.accelerator import in_process_group, rank_and_world_size
    from singleshot.data.loader import ResumableSampler

    assert not in_process_group() and rank_and_world_size() == (0, 1)
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        assert in_process_group() and rank_and_world_size() == (0, 1)
        sampler = ResumableSampler(10)
        assert (sampler.rank, sampler.num_replicas) == (0, 1)
    finally:
        dist.destroy_process_group()
    assert not in_process_group()
