#!/usr/bin/env bash
# Adapt whisper-tiny.en to a Scottish English voice (espeak-ng en-gb-scotland), with an en-us guard
# set; prints WER before/after on held-out sentences and on the guard set. Extra args go to accent.py
# (e.g. --train 60 --val 20 --guard 20 --epochs 1 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v espeak-ng >/dev/null || { echo "needs espeak-ng: apt-get install -y espeak-ng" >&2; exit 2; }
bash scripts/setup.sh
. .venv/bin/activate
python examples/accent.py "$@"
