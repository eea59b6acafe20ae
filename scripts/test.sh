#!/usr/bin/env bash
# The whole test suite: install what is missing, then format check, lint,
# type check and pytest. The tests start their own Azurite (and any local
# stand-ins) on free loopback ports, so nothing needs to be running before.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh

echo "== ruff format --check"
.venv/bin/ruff format --check .
echo "== ruff check"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy .
echo "== pytest"
.venv/bin/pytest "$@"
