"""The prepared GPU check's sections (``benchmarks/gpu_check.py``) in their dry-run sizes on the CPU: every row this
machine can give has a number and no row carries an error. Each section runs on its own here, at the smallest sizes
that still take its code path (the full dry run takes minutes; ``bash scripts/gpu_check.sh --dry-run`` runs it all).
The reference rows run only where ``scripts/fetch_references.sh`` has copied the reference code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu_check
import reference_code


def _dry(**changes: object) -> gpu_check.Settings:
    s = gpu_check.settings(dry=True)
    return gpu_check.Settings(**{**s.__dict__, **changes})


def test_dry_infer_section_splits_eager_and_runs_onnxruntime(tmp_path: Path) -> None:
    s = _dry(seconds=0.05, infer_batches=(1,))
    rows = gpu_check.section_infer(s, gpu_check.Budget(300), tmp_path, compiled=False)
    by_backend = {r["backend"]: r for r in rows}
    for part in ("eager:forward", "eager:post", "eager:end2end", "onnxruntime"):
        assert by_backend[part]["images_per_s"] > 0 and by_backend[part]["median_ms"] > 0, rows
    # post-processing alone and end to end find the same detections (the stored outputs are the forward's)
    assert by_backend["eager:post"]["extra"] == by_backend["eager:end2end"]["extra"]
    assert "dets_per_img" in by_backend["eager:post"]["extra"]
    assert "error" not in by_backend["tensorrt"] or "no TensorRT provider" in by_backend["tensorrt"]["error"]
    assert "eager:end2end" in gpu_check.table({"meta": _meta(), "infer": rows})


def _meta() -> dict[str, object]:
    return {"dry_run": True, "device": "cpu", "torch": "-", "cpus": 2, "seconds": 0.0}


def test_dry_loader_and_fed_sections_measure_steady_state(tmp_path: Path) -> None:
    import os

    timed = 5
    s = _dry(seconds=0.05, timed_batches=timed)
    budget = gpu_check.Budget(300)
    loader = gpu_check.section_loader(s, budget, tmp_path)
    cores = os.cpu_count() or 1
    assert loader[0]["pipeline"] == "builtin" and loader[0]["img_per_s"] > 0, loader
    assert loader[0]["prefetch_depth"] == 2 * cores and loader[0]["timed_batches"] == timed
    assert all("error" not in r for r in loader), loader
    assert loader[1]["pipeline"] == "device" and loader[1]["img_per_s"] > 0, loader
    if len(loader) > 2 and "skipped" not in loader[2]:  # DALI installed: its CPU backend
        assert loader[2]["img_per_s"] > 0 and loader[2]["prefetch_depth"] == 2, loader
    fed_rows = gpu_check.section_fed(s, budget, tmp_path)
    assert [r["pipeline"] for r in fed_rows] == ["builtin", "device"], fed_rows
    for fed in fed_rows:
        assert fed["timed_steps"] == timed and fed["prefetch_depth"] == 2 * cores, fed
        assert fed["ready_img_per_s"] > 0 and fed["fed_img_per_s"] > 0
        assert fed["fraction"] == pytest.approx(fed["fed_img_per_s"] / fed["ready_img_per_s"])
    text = gpu_check.table({"meta": _meta(), "loader": loader, "fed": fed_rows})
    assert "steady state" in text and "train fed by the builtin loader" in text
    assert "train fed by the device loader" in text


def test_repeat_records_cycles_the_images(tmp_path: Path) -> None:
    ds = gpu_check._jpegs(_dry(loader_images=3), tmp_path)
    more = gpu_check.repeat_records(ds, 7)
    assert len(more) == 7 and more.image_path(4) == ds.image_path(1)
    assert (more.annotation(5)[0] == ds.annotation(2)[0]).all() and more.image_id(6) == 6


def test_reference_rows_say_how_to_fetch_the_code_when_it_is_missing(tmp_path: Path) -> None:
    rows = gpu_check.section_reference(_dry(references=tmp_path / "none"), gpu_check.Budget(300))
    assert len(rows) == 2 and all(r["skipped"].startswith("skipped: run scripts/fetch_references.sh") for r in rows)
    assert "fetch_references" in gpu_check.table({"meta": _meta(), "reference": rows})


def test_dry_reference_rows_run_the_reference_code() -> None:
    s = _dry(seconds=0.0)
    reason = reference_code.missing(s.references)
    if reason is not None:
        pytest.skip(f"no reference code at {s.references}: {reason}")
    bare = {"utils", "model", "train", "base_model", "ssd300", "mlperf_logger"}
    before = bare & set(sys.modules)
    rows = gpu_check.section_reference(s, gpu_check.Budget(600))
    assert bare & set(sys.modules) == before  # their modules were imported under bare names only while loading
    assert [r["ours"] for r in rows] == ["ssd300_resnet50", "ssd300_resnet34"], rows
    for r in rows:
        assert "error" not in r and "skipped" not in r, r
        assert r["reference_img_per_s"] > 0 and r["ours_img_per_s"] > 0 and r["precision"] == "fp32"
        assert r["ratio"] == pytest.approx(r["ours_img_per_s"] / r["reference_img_per_s"])
    assert "ours/ref" in gpu_check.table({"meta": _meta(), "reference": rows})


def test_reference_code_imports_without_mlperf_logging_and_downloads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on the GPU machine: no mlperf-logging package (stand-ins take its place while the MLPerf files import), and
    the ResNets the references ask ImageNet weights for are built without them (a download would fail there)."""
    import torchvision.models._api as weights_api
    import torchvision.models.resnet as resnet

    root = gpu_check.settings(dry=True).references
    reason = reference_code.missing(root)
    if reason is not None:
        pytest.skip(f"no reference code at {root}: {reason}")
    monkeypatch.setitem(sys.modules, "mlperf_logging", None)  # makes `import mlperf_logging...` fail
    builders = resnet.resnet34, resnet.resnet50
    loaded: list[object] = []
    monkeypatch.setattr(weights_api.WeightsEnum, "get_state_dict", lambda *a, **k: loaded.append(a) or {})
    nvidia, mlperf = reference_code.load(root)
    assert (resnet.resnet34, resnet.resnet50) == builders  # torchvision's builders are back as they were
    assert sys.modules["mlperf_logging"] is None and "mlperf_logger" not in sys.modules
    model = mlperf.ssd300.SSD300(81)  # asks resnet34(pretrained=True)
    assert model.label_num == 81 and nvidia.model.SSD300().label_num == 81 and not loaded
    assert mlperf.train._BASE_LR > 0 and len(mlperf.train.dboxes300_coco()(order="xywh")) == 8732
