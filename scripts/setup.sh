#!/usr/bin/env bash
# Create .venv with fmstore and its test dependencies (idempotent, safe to re-run).
# torch is pinned to the CPU build available here; the package itself only asks for a range,
# so GPU users get their own build with a plain `pip install -e .`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
