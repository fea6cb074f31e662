#!/usr/bin/env bash
# Fresh-machine install of llava_nb into a virtual environment (default: .venv).
#
#   bash tools/install.sh            # or: make install
#
# 1. creates the venv if it does not exist (set LLAVA_NB_VENV to use another path);
# 2. installs torch first: `torch==2.13.0` (the CPU wheel on CPU-only machines) unless the venv
#    already has a torch, so a GPU user who installed their CUDA build into the venv keeps it;
#    set TORCH_SPEC to ask for another build, e.g. TORCH_SPEC="torch==2.13.0 --index-url ...";
# 3. installs llava_nb in editable mode with the dev extras (nbdev, pytest, docs, browser tests);
# 4. checks the environment is consistent (`pip check`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLAVA_NB_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[install] keeping installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  echo "[install] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" install $TORCH_SPEC
fi

echo "[install] installing llava_nb (editable) with dev extras"
"${PIP[@]}" install -e ".[dev]"
"${PIP[@]}" check
echo "[install] done: activate with 'source $VENV/bin/activate'"
