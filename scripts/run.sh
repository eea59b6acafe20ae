#!/usr/bin/env bash
# Run the service locally: Azurite plus the function app in devhost, with the
# API on http://127.0.0.1:${HOST_PORT:-7071}/api. Ctrl-C stops everything.
# Extra arguments go to devhost (python -m devhost --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m devtools.run_local "$@"
