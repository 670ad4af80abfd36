#!/usr/bin/env bash
# Create or reuse the project's virtual environment and print its python.
# Reinstalls when requirements.txt or pyproject.toml change. D4C_VENV overrides the location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${D4C_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.d4c-install-stamp"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "Setting up $VENV (the first time installs torch, clip and clip_benchmark: a few minutes)..." >&2
    "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else "d4c needs Python 3.9 or newer")'
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" >&2
    echo "$WANT" > "$STAMP"
fi
echo "$VENV/bin/python"
