#!/usr/bin/env bash
# The reference LLaVA (PyPI `llava-torch` 1.2.2.post1, the original haotian-liu/LLaVA code) in its own
# virtual environment, for the interop tests (tests/test_reference_*.py):
#
#   bash tools/reference_env.sh            # or: make reference
#
# Everything comes from PyPI. The package is installed with --no-deps (its own pins ask for
# torch 2.0.1 and CUDA-only packages); its runtime needs are pinned here as verified on CPU.
# The folder (default .reference, set LLAVA_NB_REFERENCE to move it) is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
REF="${LLAVA_NB_REFERENCE:-.reference}"
PYTHON="${PYTHON:-python3}"
STAMP="$REF/.reference-installed"
PINS=(
  "transformers==4.37.2" "tokenizers==0.15.2" "sentencepiece==0.2.0" "protobuf==4.25.3"
  "accelerate==0.27.2" "peft==0.8.2" "safetensors==0.4.2" "huggingface_hub==0.20.3"
  "numpy==1.26.4" "pillow==10.2.0" "einops==0.6.1" "shortuuid==1.0.11"
  "fastapi==0.109.2" "uvicorn==0.27.1" "requests==2.31.0" "httpx==0.26.0" "pydantic==2.6.1"
)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(sha1sum "$0" | cut -c1-40)" ]; then
  echo "[reference] $REF is ready"; exit 0
fi
[ -x "$REF/bin/python" ] || "$PYTHON" -m venv "$REF"
PIP=("$REF/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install "${PINS[@]}"
"${PIP[@]}" install --no-deps "llava-torch==1.2.2.post1"
"$REF/bin/python" -c "from llava.model import LlavaLlamaForCausalLM; from llava.train.llava_trainer import LLaVATrainer; import llava.serve.model_worker"
sha1sum "$0" | cut -c1-40 > "$STAMP"
echo "[reference] ready: $REF/bin/python (llava-torch 1.2.2.post1, transformers 4.37.2)"
