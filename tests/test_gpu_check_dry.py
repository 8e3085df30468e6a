"""The prepared GPU check's eager inference section (``benchmarks/gpu_check.py``) in its dry-run sizes on the CPU:
every backend this machine has gives a row with a number, no row carries an error (the full dry run takes minutes;
``bash scripts/gpu_check.sh --dry-run`` runs it all)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_dry_infer_section_runs_eager_and_onnxruntime(tmp_path: Path) -> None:
    import gpu_check

    s = gpu_check.settings(dry=True)
    s = gpu_check.Settings(**{**s.__dict__, "seconds": 0.05, "infer_batches": (1,)})
    rows = gpu_check.section_infer(s, gpu_check.Budget(300), tmp_path, compiled=False)
    by_backend = {r["backend"]: r for r in rows}
    assert by_backend["eager"]["images_per_s"] > 0 and by_backend["onnxruntime"]["images_per_s"] > 0, rows
    assert "error" not in by_backend["tensorrt"] or "no TensorRT provider" in by_backend["tensorrt"]["error"]
