#!/usr/bin/env bash
# The offline-zoo runs behind the README's figures (docs/figures/): tiny-vit and tiny-rn on digits,
# the digits prompt file, 32 calibration images, 100 generation iterations, 100 reconstruction steps per unit,
# every row (FP, real data, Gaussian noise, BNS/PSE, D4C configs 0-3) at W4A4 and W4A8, with and without --recon.
#
#   scripts/figures_zoo.sh RUNS [SEED ...]       # default seed 0; results, saved models, cache and logs under RUNS
#
# Environment: MODELS, BITS (44 48), ROWS, RECON ("norecon recon") narrow the grid; PYTHON picks the interpreter.
# Reruns skip finished runs (--skip_existing) and reuse the cached pseudo images; a failed run is logged, not fatal.
set -uo pipefail
RUNS=${1:?usage: scripts/figures_zoo.sh RUNS [SEED ...]}
shift
SEEDS=${*:-0}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
MODELS=${MODELS:-tiny-vit tiny-rn}
BITS=${BITS:-44 48}
ROWS=${ROWS:-fp real gaussian baseline d4c0 d4c1 d4c2 d4c3}
RECON=${RECON:-norecon recon}
mkdir -p "$RUNS/configs" "$RUNS/results" "$RUNS/logs"
for bits in $BITS; do
    printf 'root: %s\ncalibrate: {visual: 32}\n' "$REPO/exp/config$bits.yaml" > "$RUNS/configs/config${bits}_img32.yaml"
done
common=(--dataset digits --num_workers 0 --custom_file "$REPO/d4c/template/digits_classnames_templates.json"
        --gen_iter 100 --gen_cache_dir "$RUNS/cache" --skip_existing
        --output "$RUNS/results/{model}_{q_config}_{method}_{recon}_s{seed}.json")

row_flags() {
    case $1 in
        fp) echo --fp_model ;;
        real) echo ;;
        gaussian) echo --dfq ;;
        baseline) echo --dfq --gen_img --gen_method baseline ;;
        d4c[0-3]) echo --dfq --gen_img --gen_method d4c --d4c_config "${1#d4c}" ;;
        *) echo "figures_zoo.sh: unknown row $1" >&2; exit 2 ;;
    esac
}

run() {  # name, flags...
    local name=$1
    shift
    local began=$SECONDS
    if "$PY" "$REPO/d4c/solver/test_quant.py" "$@" "${common[@]}" > "$RUNS/logs/$name.log" 2>&1; then
        echo "$name: ok in $((SECONDS - began)) s"
    else
        echo "$name: FAILED (see $RUNS/logs/$name.log)"
    fi
}

for seed in $SEEDS; do
    for model in $MODELS; do
        for row in $ROWS; do
            if [ "$row" = fp ]; then
                run "${model}_fp_s$seed" --model "$model" --seed "$seed" --fp_model
                continue
            fi
            for bits in $BITS; do
                for recon in $RECON; do
                    extra=()
                    [ "$recon" = recon ] && extra=(--recon --recon_iters 100)
                    # shellcheck disable=SC2046
                    run "${model}_w${bits}_${row}_${recon}_s$seed" --model "$model" --seed "$seed" $(row_flags "$row") \
                        --q_config "$RUNS/configs/config${bits}_img32.yaml" "${extra[@]}"
                done
            done
        done
    done
done
