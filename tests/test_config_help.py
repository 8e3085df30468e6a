"""Config that helps: choices checked on read, key suggestions, --help-config, --version, a torch-free --help."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import singleshot
from singleshot.cli import main
from singleshot.engine.config import ConfigError, all_keys, help_config, load_config, suggest_keys


def test_a_typo_gets_the_closest_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*did you mean 'optim\.lr'\?"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"did you mean 'optim\.lr'\?"):  # the section left out
        load_config(None, ["lr=0.1"])
    assert suggest_keys("data.batchsize") == "; did you mean 'data.batch_size'?"
    assert suggest_keys("zzzz.qqqq") == ""


def test_a_typo_in_a_yaml_file_gets_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"'train\.epoch'; did you mean 'train\.epochs'\?"):
        load_config(cfg)


def test_model_name_and_choices_are_checked_when_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--print-config", "model.name=ssd300_resnet43"]) == 2
    err = capsys.readouterr().err
    assert "model.name" in err and "ssd_tiny" in err and "did you mean 'ssd300_resnet34'?" in err
    with pytest.raises(ConfigError, match=r"schedule\.name.*did you mean 'cosine'"):
        load_config(None, ["schedule.name=cosin"])


def test_help_config_lists_every_key_with_type_default_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == help_config()
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert list(rows) == all_keys() and "model.weights" in rows and "data.on_bad_image" in rows
    header = out.splitlines()[0]
    meaning_at = header.index("meaning")
    for key, line in rows.items():
        assert line[meaning_at:].strip(), f"{key} has no comment in singleshot/engine/config.py"
    assert re.match(r"optim\.lr\s+float\s+0\.1\s+base learning rate", rows["optim.lr"])
    assert re.match(r"data\.train_images\s+str \| None\s+null\s+image folder", rows["data.train_images"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"singleshot {singleshot.__version__}"


def test_help_of_every_command_does_not_import_torch() -> None:
    """In a fresh interpreter: `singleshot --help` and `singleshot CMD --help` leave torch (and numpy) unloaded."""
    code = (
        "import sys, contextlib, io\n"
        "from singleshot.cli import build_parser, main\n"
        "cmds = [a for a in build_parser()._subparsers._group_actions[0].choices]\n"
        "for argv in [['--help']] + [[c, '--help'] for c in cmds] + [['data', 'synth', '--help']]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(cmds), 'torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False False"), out
    assert "train" in out and "eval" in out


def test_synth_help_states_the_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from singleshot.data.synth import DEFAULTS

    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {DEFAULTS['num_train']})" in text and f"(default {DEFAULTS['num_val']})" in text
    assert f"(default {DEFAULTS['seed']})" in text
    w, h = DEFAULTS["image_size"]
    assert f"{w}x{h} (default)" in text


def test_every_preset_reads_and_the_finetune_recipe_is_one() -> None:
    from singleshot.engine.config import preset_names

    assert "finetune_tiny" in preset_names()
    for name in preset_names():
        load_config(name)
    ft, base = load_config("finetune_tiny"), load_config("cpu_tiny")
    assert ft.optim.lr < base.optim.lr and ft.train.epochs < base.train.epochs and ft.model.weights is None
    assert dataclasses.asdict(ft.data) == dataclasses.asdict(base.data)


def test_choices_are_literal_types_checked_once_with_a_suggestion() -> None:
    import typing

    from singleshot.engine.config import ConfigError, DataConfig, OptimConfig, load_config

    assert typing.get_type_hints(OptimConfig)["name"] == typing.Literal["sgd", "adamw"]
    assert typing.get_type_hints(DataConfig)["augment"] == typing.Literal["ssd", "area_crop", "light", "none"]
    with pytest.raises(ConfigError, match=r"'optim.name': expected one of sgd, adamw; got 'adamx' \(did you mean 'ad"):
        load_config(None, ["optim.name=adamx"])
    with pytest.raises(ConfigError, match=r"'data.augment': expected one of .*got 'bogus'"):
        DataConfig(augment="bogus")  # built in Python, not from YAML: checked too
