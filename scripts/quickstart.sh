#!/usr/bin/env bash
# The quickstart of the README: installs sftlab (idempotent), then LoRA-tunes the embedded
# SmolLM2-135M-Instruct on the built-in FLAN-style mixture on CPU and compares base vs tuned.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec sftlab quickstart "$@"
