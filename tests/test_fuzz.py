"""Seeded fuzzing of the COCO, VOC and YOLO readers (a few hundred mutants; benchmarks/fuzz_annotations.py runs
thousands): every mutant loads with sane targets or fails with a one-line DataError, strictly, leniently and in
``data check``; no other exception."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fuzz_annotations import fuzz


def test_fuzzed_annotations_raise_nothing_unhandled(tmp_path: Path) -> None:
    result = fuzz(count=100, seed=12, root=tmp_path)
    counts = result["counts"]
    assert result["mutants"] == 300
    assert not result["failures"], "\n".join(result["failures"][:5])
    for fmt in ("coco", "voc", "yolo"):
        # the mutants exercise both outcomes of a strict load, and data check always returns a report
        assert counts[f"{fmt}.strict.error"] > 0 and counts[f"{fmt}.strict.ok"] > 0, counts
        assert counts[f"{fmt}.check.ok"] == 100, counts
