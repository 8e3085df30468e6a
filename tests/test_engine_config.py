"""Typed config: YAML round trip, key=value overrides, presets, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from singleshot.engine.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_diff,
    config_from_dict,
    load_config,
    preset_names,
)


def test_yaml_round_trip_is_lossless(tmp_path: Path) -> None:
    cfg = apply_overrides(TrainConfig(), ["optim.lr=0.05", "schedule.milestones=[3, 4.5]", "data.val=null"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert config_diff(cfg.to_dict(), again.to_dict()) == []


def test_overrides_parse_and_coerce_types() -> None:
    cfg = apply_overrides(
        TrainConfig(),
        ["optim.lr=1", "data.batch_size=16", "train.max_steps=100", "train.channels_last=true", "eval.at=[1,2]"],
    )
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.data.batch_size == 16
    assert cfg.train.max_steps == 100
    assert cfg.train.channels_last is True
    assert cfg.eval.at == [1, 2]
    assert apply_overrides(cfg, ["train.max_steps=null"]).train.max_steps is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", "optim.lrr"),
        ("nosuch.key=1", "nosuch"),
        ("data.batch_size=abc", "data.batch_size"),
        ("data.batch_size=1.5", "data.batch_size"),
        ("train.deterministic=3", "train.deterministic"),
        ("optim=1", "names a section"),
        ("optim.lr", "section.key=value"),
        ("schedule.name=linear", "schedule.name"),
        ("train.precision=fp8", "train.precision"),
        ("data.augment=heavy", "data.augment"),
    ],
)
def test_bad_override_names_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        apply_overrides(TrainConfig(), [override])


def test_unknown_key_in_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.1\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"optim\.momentun"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no config file or preset"):
        load_config("no_such_preset")


def test_presets_load_and_match_published_recipes() -> None:
    names = preset_names()
    assert {"cpu_tiny", "mlperf_ssd300_resnet34", "nvidia_ssd300_resnet50", "nvidia_ssd320_resnet50_fpn"} <= set(names)
    for name in names:
        load_config(name)
    assert load_config(None) == load_config("cpu_tiny")
    mlperf = load_config("mlperf_ssd300_resnet34")
    assert (mlperf.optim.lr, mlperf.optim.reference_batch, mlperf.schedule.milestones) == (2.5e-3, 32, [40.0, 50.0])
    assert mlperf.eval.target_map == 0.23 and mlperf.eval.every == 5 and not mlperf.optim.no_decay_bn_bias
    nv = load_config("nvidia_ssd300_resnet50")
    assert (nv.optim.lr, nv.schedule.warmup_steps, nv.schedule.milestones, nv.train.epochs) == (
        2.6e-3, 300, [43.0, 54.0], 65.0,
    )  # fmt: skip
    assert nv.optim.no_decay_bn_bias
    fpn = load_config("nvidia_ssd320_resnet50_fpn")
    assert fpn.schedule.name == "cosine" and fpn.train.max_steps == 12500
    assert fpn.optim.lr * 256 / fpn.optim.reference_batch == pytest.approx(0.16)
    assert fpn.optim.lr * fpn.schedule.warmup_start_factor == pytest.approx(0.0693312, rel=1e-4)
    assert fpn.train.freeze_bn and not fpn.model.frozen_backbone_bn and fpn.data.augment == "area_crop"
    assert not nv.model.frozen_backbone_bn and nv.data.augment == "ssd" == mlperf.data.augment


def test_base_inheritance(tmp_path: Path) -> None:
    path = tmp_path / "child.yaml"
    path.write_text("base: mlperf_ssd300_resnet34\ndata:\n  batch_size: 8\n")
    cfg = load_config(path, ["run.name=x"])
    assert cfg.data.batch_size == 8 and cfg.model.name == "ssd300_resnet34" and cfg.run.name == "x"


def test_config_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="optim"):
        config_from_dict({"optim": 3})


def test_an_earlier_key_name_is_read_as_the_present_one(tmp_path: Path) -> None:
    """data.max_samples (MLPerf's name, and this key's earlier one) sets data.crop_attempts: in a file, an override
    and a saved config dict; giving both names is an error, and --help-config names the earlier one."""
    from singleshot.engine.config import RENAMED_KEYS, help_config, upgrade_keys
    from singleshot.engine.data import train_transform

    assert RENAMED_KEYS["data.max_samples"] == "data.crop_attempts"
    path = tmp_path / "old.yaml"
    path.write_text("base: mlperf_ssd300_resnet34\ndata:\n  max_samples: 50\n")
    cfg = load_config(path)
    assert cfg.data.crop_attempts == 50 and "max_samples" not in cfg.to_dict()["data"]
    assert train_transform(cfg.data, 300).crop_attempts == 50
    assert load_config(None, ["data.max_samples=50"]).data.crop_attempts == 50
    assert config_from_dict({"data": {"max_samples": 50}}).data.crop_attempts == 50
    saved = {"data": {"max_samples": 50, "batch_size": 4}, "optim": {"lr": 0.1}}
    assert upgrade_keys(saved) == {"data": {"crop_attempts": 50, "batch_size": 4}, "optim": {"lr": 0.1}}
    assert saved["data"]["max_samples"] == 50  # the caller's dict is left as it was
    with pytest.raises(ConfigError, match=r"'data\.max_samples' is the earlier name of 'data\.crop_attempts'"):
        config_from_dict({"data": {"max_samples": 50, "crop_attempts": 1}})
    with pytest.raises(ConfigError, match=r"config key 'data\.crop_attempts': expected int"):
        load_config(None, ["data.max_samples=many"])
    row = next(line for line in help_config().splitlines() if line.startswith("data.crop_attempts "))
    assert "(also read as data.max_samples)" in row
