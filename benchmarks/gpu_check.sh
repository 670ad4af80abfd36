#!/usr/bin/env bash
# The prepared GPU check: CUDA-only tests, the --full benchmark figures (random RN50, ViT-B/32,
# ViT-B/16), ViT-B/32's whole run extrapolated to the paper's counts against the targets, and
# TF32/bf16 against float32. Under 8 minutes on one H100/H200-class GPU.
#
#   benchmarks/gpu_check.sh OUTDIR          # on a machine with one CUDA GPU
#   benchmarks/gpu_check.sh --cpu OUTDIR    # the same parts on the CPU at tiny sizes (CI runs this)
#
# Writes OUTDIR/gpu_check.json (every part's status, seconds and figures, the targets' verdicts),
# OUTDIR/gpu_check.log and OUTDIR/results/*.json; exits non-zero if a part failed. See
# benchmarks/gpu_check.py for the parts and their time limits.
#
# Python: $PYTHON if set, else this checkout's .venv, else python3. A machine without network whose
# python3 has torch but not d4c's other requirements takes them as wheels: put them (pure-Python:
# clip-anytorch, clip-benchmark, ftfy, wcwidth, open_clip_torch, webdataset, braceexpand,
# pycocoevalcap, easydict; and numpy<2.4 for clip-benchmark) in ./.whl or $D4C_WHEELS, and they are
# installed into a temporary folder first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python3
fi
WHEELS="${D4C_WHEELS:-$ROOT/.whl}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    SITE="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
cd "$ROOT"
exec "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
