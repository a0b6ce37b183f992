#!/usr/bin/env bash
# TwinLedger setup: venv with pinned Python dependencies, Chromium for the browser test, then Fabric CA and the
# Fabric peer/orderer (scripts/build_fabric.sh says in which order it looks for them). Exits 1 when Fabric
# cannot be had: TwinLedger without Fabric is not installed.
# Idempotent: a second run reuses .venv and the per-user binary cache and takes seconds.
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

# --- browser for the dashboard test -------------------------------------------------------
# Debian's chromium and its chromedriver, so the test drives the system browser with the matching driver and
# nothing downloads a browser or driver of its own. Only root can install them; others get one warning.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  say "chromium and chromedriver present"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing Debian's chromium and chromium-driver (dashboard browser test)"
  apt_start=$(date +%s)
  apt_log=$(mktemp)
  # Quiet unless it fails; then the whole apt output says why.
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "setup: installing chromium and chromium-driver with apt-get failed (output above)" >&2
    exit 1
  fi
  rm -f "$apt_log"
  say "chromium installed in $(( $(date +%s) - apt_start )) s"
else
  echo "[setup] warning: chromium/chromedriver missing and not root (cannot apt-get install them): the dashboard browser test will be skipped" >&2
fi

# --- node-opcua for the foreign OPC-UA server test -----------------------------------------
# tests/integration/test_opcua_foreign_server.py runs a server not written here: node-opcua, pinned by
# tests/opcua_server/package-lock.json, installed into tests/opcua_server/node_modules (git-ignored).
if command -v npm >/dev/null 2>&1; then
  lock_hash=$(sha256sum tests/opcua_server/package-lock.json | cut -c1-16)
  if [ "$(cat tests/opcua_server/node_modules/.tl-lock 2>/dev/null)" != "$lock_hash" ]; then
    say "installing node-opcua (tests/opcua_server, npm ci)"
    (cd tests/opcua_server && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" > tests/opcua_server/node_modules/.tl-lock
  else
    say "node-opcua up to date"
  fi
else
  echo "[setup] warning: npm missing: the foreign OPC-UA server test (node-opcua) will be skipped" >&2
fi

# --- Fabric binaries ----------------------------------------------------------------------
bash scripts/build_fabric.sh

say "done in $(( $(date +%s) - start )) s; CLI: .venv/bin/twinledger"
