#!/usr/bin/env bash
# Run the test suite (no network, no GPU needed); sets up .venv on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="$("$ROOT/scripts/env.sh")"
cd "$ROOT"
export D4C_OFFLINE=1
exec "$PYTHON_BIN" -m pytest -q "$@"
