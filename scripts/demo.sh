#!/usr/bin/env bash
# The offline demo: FP and D4C-quantized (W4A8, pseudo images, reconstruction) tiny-vit on digits, on the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="$("$ROOT/scripts/env.sh")"
cd "$ROOT"
exec "$PYTHON_BIN" scripts/demo.py "$@"
