#!/usr/bin/env bash
# exp/sweeps/ablation.yaml through d4c-sweep; every argument goes to d4c-sweep, e.g.
#   scripts/sweeps/ablation.sh --dataset_root ~/data --model_cache_dir ~/.cache/clip --executor gpus
#   scripts/sweeps/ablation.sh --executor slurm --slurm_partition gpu --slurm_timeout_min 720 --dry_run
# then the table: d4c-results build ${OUT:-results/sweeps/ablation} --table ablation --md ablation.md
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
"$PYTHON" -m d4c.sweep exp/sweeps/ablation.yaml --out "${OUT:-results/sweeps/ablation}" "$@"
