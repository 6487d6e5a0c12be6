#!/usr/bin/env bash
# The GPU path in one short run (sized for under 8 minutes on one GPU; figures printed as they come).
#   bash bench/gpu_check.sh             # needs a CUDA device and the project's venv (make install)
#   bash bench/gpu_check.sh --dry-run   # the same steps on CPU with tiny sizes
# What it measures: bench/gpu_check.py's docstring.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -u bench/gpu_check.py "$@"
