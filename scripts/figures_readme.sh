#!/usr/bin/env bash
# The README's figures (docs/figures/*.png and their .json) from a zoo run's files, for one model.
#
#   scripts/figures_readme.sh FIGS CACHE RESULTS [RESULTS ...]
#
#   FIGS     where the PNGs and JSONs go (docs/figures for the README)
#   CACHE    the runs' pseudo-image cache (their --gen_cache_dir; d4c-quant's default ./cache/pseudo_images,
#            relative to the folder the runs were started in)
#   RESULTS  result JSONs or folders of them: scripts/figures_zoo.sh's RUNS/results, or a sweep's
#            OUT/dfq/MODEL plus the FP result (OUT/ptq/MODEL/*fp*.json) for the FP line
#
# Environment: MODEL (tiny-vit), BITS (W4A4: the bit width of curves and layers), RECON_ITERS (100),
# LAYER_ROWS (gaussian,d4c3), CURVE_ROWS (gaussian,baseline,d4c0,d4c3), PYTHON picks the interpreter.
# Only reads those files: nothing is generated, calibrated or reconstructed.
set -euo pipefail
FIGS=${1:?usage: scripts/figures_readme.sh FIGS CACHE RESULTS [RESULTS ...]}
CACHE=${2:?usage: scripts/figures_readme.sh FIGS CACHE RESULTS [RESULTS ...]}
shift 2
[ $# -ge 1 ] || { echo "usage: scripts/figures_readme.sh FIGS CACHE RESULTS [RESULTS ...]" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
MODEL=${MODEL:-tiny-vit}
BITS=${BITS:-W4A4}
RECON_ITERS=${RECON_ITERS:-100}
LAYER_ROWS=${LAYER_ROWS:-gaussian,d4c3}
CURVE_ROWS=${CURVE_ROWS:-gaussian,baseline,d4c0,d4c3}
PROMPTS=$REPO/d4c/template/digits_classnames_templates.json
mkdir -p "$FIGS"
figures() { "$PY" -m d4c.figures "$@"; }

figures images --cache "$CACHE" --model "$MODEL" --custom_file "$PROMPTS" --per_method 5 \
    -o "$FIGS/images_$MODEL.png"
figures curves --cache "$CACHE" --model "$MODEL" --results "$@" --bits "$BITS" --recon_iters "$RECON_ITERS" \
    --methods "$CURVE_ROWS" -o "$FIGS/curves_$MODEL.png"
figures features --cache "$CACHE" --model "$MODEL" --custom_file "$PROMPTS" --dataset digits \
    -o "$FIGS/features_$MODEL.png"
figures layers --model "$MODEL" --states "$@" --bits "$BITS" --recon_iters "$RECON_ITERS" --methods "$LAYER_ROWS" \
    --dataset digits -o "$FIGS/layers_$MODEL.png"
figures tables --results "$@" --model "$MODEL" --recon_iters "$RECON_ITERS" -o "$FIGS/tables_$MODEL.png"
