#!/usr/bin/env bash
# TwinLedger setup: venv with pinned Python dependencies, then the Fabric binaries built from their Go module.
# Idempotent: a second run reuses .venv and the per-user binary cache and takes seconds.
#   TL_REQUIRE_FABRIC=1   fail (exit 1) when the Fabric peer/orderer binaries cannot be built
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
start=$(date +%s)
say() { printf '[setup] %s\n' "$*"; }

# --- Python -------------------------------------------------------------------------------
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "setup: Python >= 3.11 is required (found: $("$PY" --version 2>&1 || echo none)); install it and re-run scripts/setup.sh" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
req_hash=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.tl-requirements 2>/dev/null)" != "$req_hash" ]; then
  say "installing pinned Python dependencies (first run downloads torch with its CUDA libraries: several GB)"
  .venv/bin/pip install --quiet -r requirements.txt
  .venv/bin/pip install --quiet --no-deps --no-build-isolation -e .
  echo "$req_hash" > .venv/.tl-requirements
else
  say "Python dependencies up to date"
fi

# --- Fabric binaries ----------------------------------------------------------------------
bash scripts/build_fabric.sh

say "done in $(( $(date +%s) - start )) s; CLI: .venv/bin/twinledger"
