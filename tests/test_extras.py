"""Optional dependencies: the required install trains and evaluates; export and MLPerf logging name their extra
when it is missing. Missing packages are simulated with ``sys.modules[name] = None`` (what an uninstalled package
looks like to ``import``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from train_helpers import tiny_overrides

from singleshot._extras import MissingExtraError, require


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError, match=r"ONNX export needs .*'onnx'.*pip install 'singleshot\[export\]'"):
        require("onnx", "export", "ONNX export")
    assert require("json", "export", "x").dumps([1]) == "[1]"


def test_mlperf_event_names_are_the_packages() -> None:
    from mlperf_logging.mllog import constants as C

    from singleshot.engine import mlperf as M

    names = ("INIT_START", "INIT_STOP", "RUN_START", "RUN_STOP", "BLOCK_START", "BLOCK_STOP", "EPOCH_START",
             "EPOCH_STOP", "EVAL_START", "EVAL_STOP", "EVAL_ACCURACY", "SUCCESS", "ABORTED")  # fmt: skip
    assert {n: getattr(M, n) for n in names} == {n: getattr(C, n) for n in names}


def test_training_needs_mlperf_logging_only_when_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from singleshot.cli import main

    for name in [n for n in sys.modules if n.split(".")[0] == "mlperf_logging"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlperf_logging", None)
    assert main(["train", *tiny_overrides(tmp_path / "a", **{"train.max_steps": 1})]) == 0
    assert main(["train", *tiny_overrides(tmp_path / "b", **{"train.max_steps": 1, "run.mlperf_log": "true"})]) == 1
    err = capsys.readouterr().err
    assert "run.mlperf_log=true needs the optional package 'mlperf_logging'" in err
    assert "pip install 'singleshot[mlperf]'" in err and "Traceback" not in err


def test_export_without_the_extra_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from singleshot.cli import main

    assert main(["train", *tiny_overrides(tmp_path / "run", **{"train.max_steps": 1})]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    for fmt in ("onnx", "safetensors"):
        code = main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(tmp_path / f"m.{fmt}")])
        err = capsys.readouterr().err
        assert code == 1 and "pip install 'singleshot[export]'" in err and "Traceback" not in err, (fmt, err)
