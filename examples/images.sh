#!/usr/bin/env bash
# The image example from a fresh machine: install, fine-tune the shipped EfficientNet-Lite0 on a
# Fashion-MNIST subset, print before (head-only) / after (configs/vision/fashion-mnist.yaml) on
# held-out test images, write the report. Under 10 minutes on 2 CPU cores at the default size.
#   bash examples/images.sh [--train-per-class 100 --test-per-class 50 --epochs N --threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }
  else
    echo "Fashion-MNIST is not installed. Install it, then rerun:  sudo apt-get install dataset-fashion-mnist" >&2
    exit 1
  fi
fi
bash scripts/setup.sh
.venv/bin/python examples/images.py "$@"
