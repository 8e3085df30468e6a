"""``singleshot export`` as a user coming from Ultralytics runs it: the file name says the format, --calibration takes
any dataset, no --out writes beside the checkpoint, a read-only folder is one line."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from data_fixtures import make_yolo
from trained_model import trained_checkpoint

from singleshot.cli import main

pytest.importorskip("onnxruntime")


def test_the_suffix_says_the_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = str(trained_checkpoint())
    # singleshot export --checkpoint CK --out auto.torchscript    (no --format)
    out = tmp_path / "auto.torchscript"
    assert main(["export", "--checkpoint", ck, "--out", str(out), "--no-verify"]) == 0
    assert f"wrote {out} (torchscript," in capsys.readouterr().out
    graph = torch.jit.load(str(out))
    boxes, logits = graph(torch.zeros(1, 3, 160, 160))[:2]
    assert boxes.shape[-1] == 4 and logits.shape[1] == boxes.shape[1]
    # --format that disagrees with the suffix: one line, exit 2, nothing written
    assert main(["export", "--checkpoint", ck, "--out", str(tmp_path / "x.onnx"), "--format", "torchscript"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"singleshot export: error: --format torchscript but --out {tmp_path / 'x.onnx'} names the onnx format; give "
        "one of them, or make them agree")
    assert not (tmp_path / "x.onnx").exists()
    # a plain .pt is ambiguous
    assert main(["export", "--checkpoint", ck, "--out", str(tmp_path / "m.pt")]) == 2
    assert "could be a checkpoint or TorchScript" in capsys.readouterr().err
    # no suffix: the format's suffix is added
    assert main(["export", "--checkpoint", ck, "--out", str(tmp_path / "plain"), "--format", "pt2", "--no-verify"]) == 0
    assert (tmp_path / "plain.pt2").is_file()


def test_without_out_the_file_goes_beside_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = tmp_path / "best.pt"
    shutil.copy(trained_checkpoint(), ck)
    assert main(["export", "--checkpoint", str(ck), "--no-verify"]) == 0
    assert f"wrote {tmp_path / 'best.onnx'} (onnx," in capsys.readouterr().out


def test_calibration_takes_a_data_yaml_and_a_coco_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = str(trained_checkpoint())
    yolo = make_yolo(tmp_path / "yolo_ds")
    # singleshot export --checkpoint CK --int8 --calibration yolo_ds/data.yaml --out q.onnx
    args = ["export", "--checkpoint", ck, "--int8", "--calibration-images", "4", "--no-verify"]
    assert main([*args, "--calibration", str(yolo / "data.yaml"), "--out", str(tmp_path / "q.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"INT8 calibration: 2 images of the train split of {yolo / 'data.yaml'}" in out
    assert f"wrote {tmp_path / 'q.onnx'} (onnx," in out and "INT8)" in out
    # the built-in set by name, its train split
    assert main([*args, "--calibration", "synth", "--out", str(tmp_path / "s.onnx")]) == 0
    assert "INT8 calibration: 4 images of the train split of synth" in capsys.readouterr().out
    # a missing path, and --int8 to another format: one line each
    assert main([*args, "--calibration", str(tmp_path / "nope"), "--out", str(tmp_path / "n.onnx")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"singleshot export: error: --calibration {tmp_path / 'nope'}: no such file or folder")
    assert main([*args, "--calibration", "synth", "--out", str(tmp_path / "n.torchscript")]) == 2
    assert "--int8 writes ONNX" in capsys.readouterr().err


def test_a_read_only_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import singleshot.inference.formats as formats

    target = tmp_path / "ro" / "m.onnx"

    def read_only(*args: object, **kwargs: object) -> None:  # what writing into a read-only mount raises
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

    monkeypatch.setattr(formats, "export", read_only)
    assert main(["export", "--checkpoint", str(trained_checkpoint()), "--out", str(target)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"singleshot export: error: read-only file system: cannot write {target}; choose a folder you can write "
        "(run.dir=PATH for train, --out for eval, predict and export)")
