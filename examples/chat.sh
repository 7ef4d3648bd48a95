#!/usr/bin/env bash
# Chat fine-tuning on real human conversations (Chit Chat Challenge): LoRA on SmolLM2-135M-Instruct,
# a before/after table on held-out conversations and five sample replies. Extra args go to chat.py
# (e.g. --train 100 --val 20 --test 20 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python examples/chat.py "$@"
