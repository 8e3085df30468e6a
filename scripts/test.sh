#!/usr/bin/env bash
# The test suite: lint, then the fast tests (slow-marked tests run with `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -m ruff check singleshot tests benchmarks
"$PY" -m pytest -m "not slow" -q "$@"
