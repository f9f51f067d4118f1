#!/usr/bin/env bash
# The tests: sets up .venv if needed. The fast tier by default (under about 4 minutes on 2 cores);
# `--all` adds the slow tier (wheel, crash matrix, distributed, browser), as CI runs it. Other
# arguments go to pytest. The Postgres tests start their own throwaway server (initdb + pg_ctl,
# Postgres 13+) and need those binaries on PATH or under /usr/lib/postgresql/*/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tier=(-m "not slow")
if [ "${1:-}" = "--all" ]; then
  tier=()
  shift
fi
exec .venv/bin/python -m pytest -q "${tier[@]}" "$@"
