#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): gpu-marked tests, ssd300_resnet34 training img/s and MFU (fp16 and
# bf16 AMP, channels-last, eager and compiled), steps/s with and without a per-step host sync, the NVIDIA v1.1 and
# MLPerf reference training steps vs ours on the same ready batch, built-in loader vs DALI img/s in steady state,
# training fed by the loader vs on a ready batch, inference img/s (eager split into forward / post-processing / end to
# end, compiled, ONNX Runtime CUDA, TensorRT when present). Under 8 minutes on one GPU.
#
#   bash scripts/fetch_references.sh      # once: the reference code into .references/ (git-ignored; carry it along)
#   bash scripts/gpu_check.sh             # on a GPU machine: writes gpu_check.json and gpu_check.txt (in $OUT if set)
#   bash scripts/gpu_check.sh --dry-run   # any machine: the same code paths at tiny sizes (ssd_tiny, batch 2)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then bash scripts/setup.sh; fi
OUTDIR=${OUT:-.}
mkdir -p "$OUTDIR"
# 450 s of sections (the script skips what no longer fits) inside a hard 470 s limit; a loaded CPU machine doing the
# dry run may need more: GPU_CHECK_BUDGET=1500.
BUDGET=${GPU_CHECK_BUDGET:-450}
timeout $((BUDGET + 20)) "$PY" benchmarks/gpu_check.py --budget "$BUDGET" --out "$OUTDIR/gpu_check" "$@"
