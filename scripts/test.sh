#!/usr/bin/env bash
# Run the whole test suite (unit, then integration) with the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest tests "$@"
