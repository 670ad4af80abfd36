#!/usr/bin/env bash
# The offline demo: the whole pipeline on the zoo's tiny-vit with the digits dataset, on the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="$("$ROOT/scripts/env.sh")"
cd "$ROOT"
mkdir -p results/demo
exec "$PYTHON_BIN" d4c/solver/test_quant.py --model tiny-vit --dataset digits --fp_model \
    --num_workers 0 --output "results/demo/{dataset}_{model}_{method}.json" "$@"
