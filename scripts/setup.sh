#!/usr/bin/env bash
# Creates .venv and installs singleshot with its dev tools. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision first, pinned to the releases this project is tested with (users may use any torch >= 2.4).
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
# dali: the NVIDIA DALI input pipeline (tests run its CPU backend); ~200 MB
.venv/bin/python -m pip install --quiet -e ".[dev,dali]"
.venv/bin/python -c "import singleshot, torch; print('singleshot', singleshot.__version__, 'torch', torch.__version__)"
