#!/usr/bin/env bash
# Create or refresh the local virtual environment .venv with pinned dependencies.
# torch is installed first and pinned (a CPU build where one is provided locally); the rest
# comes from constraints.txt so CI and users get the versions the tests ran with.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VAVAM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0"
  "${PIP[@]}" install "torch==2.13.0"
fi
echo "[setup] installing vavam and pinned dependencies"
# pip's own exit status decides (a failed install stops here); only its noisy location warnings are dropped
if ! log=$("${PIP[@]}" install -c constraints.txt -e ".[test]" 2>&1); then
  printf '%s\n' "$log" >&2
  echo "[setup] pip install failed (above)" >&2
  exit 1
fi
printf '%s\n' "$log" | grep -v -e "^WARNING: Location" -e '^$' || true
"$VENV/bin/python" -c "import vavam, torch; print(f'[setup] ok: vavam {vavam.__version__}, torch {torch.__version__}')"
