"""Importing singleshot (every module of it) changes no process-wide state: no environment variables, no warning
filters. Settings that matter for speed are applied where a command starts (see ``singleshot.cli.main``). The
measurement lives in ``scripts/code_health.py``, which also prints it."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _code_health():  # type: ignore[no-untyped-def]
    path = Path(__file__).resolve().parent.parent / "scripts" / "code_health.py"
    spec = importlib.util.spec_from_file_location("code_health", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_every_module_changes_no_environment_and_no_warning_filter() -> None:
    effects = _code_health().import_side_effects()
    assert effects["modules"] > 40  # the walk found the package's modules
    assert effects["env"] == [] and effects["filters"] == [], effects


def test_longest_functions_are_listed() -> None:
    rows = _code_health().longest_functions(Path(__file__).resolve().parent.parent / "singleshot" / "engine", 5)
    assert len(rows) == 5 and rows[0][0] >= rows[-1][0] > 0 and "singleshot/engine/" in rows[0][1]
