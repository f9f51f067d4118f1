#!/usr/bin/env bash
# Run the whole test suite: sets up .venv if needed. The Postgres tests start their own
# throwaway server (initdb + pg_ctl, Postgres 13+) and need those binaries on PATH or under
# /usr/lib/postgresql/*/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
