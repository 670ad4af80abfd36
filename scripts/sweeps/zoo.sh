#!/usr/bin/env bash
# The README's zoo tables on the CPU: the sweep, then both README blocks. Arguments go to d4c-sweep, e.g.
#   scripts/sweeps/zoo.sh                       # all 150 cells, one after another (a few CPU-hours)
#   scripts/sweeps/zoo.sh --executor slurm      # the same through submitit (its local executor without SLURM)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
OUT="${OUT:-results/sweeps/zoo}"
"$PYTHON" -m d4c.sweep exp/sweeps/zoo.yaml --out "$OUT" "$@"
"$PYTHON" -m d4c.tables.cli build "$OUT" --table zoo --md README.md
