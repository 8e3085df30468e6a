"""SSD320 v1.2's training set-up on the tiny model (frozen backbone BatchNorm, the area crop), and torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from singleshot import build_model
from singleshot.checkpoint import load_checkpoint
from singleshot.engine.trainer import Trainer


def test_frozen_backbone_bn_stays_frozen_while_the_rest_trains(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run", **{"model.frozen_backbone_bn": "true", "data.augment": "area_crop", "train.max_steps": 3}
    )
    with pytest.warns(UserWarning, match="not pretrained"):
        result = Trainer(cfg).run()
    assert result.status == "finished" and result.step == 3
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    state = ckpt["state_dict"]
    bn_stats = [k for k in state if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))]
    assert bn_stats
    for k in bn_stats:  # never updated: still the initial statistics
        init = torch.zeros_like(state[k]) if k.endswith("mean") else torch.ones_like(state[k])
        assert torch.equal(state[k], init), k
    assert all(state[k.replace("running_mean", "weight")].eq(1).all() for k in bn_stats if k.endswith("mean"))
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    initial = build_model(cfg.model.name, num_classes=ckpt["model"]["num_classes"]).state_dict()
    assert sorted(initial) == sorted(state)  # the keys of the unfrozen model
    assert not torch.equal(initial["backbone.conv1.weight"], state["backbone.conv1.weight"])  # the convs train
    # The run resumes into a frozen model from the same keys.
    cfg2 = tiny_config(
        tmp_path / "run", **{"model.frozen_backbone_bn": "true", "data.augment": "area_crop", "train.max_steps": 4}
    )
    with pytest.warns(UserWarning, match="not pretrained"):
        assert Trainer(cfg2).run().step == 4


@pytest.mark.slow
def test_compiled_training_follows_eager(tmp_path: Path) -> None:
    """train.compile=true (inductor; ~1 min of compilation on 2 CPU cores) gives the eager loss curve."""
    import json

    curves = []
    for compile_ in ("false", "true"):
        run = tmp_path / f"compile_{compile_}"
        assert Trainer(tiny_config(run, **{"train.compile": compile_, "train.max_steps": 4})).run().step == 4
        lines = (run / "metrics.jsonl").read_text().splitlines()
        curves.append([json.loads(line)["loss"] for line in lines if json.loads(line)["kind"] == "train"])
    eager, compiled = curves
    assert len(eager) == len(compiled) == 4
    assert all(abs(a - b) <= 0.01 * abs(a) for a, b in zip(eager, compiled)), (eager, compiled)


def test_cli_reports_setup_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train_helpers import tiny_overrides

    from singleshot.cli import main

    assert main(["train", *tiny_overrides(tmp_path / "a", **{"model.num_classes": 81})]) == 2
    err = capsys.readouterr().err
    assert "model.num_classes=81" in err and "model.num_classes=null" in err and "Traceback" not in err
    bad = tmp_path / "resnet18.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["train", *tiny_overrides(tmp_path / "b", **{"model.pretrained_backbone": str(bad)})]) == 2
    assert "model.pretrained_backbone: cannot read pretrained backbone file" in capsys.readouterr().err
    assert main(["train", *tiny_overrides(tmp_path / "c", **{"data.train": "coco"})]) == 2
    assert "data.train='coco': no such file or directory" in capsys.readouterr().err
    focal = {"model.name": "ssd320_resnet50_fpn", "train.box_loss": "giou"}
    assert main(["train", *tiny_overrides(tmp_path / "d", **focal)]) == 2
    err = capsys.readouterr().err
    assert "train.box_loss=giou" in err and "focal" in err and "Traceback" not in err
    assert main(["train", *tiny_overrides(tmp_path / "e", **{"train.box_loss": "iou"})]) == 2
    assert "train.box_loss" in capsys.readouterr().err


def test_giou_box_loss_trains(tmp_path: Path) -> None:
    """train.box_loss=giou swaps the multibox loss's box term; the run trains and its loss falls."""
    import json

    run = tmp_path / "giou"
    assert Trainer(tiny_config(run, **{"train.box_loss": "giou", "train.max_steps": 12})).run().step == 12
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert all(0 <= r["box"] <= 4.0 for r in train)  # 2 x (1 - GIoU) per positive is in [0, 4]
    assert train[-1]["loss"] < train[0]["loss"], [r["loss"] for r in train]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["train"]["box_loss"] == "giou"


def test_pretrained_backbone_loads_and_stays_frozen(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    from torchvision.models import resnet18

    net = resnet18()
    for m in net.modules():  # recognisable statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    cfg = tiny_config(
        tmp_path / "run",
        **{"model.pretrained_backbone": str(path), "model.frozen_backbone_bn": "true", "train.max_steps": 2},
    )
    assert Trainer(cfg).run().step == 2
    assert not [w for w in recwarn if "not pretrained" in str(w.message)]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state_dict"]
    assert torch.equal(state["backbone.layer2.0.bn2.running_mean"], net.layer2[0].bn2.running_mean)
    assert torch.equal(state["backbone.bn1.weight"], net.bn1.weight.detach())


def test_loader_workers_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """data.num_workers=null: none on a CPU run; with an accelerator, the process's cores minus one (at most 16),
    shared among torchrun's processes on the node; a number given is kept."""
    from singleshot.engine.build import loader_workers
    from singleshot.engine.distributed import DistInfo

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    single, torchrun = DistInfo(), DistInfo(rank=1, world_size=4, local_rank=1, launcher="torchrun")
    assert loader_workers(None, torch.device("cpu"), single) == 0
    assert loader_workers(None, torch.device("cuda", 0), single) == 15
    assert loader_workers(None, torch.device("cuda", 1), torchrun) == 3
    assert loader_workers(2, torch.device("cpu"), single) == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert loader_workers(None, torch.device("cuda", 0), single) == 16
