#!/usr/bin/env bash
# Downloads the wheels a lent GPU machine lacks into .wheels/ (git-ignored; carried to it by scripts/device_check.sh):
# faster-coco-eval for its Python (default 3.12, x86_64 manylinux). Needs the package registry.
#
#   bash scripts/fetch_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .wheels faster-coco-eval
ls -l .wheels
