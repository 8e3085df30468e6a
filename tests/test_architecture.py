"""The package's shape, read from its source (AST): every path that produces detections goes through the one
inference core, and imports flow one way (command line and engine on top; evaluation, inference and interop in the
middle; data, box math and models at the bottom)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "singleshot"

# The calls that build a post-processor or run its fixed-shape form: only box/ (where they live) and the core.
POSTPROCESSING = {"build_postprocessor", "PostProcessor", "fixed_shape_detections"}
CORE = "inference/core.py"

# Modules that turn images (or model outputs) into detections: each must do it through the core.
DETECTION_PATHS = [
    "inference/detector.py",  # Detector, and so `singleshot predict`
    "evaluation/loop.py",  # training's and `singleshot eval`'s evaluation
    "engine/report.py",  # the run report's prediction pictures
    "inference/bench.py",  # `singleshot bench infer`
    "inference/verify.py",  # export's checks
    "inference/export.py",  # the NMS graph decodes with the core's post-processor
]

# Which top-level parts of the package each part may import (lazily inside functions too).
ALLOWED = {
    "box": set(),
    "models": {"box"},
    "data": set(),
    "checkpoint": {"models"},
    "safetensors_io": {"checkpoint", "models"},
    "interop": {"box", "models", "checkpoint", "safetensors_io"},
    "evaluation": {"box", "models", "data", "inference", "checkpoint", "interop", "safetensors_io"},
    "inference": {"box", "models", "data", "checkpoint", "interop", "safetensors_io"},
    "engine": {"box", "models", "data", "checkpoint", "interop", "safetensors_io", "evaluation", "inference"},
    "cli": {"box", "models", "data", "checkpoint", "interop", "safetensors_io", "evaluation", "inference", "engine"},
    "__main__": {"cli"},
}
SHARED = {"accelerator", "precision", "_lazy", "_extras", "__init__"}  # used anywhere; they import only each other


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "configs" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _part(name: str) -> str:
    """``singleshot.engine.build`` / ``engine/build.py`` -> ``engine``."""
    head = name.replace("/", ".").split(".")
    head = head[1:] if head[0] == "singleshot" else head
    return head[0].removesuffix(".py") if head and head[0] else "__init__"


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "singleshot" or n.startswith("singleshot.")}


def _called(tree: ast.AST) -> set[str]:
    """Names of every function called: ``f(...)`` -> f, ``a.b.f(...)`` -> f."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            out.add(fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else "")
    return out


def test_only_the_core_builds_or_runs_a_post_processor() -> None:
    offenders = {}
    for path in _modules():
        rel = _rel(path)
        if rel.startswith("box/") or rel == CORE:
            continue
        called = _called(ast.parse(path.read_text())) & POSTPROCESSING
        if called:
            offenders[rel] = sorted(called)
    assert offenders == {}, f"post-processing built or run outside the inference core: {offenders}"


@pytest.mark.parametrize("rel", DETECTION_PATHS)
def test_every_detection_path_goes_through_the_core(rel: str) -> None:
    tree = ast.parse((PACKAGE / rel).read_text())
    assert "singleshot.inference.core" in _imports(tree), f"{rel} does not use singleshot.inference.core"
    uses = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }
    assert uses & {"InferenceCore", "core", "detect", "detect_batch", "postprocessor"}, rel


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The walkers see what they look for (a call of build_postprocessor, an upward import inside a function)."""
    tree = ast.parse("def f(spec):\n    from singleshot.engine import build\n    return build_postprocessor(spec)\n")
    assert "build_postprocessor" in _called(tree) and _imports(tree) == {"singleshot.engine"}


def test_imports_flow_one_way() -> None:
    wrong = []
    for path in _modules():
        rel = _rel(path)
        part = _part(rel)
        allowed = set() if part in SHARED else ALLOWED[part]
        for name in _imports(ast.parse(path.read_text())):
            target = _part(name)
            if target in SHARED or target == part or target in allowed:
                continue
            wrong.append(f"{rel} imports {name}")
    assert wrong == [], "\n".join(wrong)


def test_an_image_through_predict_enters_at_most_8_files_none_twice(tmp_path: Path) -> None:
    """``scripts/trace_predict.py``'s count: the files the command and the inference package enter for one image."""
    import importlib.util

    import numpy as np
    import torch
    from PIL import Image

    import singleshot
    from singleshot.checkpoint import atomic_save, make_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    atomic_save(make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=3), ["a", "b"]), checkpoint)
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)).save(image)
    spec = importlib.util.spec_from_file_location("trace_predict", PACKAGE.parent / "scripts" / "trace_predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entries = module.trace(["--checkpoint", str(checkpoint), str(image), "--out", str(tmp_path / "out"),
                            "--device", "cpu"])  # fmt: skip
    entered = [callee for caller, callee in entries if caller.startswith(("cli/", "inference/"))]
    assert entered[0] == "cli/predict.py" and "inference/core.py" in entered, entered
    assert len(entered) <= 8 and len(set(entered)) == len(entered), entered


def test_one_build_model() -> None:
    """``singleshot.build_model`` is the one function of that name; the registry's is ``build_architecture``."""
    defined = [
        _rel(path)
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "build_model"
    ]
    assert defined == ["interop/weights.py"], defined
