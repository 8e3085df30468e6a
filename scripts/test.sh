#!/usr/bin/env bash
# The test suite: lint, then the fast tests (the slow ones run with `.venv/bin/python -m pytest -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/singleshot ] || bash scripts/setup.sh
PY=.venv/bin/python
"$PY" -m ruff check singleshot tests benchmarks
"$PY" -m pytest -m "not slow" -q "$@"
