"""Fine-tuning from a trained detector: model.weights= / build_model(weights=), class rows carried over by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from interop_reference import MLPerfSSD300, NvidiaSSD300
from train_helpers import tiny_overrides

import singleshot
from singleshot.checkpoint import load_checkpoint, make_checkpoint
from singleshot.data.synth import SynthStyle, generate
from singleshot.engine.config import load_config
from singleshot.engine.trainer import Trainer
from singleshot.interop import load_weights
from singleshot.interop.weights import _class_head_anchors


def _rows(t: torch.Tensor, anchors: int) -> torch.Tensor:
    """``[outputs * anchors, ...]`` -> ``[outputs, anchors, ...]`` (output-major, the head's channel layout)."""
    return t.view(t.shape[0] // anchors, anchors, *t.shape[1:])


def _checkpoint(tmp_path: Path, name: str, classes: list[str]) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    model = singleshot.build_model(name, num_classes=len(classes) + 1)
    path = tmp_path / f"{name}.pt"
    torch.save(make_checkpoint(model, classes), path)
    return path, model.state_dict()


@pytest.mark.parametrize("name", ["ssd_tiny", "ssd320_resnet50_fpn"])
def test_class_rows_follow_names(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Softmax (background row first) and sigmoid (foreground only) heads: each class row lands under its name."""
    src_classes = ["a", "b", "c"]
    path, src = _checkpoint(tmp_path, name, src_classes)
    new_classes = ["c", "x", "a", "y"]
    model = singleshot.build_model(name, num_classes=5, weights=path, classes=new_classes)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"model.weights {path}") and "carried over 2 ['c', 'a'], new 2 ['x', 'y']" in line
    fresh_state = model.state_dict()
    head = _class_head_anchors(name, 5)
    assert head, "the class head tensors are found"
    bg = int(model.spec.classifier.has_background)  # rows: softmax [bg, c1..cK], sigmoid [c1..cK]
    for key, anchors in head.items():
        old, new = _rows(src[key], anchors), _rows(fresh_state[key], anchors)
        assert new.shape[0] == 4 + bg
        if bg:
            assert torch.equal(new[0], old[0])  # background
        assert torch.equal(new[bg + 0], old[bg + 2])  # c
        assert torch.equal(new[bg + 2], old[bg + 0])  # a
        for r in (bg + 1, bg + 3):  # x, y: fresh weights, not any source row (biases may share a constant init)
            assert new.dim() == 2 or not any(torch.equal(new[r], old[s]) for s in range(old.shape[0]))
    others = [k for k in src if k not in head]
    assert all(torch.equal(src[k], fresh_state[k]) for k in others)


def test_same_classes_load_everything_and_other_models_load_what_fits(tmp_path: Path) -> None:
    path, src = _checkpoint(tmp_path, "ssd_tiny", ["a", "b"])
    model = singleshot.build_model("ssd_tiny", num_classes=3)
    report = load_weights(model, path, ["a", "b"], log=None)
    assert len(report.loaded) == len(src) and not report.reinitialized and not report.class_head
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in src.items())
    # Into another architecture: only name-and-shape matches load; the rest is reported, nothing raises.
    other = singleshot.build_model("ssd300_resnet34", num_classes=3)
    report = load_weights(other, path, ["a", "b"], log=None)
    assert report.loaded and report.reinitialized and report.skipped
    assert "backbone.conv1.weight" in report.loaded  # the ResNet stem has the same shape in both


def test_bad_weights_are_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        singleshot.build_model("ssd_tiny", num_classes=3, weights=tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    torch.save({"w": torch.zeros(3)}, junk)
    with pytest.raises(ValueError, match=r"junk\.pt"):
        singleshot.build_model("ssd_tiny", num_classes=3, weights=junk)
    cfg = load_config(None, tiny_overrides(tmp_path / "run", **{"model.weights": str(junk)}))
    from singleshot.engine.config import ConfigError

    with pytest.raises(ConfigError, match=r"^model\.weights: .*junk\.pt"):
        Trainer(cfg).run()


@pytest.mark.parametrize("reference", [NvidiaSSD300, MLPerfSSD300], ids=["nvidia", "mlperf"])
def test_reference_checkpoints_start_a_five_class_model(
    tmp_path: Path, reference: type, capsys: pytest.CaptureFixture[str]
) -> None:
    """The NVIDIA / MLPerf layouts (COCO, 81 outputs) into a 5-class model: COCO names carry over, others are new."""
    torch.manual_seed(0)
    ref = reference(label_num=81)
    path = tmp_path / "ref.pt"
    torch.save({"model": ref.state_dict(), "epoch": 3}, path)
    name = "ssd300_resnet50" if reference is NvidiaSSD300 else "ssd300_resnet34"
    classes = ["person", "dog", "kite", "gizmo", "widget"]
    model = singleshot.build_model(name, num_classes=6, weights=path, classes=classes)
    line = capsys.readouterr().out.strip()
    kind = "nvidia" if reference is NvidiaSSD300 else "mlperf"
    assert f"({kind} {name}, 80 classes)" in line
    assert "carried over 3 ['person', 'dog', 'kite'], new 2 ['gizmo', 'widget']" in line
    assert "re-initialized 12" in line  # the 6 conf convs' weights and biases
    state = model.state_dict()
    ref_conf = ref.state_dict()["conf.0.weight"]  # [81 * 4, 512, 3, 3] (4 default boxes at the first level)
    new_conf = state["head.conf.0.weight"]
    old, new = _rows(ref_conf, 4), _rows(new_conf, 4)
    from singleshot.interop import COCO_CLASSES

    for r, cls in enumerate(classes[:3], start=1):
        assert torch.equal(new[r], old[COCO_CLASSES.index(cls) + 1])
    assert torch.equal(new[0], old[0])
    assert torch.equal(state["head.loc.0.weight"], ref.state_dict()["loc.0.weight"])  # box head: same shape


def _synth(root: Path, classes: tuple[str, ...], seed: int) -> Path:
    style = SynthStyle(classes=classes, image_size=(128, 96), max_objects=3)
    return generate(root, num_train=64, num_val=24, seed=seed, style=style)


def _train(run: Path, data: Path, steps: int, lr: float, **extra: object) -> tuple[float, Path]:
    values = {
        "data.train": str(data), "data.val": str(data), "data.batch_size": 16, "data.val_batch_size": 24,
        "data.augment": "none", "optim.lr": lr, "schedule.warmup_steps": 5, "train.max_steps": steps,
        "train.deterministic": "false", "eval.every": 0, **extra,
    }  # fmt: skip
    cfg = load_config(None, tiny_overrides(run, **values))
    result = Trainer(cfg).run()
    assert result.status == "finished" and result.final_stats is not None
    return result.final_stats[0], run / "checkpoints" / "last.pt"


@pytest.mark.slow
def test_finetuning_beats_scratch_on_an_overlapping_class_set(tmp_path: Path) -> None:
    """Pretrain on {circle, triangle, square, hexagon}; fine-tune on {square, circle, star, cross} vs from scratch.

    Same budget for both second runs (steps, lr schedule, data, seed): the fine-tuned run starts from trained
    features and trained rows for square and circle, so its mAP must be higher.
    """
    set_a = _synth(tmp_path / "a", ("circle", "triangle", "square", "hexagon"), seed=1)
    set_b = _synth(tmp_path / "b", ("square", "circle", "star", "cross"), seed=2)
    _, pretrained = _train(tmp_path / "pre", set_a, steps=120, lr=0.05)
    src = load_checkpoint(pretrained)

    # The rows carried over, on the tensors: square and circle rows of the fine-tuned model's start.
    start = singleshot.build_model("ssd_tiny", num_classes=5, weights=pretrained,
                                   classes=["square", "circle", "star", "cross"])
    for key, anchors in _class_head_anchors("ssd_tiny", 5).items():
        old, new = _rows(src["state_dict"][key], anchors), _rows(start.state_dict()[key], anchors)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[3]) and torch.equal(new[2], old[1])

    budget = {"steps": 40, "lr": 0.02}
    ft_map, ft_ckpt = _train(tmp_path / "ft", set_b, **budget, **{"model.weights": str(pretrained)})
    scratch_map, _ = _train(tmp_path / "scratch", set_b, **budget)
    assert load_checkpoint(ft_ckpt)["classes"] == ["square", "circle", "star", "cross"]
    assert load_checkpoint(ft_ckpt)["epoch"] <= 40 * 16 // 64  # a fresh schedule: epochs counted from 0
    print(json.dumps({"finetuned_mAP": ft_map, "scratch_mAP": scratch_map}))
    assert ft_map > scratch_map + 0.02, (ft_map, scratch_map)
