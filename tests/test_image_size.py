"""``model.image_size`` / ``imgsz``: ssd_tiny at any multiple of its stride, default boxes rebuilt, the size carried
by the checkpoint to eval, predict, export and load_model; recipe models say when they leave their published size."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from train_helpers import tiny_dataset, tiny_overrides

import singleshot
from singleshot.box.anchors import default_boxes
from singleshot.cli import main


@pytest.fixture(scope="module")
def run_320(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``singleshot train imgsz=320 ...`` on the tiny set: (run folder, what it printed)."""
    run = tmp_path_factory.mktemp("imgsz") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", *tiny_overrides(run, **{"train.max_steps": 2}), "imgsz=320"])
    assert code == 0, out.getvalue()
    return run, out.getvalue()


def test_train_at_320_says_so_and_rebuilds_the_default_boxes(run_320: tuple[Path, str]) -> None:
    # singleshot train imgsz=320 ...
    run, printed = run_320
    assert ("model.image_size=320: ssd_tiny at 320 px instead of its own 160 px; default boxes rebuilt for feature "
            "maps [40, 20, 10, 5, 3] (9536 boxes)") in printed
    assert "training ssd_tiny at 320 px on 16 images" in printed
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["model"]["image_size"] == 320 and ckpt["config"]["model"]["image_size"] == 320


def test_a_checkpoint_at_320_opens_at_320_everywhere(run_320: tuple[Path, str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_320
    ck = run / "checkpoints" / "last.pt"
    loaded = singleshot.load_model(ck)
    assert loaded.spec.image_size == 320 and len(default_boxes(loaded.spec.anchors)) == 9536
    # singleshot eval --checkpoint CK --data TINY_SET: evaluates (the 320 px model on its 9536 boxes)
    assert main(["eval", "--checkpoint", str(ck), "--data", str(tiny_dataset()), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "evaluating last.pt (ssd_tiny, singleshot)" in printed and "Average Precision" in printed
    # singleshot predict --checkpoint CK image.jpg --score-threshold 0.01: boxes in the original image's pixels
    image = tmp_path / "img.jpg"
    Image.new("RGB", (200, 100), (120, 90, 60)).save(image)
    out = str(tmp_path / "pred")
    argv = ["predict", "--checkpoint", str(ck), str(image), "--out", out, "--score-threshold", "0.01"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "pred" / "predictions.json").read_text())["images"][0]
    assert (record["width"], record["height"]) == (200, 100)
    boxes = torch.tensor([d["box"] for d in record["detections"]])
    assert len(boxes) > 0 and boxes[:, [0, 2]].max() <= 200 and boxes[:, [1, 3]].max() <= 100
    # singleshot export --checkpoint CK --out m.onnx: the graph's input is 320 px and opens at 320
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ck), "--format", "onnx", "--out", str(onnx_path)]) == 0
    graph = singleshot.load_model(onnx_path)
    assert graph.spec.image_size == 320 and len(default_boxes(graph.spec.anchors)) == 9536


@pytest.mark.parametrize(
    ("size", "nearest"),
    [("330", "nearest: 320, 352"), ("128", "nearest: 160"), ("100", "nearest: 160")],
)
def test_a_size_the_model_cannot_take_is_one_line(size: str, nearest: str, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    # singleshot train model.image_size=330
    assert main(["train", *tiny_overrides(tmp_path / "r"), f"model.image_size={size}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"singleshot train: config key 'model.image_size': ssd_tiny takes input sizes that are multiples "
                   f"of 32 from 160 ({nearest}); got {size}")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_print_config_and_the_default_size(capsys: pytest.CaptureFixture[str]) -> None:
    # singleshot train --print-config imgsz=320
    assert main(["train", "--print-config", "imgsz=320"]) == 0
    assert "  image_size: 320\n" in capsys.readouterr().out
    # the default stays the model's own size, with the published default boxes untouched
    assert singleshot.get_spec("ssd_tiny").image_size == 160
    assert singleshot.get_spec("ssd_tiny", 160) is singleshot.get_spec("ssd_tiny")


def test_a_recipe_model_at_another_size_is_built_for_it() -> None:
    # model.image_size=384 with ssd300_resnet34: the SSD300 layers at 384 px, anchors for the maps they make
    spec = singleshot.get_spec("ssd300_resnet34", 384)
    assert spec.anchors.feature_sizes == (48, 24, 12, 6, 4, 2)
    model = singleshot.build_model("ssd300_resnet34", num_classes=3, image_size=384)
    boxes, logits = model(torch.zeros(1, 3, 384, 384))
    assert boxes.shape[1] == logits.shape[1] == len(default_boxes(spec.anchors))
    # relative box sides are kept: the first level's box is 21/300 of the image at 300 px and at 384 px
    assert spec.anchors.scales[0] / 384 == pytest.approx(21 / 300)
    with pytest.raises(ValueError, match=r"ssd300_resnet34 takes input sizes that are multiples of 32 from 288 "
                                         r"\(nearest: 288, 320\) \(or its own 300\); got 310"):
        singleshot.get_spec("ssd300_resnet34", 310)


def test_the_recipe_preset_says_it_leaves_its_published_size(capsys: pytest.CaptureFixture[str]) -> None:
    from singleshot.engine.build import input_spec
    from singleshot.engine.config import load_config

    input_spec(load_config("nvidia_ssd320_resnet50_fpn", ["imgsz=384"]))
    assert ("model.image_size=384: ssd320_resnet50_fpn at 384 px instead of its published 320 px; default boxes "
            "rebuilt for feature maps [48, 24, 12, 6, 3]") in capsys.readouterr().out
    input_spec(load_config("nvidia_ssd320_resnet50_fpn"))
    assert capsys.readouterr().out == ""  # its own size: nothing to say
