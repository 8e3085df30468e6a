"""``singleshot predict``: JSON + pictures for a folder of mixed images; an unreadable file is named, the rest
proceed, and the run succeeds when something was predicted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import singleshot
from singleshot.checkpoint import atomic_save, make_checkpoint
from singleshot.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    atomic_save(make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=3), ["cat", "dog"]), path)
    return path


def test_predict_folder_with_edge_cases_and_a_broken_file(checkpoint, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(images / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8)).save(images / "gray.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)).save(images / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (2, 3, 3), dtype=np.uint8)).save(images / "tiny.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (images / "notes.txt").write_text("not an image, ignored when listing a folder")
    extra = tmp_path / "extra.jpg"
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(extra)  # large
    out = tmp_path / "out"

    code = main(["predict", "--checkpoint", str(checkpoint), str(images), str(extra), "--out", str(out),
                 "--score-threshold", "0.4", "--batch-size", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0  # the other inputs were predicted
    assert captured.err.count("skipped ") == 1 and f"skipped {images / 'broken.jpg'}: " in captured.err
    assert "5 images" in captured.out and "1 input(s) skipped" in captured.out
    data = json.loads((out / "predictions.json").read_text())
    files = [r["file"].rsplit("/", 1)[-1] for r in data["images"]]
    assert files == ["a.jpg", "alpha.png", "gray.jpg", "tiny.png", "extra.jpg"]
    sizes = {r["file"].rsplit("/", 1)[-1]: (r["height"], r["width"]) for r in data["images"]}
    assert sizes["tiny.png"] == (2, 3) and sizes["extra.jpg"] == (1200, 1600)
    for record in data["images"]:
        picture = out / record["picture"]
        assert picture.is_file()
        with Image.open(picture) as im:
            assert im.size == (record["width"], record["height"])
        for det in record["detections"]:
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= record["width"] and 0 <= y0 <= y1 <= record["height"]
            assert det["score"] > 0.4 and det["name"] in ("cat", "dog")
    assert (out / "alpha.png").is_file() and (out / "a.jpg").is_file()


def test_predict_with_nothing_detected_and_missing_path(checkpoint, tmp_path, capsys) -> None:
    img = tmp_path / "x.png"
    Image.new("RGB", (50, 50)).save(img)
    code = main(["predict", "--checkpoint", str(checkpoint), str(img), str(tmp_path / "missing.jpg"),
                 "--out", str(tmp_path / "o"), "--score-threshold", "1.0"])
    captured = capsys.readouterr()
    assert code == 0 and f"skipped {tmp_path / 'missing.jpg'}: no such file or folder" in captured.err
    data = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert data["images"][0]["detections"] == []
    assert (tmp_path / "o" / "x.png").is_file()


def test_predict_exits_1_when_nothing_was_predicted(checkpoint, tmp_path, capsys) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    bad = tmp_path / "broken.jpg"
    code = main(["predict", "--checkpoint", str(checkpoint), str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and f"skipped {tmp_path / 'broken.jpg'}: cannot decode image" in err
    assert "no image was predicted" in err
    assert json.loads((tmp_path / "o" / "predictions.json").read_text())["images"] == []
