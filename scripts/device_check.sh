#!/usr/bin/env bash
# The prepared check for a lent GPU machine that has its own python3 with torch but no network and no .venv: installs
# the wheels carried in .wheels/ (faster-coco-eval; see scripts/fetch_wheels.sh) into a scratch folder, then runs
# scripts/gpu_check.sh with that python3 and this checkout on PYTHONPATH, writing gpu_check.{json,txt} into $OUT.
#
#   bash scripts/fetch_references.sh && bash scripts/fetch_wheels.sh     # here, once (both folders are git-ignored)
#   device run: bash scripts/device_check.sh       with carry [".references", ".wheels"]
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS=${SINGLESHOT_DEPS:-/tmp/singleshot_deps}
PY=${DEVICE_PYTHON:-python3}  # the machine's own Python
if compgen -G ".wheels/*.whl" >/dev/null; then
  "$PY" -m pip install --quiet --no-index --no-deps --target "$DEPS" .wheels/*.whl \
    || echo "device_check: the carried wheels do not install for $("$PY" -V); going on without them" >&2
fi
export PYTHONPATH="$PWD:$DEPS${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
PYTHON=$PY bash scripts/gpu_check.sh "$@"
