"""Reading checkpoint files of every kind (``read_checkpoint``) and ``singleshot convert``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from test_interop_keys import random_state_dict

from singleshot.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint
from singleshot.cli import main
from singleshot.interop import COCO_CLASSES, InteropError, read_checkpoint


def _scheduler_state() -> dict:
    # A real MultiStepLR state: its milestones are a collections.Counter, which plain weights_only loading rejects.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[43, 54]).state_dict()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An NVIDIA training checkpoint saved from DDP, and a bare MLPerf state dict."""
    root = tmp_path_factory.mktemp("interop")
    nvidia = random_state_dict("nvidia", seed=1)
    torch.save(
        {
            "epoch": 65,
            "iteration": 240_000,
            "optimizer": {"state": {}, "param_groups": []},
            "scheduler": _scheduler_state(),
            "label_map": {0: "background", **dict(enumerate(COCO_CLASSES, 1))},
            "model": {"module." + k: v for k, v in nvidia.items()},
        },
        root / "nvidia.pt",
    )
    torch.save(random_state_dict("mlperf", seed=2), root / "mlperf.pt")
    return {"root": root, "nvidia": root / "nvidia.pt", "mlperf": root / "mlperf.pt"}


def test_read_checkpoint_detects_and_converts_each_kind(files) -> None:
    ckpt = read_checkpoint(files["nvidia"])
    assert ckpt["format"] == "singleshot" and ckpt["model"] == {"name": "ssd300_resnet50", "num_classes": 81}
    assert ckpt["source"] == {"kind": "nvidia", "file": str(files["nvidia"]), "epoch": 65}
    assert ckpt["classes"] == COCO_CLASSES
    model_from_checkpoint(ckpt)
    assert read_checkpoint(files["mlperf"], "mlperf")["model"]["name"] == "ssd300_resnet34"
    with pytest.raises(InteropError, match="expected a mlperf checkpoint but this is a nvidia checkpoint"):
        read_checkpoint(files["nvidia"], "mlperf")


def test_read_checkpoint_errors_name_the_file(files) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        read_checkpoint(files["root"] / "nope.pt")
    junk = files["root"] / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InteropError, match=r"junk\.pt"):
        read_checkpoint(junk)
    other = files["root"] / "other.pt"
    torch.save({"fc.weight": torch.zeros(2)}, other)
    with pytest.raises(InteropError, match=r"other\.pt: not a singleshot, MLPerf .* \(first keys: fc\.weight\)"):
        read_checkpoint(other)


def test_pickled_objects_need_trust(files) -> None:
    path = files["root"] / "pickled.pt"
    torch.save({"model": random_state_dict("mlperf"), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(InteropError, match="trust_pickle=True"):
        read_checkpoint(path)
    assert read_checkpoint(path, trust_pickle=True)["model"]["name"] == "ssd300_resnet34"


def test_convert_cli_round_trip(files, capsys: pytest.CaptureFixture) -> None:
    out = files["root"] / "converted.pt"
    assert main(["convert", "--from", "nvidia", str(files["nvidia"]), "--out", str(out)]) == 0
    assert "nvidia -> singleshot ssd300_resnet50, 81 classes, 342 tensors" in capsys.readouterr().out
    ckpt = load_checkpoint(out)  # a plain singleshot checkpoint now
    assert ckpt["label_to_category_id"][80] == 90

    back = files["root"] / "back.pt"
    assert main(["convert", "--to", "nvidia", str(out), "--out", str(back)]) == 0
    original = torch.load(files["nvidia"], weights_only=False)["model"]
    written = torch.load(back, weights_only=True)
    assert set(written) == {"model", "label_map"}
    assert list(written["model"]) == [k.removeprefix("module.") for k in original]
    assert all(torch.equal(written["model"][k.removeprefix("module.")], v) for k, v in original.items())


def test_convert_cli_errors(files, capsys: pytest.CaptureFixture) -> None:
    out = files["root"] / "x.pt"
    assert main(["convert", "--from", "mlperf", str(files["nvidia"]), "--out", str(out)]) == 1
    assert "expected a mlperf checkpoint but this is a nvidia checkpoint" in capsys.readouterr().err
    assert not out.exists()
    assert main(["convert", "--to", "nvidia", str(files["mlperf"]), "--out", str(out)]) == 1
    assert "needs 'ssd300_resnet50'" in capsys.readouterr().err
    out.write_bytes(b"keep me")
    assert main(["convert", "--from", "auto", str(files["mlperf"]), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["convert", "--from", "auto", str(files["mlperf"]), "--out", str(out), "--overwrite"]) == 0
    assert load_checkpoint(out)["source"]["kind"] == "mlperf"


def test_singleshot_checkpoints_pass_through(files) -> None:
    import singleshot

    path = files["root"] / "tiny.pt"
    torch.save(make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=3), ["a", "b"]), path)
    ckpt = read_checkpoint(path)
    assert ckpt["model"]["name"] == "ssd_tiny" and "source" not in ckpt


def test_detector_loads_a_foreign_checkpoint_directly(files) -> None:
    from singleshot.inference import Detector

    detector = Detector.from_checkpoint(files["nvidia"], device="cpu")
    assert detector.classes == COCO_CLASSES and detector.label_to_category_id[80] == 90
    nvidia = torch.load(files["nvidia"], weights_only=False)["model"]
    got = detector.model.state_dict()
    assert torch.equal(got["head.conf.3.weight"], nvidia["module.conf.3.weight"])
    assert torch.equal(
        got["backbone.layer3.5.bn3.running_var"],
        nvidia["module.feature_extractor.feature_extractor.6.5.bn3.running_var"],
    )
