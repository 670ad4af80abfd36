#!/usr/bin/env bash
# Run the test suite (no network, no GPU needed); sets up .venv on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="$("$ROOT/scripts/env.sh")"
cd "$ROOT"
export D4C_OFFLINE=1
# Tiny models: one torch thread is fastest, and on a busy machine parallel regions wait for descheduled
# threads (the full suite took 9.4 min with two threads, 3.0 min with one, on a loaded 2-core machine).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PYTHON_BIN" -m pytest -q "$@"
