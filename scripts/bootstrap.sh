#!/usr/bin/env bash
# Install what the project needs on a fresh machine, idempotently:
# a Python virtual environment with the pinned requirements, and Azurite
# from package-lock.json. Running it again reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the requirement files changed since the last install.
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

lock_stamp=node_modules/.package-lock.sha256
want_lock=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/azurite ] || \
   [ "$(cat "$lock_stamp" 2>/dev/null)" != "$want_lock" ]; then
  echo "bootstrap: installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want_lock" > "$lock_stamp"
fi
