"""The config as a user coming from Ultralytics meets it: short keys, --help-config of a preset, ranges checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from singleshot.cli import main


def _rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()[1:] if line.strip() and "." in line.split()[0]}


def test_help_config_of_a_preset_shows_the_preset_values(capsys: pytest.CaptureFixture[str]) -> None:
    # singleshot train --config finetune_tiny --help-config
    assert main(["train", "--config", "finetune_tiny", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["key", "type", "value"]
    rows = _rows(out)
    assert re.match(r"optim\.name\s+sgd\|adamw\s+adamw \*", rows["optim.name"])  # the dataclass default is sgd
    assert re.match(r"optim\.lr\s+float\s+0\.0004 \*", rows["optim.lr"])  # not 0.1
    assert re.match(r"train\.epochs\s+float\s+4\.0 \*", rows["train.epochs"])  # not 65
    assert re.match(r"optim\.momentum\s+float\s+0\.9\s", rows["optim.momentum"])  # same as the default: no mark
    assert "values of --config finetune_tiny" in out.splitlines()[-1]


def test_help_config_shows_overrides_and_short_keys(capsys: pytest.CaptureFixture[str]) -> None:
    # singleshot train --help-config imgsz=320
    assert main(["train", "--help-config", "imgsz=320"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert re.match(r"model\.image_size\s+int \| None\s+320 \*", rows["model.image_size"])
    assert "(short: imgsz=)" in rows["model.image_size"] and "(short: batch=)" in rows["data.batch_size"]
    # without --config or overrides: the defaults
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["key", "type", "default"]
    assert re.match(r"optim\.name\s+sgd\|adamw\s+sgd\s", _rows(out)["optim.name"])


def test_short_keys_set_what_a_yolo_user_means(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # singleshot train --print-config data=ds/data.yaml imgsz=320 epochs=3 batch=8 name=exp model=ssd_tiny
    ds = str(tmp_path / "ds" / "data.yaml")
    args = [f"data={ds}", "imgsz=320", "epochs=3", "batch=8", "name=exp", "model=ssd_tiny", "exist_ok=true"]
    assert main(["train", "--print-config", *args]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["train"] == ds and cfg["data"]["val"] == ds  # both splits from the dataset
    assert cfg["model"]["image_size"] == 320 and cfg["model"]["name"] == "ssd_tiny"
    assert cfg["train"]["epochs"] == 3.0 and cfg["data"]["batch_size"] == 8
    assert cfg["run"]["name"] == "exp" and cfg["run"]["exist_ok"] is True
    # the long key given after a short one wins (overrides apply in order)
    assert main(["train", "--print-config", f"data={ds}", "data.val=null"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["train"] == ds and cfg["data"]["val"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=-4", "config key 'data.batch_size': must be >= 1; got -4"),
        ("batch=0", "config key 'data.batch_size': must be >= 1; got 0"),
        ("optim.lr=-1", "config key 'optim.lr': must be > 0; got -1.0"),  # as given, not after batch scaling
        ("train.ema_decay=1", "config key 'train.ema_decay': must be > 0 and < 1; got 1.0"),
        ("schedule.milestones=[4,-2]", "config key 'schedule.milestones': must be >= 0; got -2.0"),
        ("data.num_workers=-1", "config key 'data.num_workers': must be >= 0; got -1"),
        ("imgsz=16", "config key 'model.image_size': must be >= 32; got 16"),
    ],
)
def test_out_of_range_values_are_config_errors(
    override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # singleshot train data.batch_size=-4  -> one line, exit 2, no traceback, nothing trained
    assert main(["train", "--print-config", override]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"singleshot train: {message}"
    assert captured.out == ""


def test_out_of_range_values_in_a_file_are_config_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # singleshot train --config my.yaml   (data: {batch_size: 0})
    cfg = tmp_path / "my.yaml"
    cfg.write_text("base: cpu_tiny\ndata:\n  batch_size: 0\n")
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    assert "config key 'data.batch_size': must be >= 1; got 0" in capsys.readouterr().err


def test_batch_size_one_with_batchnorm_on_a_1x1_map_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # singleshot train batch=1   (ssd_tiny's last extra block is BatchNorm on a 1x1 map: one value per channel)
    from train_helpers import tiny_overrides

    assert main(["train", *tiny_overrides(tmp_path / "r"), "batch=1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "singleshot train: data.batch_size=1: ssd_tiny at 160 px ends in a 1x1 feature map with BatchNorm, which "
        "needs at least 2 values per channel to train; use data.batch_size=2 or more (or train.freeze_bn=true)")
