#!/usr/bin/env bash
# exp/sweeps/gen_time.yaml through d4c-sweep; every argument goes to d4c-sweep, e.g.
#   scripts/sweeps/gen_time.sh --dataset_root ~/data --model_cache_dir ~/.cache/clip --executor gpus
#   scripts/sweeps/gen_time.sh --executor slurm --slurm_partition gpu --slurm_timeout_min 720 --dry_run
# then the table: d4c-results build ${OUT:-results/sweeps/gen_time} --table gen_time --md gen_time.md
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
"$PYTHON" -m d4c.sweep exp/sweeps/gen_time.yaml --out "${OUT:-results/sweeps/gen_time}" "$@"
