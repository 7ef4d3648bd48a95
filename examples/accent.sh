#!/usr/bin/env bash
# Adapt whisper-tiny.en to a Scottish English voice (espeak-ng en-gb-scotland), with an en-us guard
# set; prints WER before/after on held-out sentences and on the guard set. Extra args go to accent.py
# (e.g. --train 60 --val 20 --guard 20 --epochs 1 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v espeak-ng >/dev/null; then
  if [ "$(id -u)" = "0" ]; then
    apt-get install -y espeak-ng || { apt-get update && apt-get install -y espeak-ng; }
  else
    echo "espeak-ng is not installed. Install it, then rerun:  sudo apt-get install espeak-ng" >&2
    exit 1
  fi
fi
bash scripts/setup.sh
. .venv/bin/activate
python examples/accent.py "$@"
