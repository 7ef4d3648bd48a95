#!/usr/bin/env bash
# The DICOM plumbing demo: install, write augmented copies of pydicom's sample CT/MR files as .dcm,
# train a head on the frozen EfficientNet-Lite0 (label = the Modality in each header), print the
# accuracy, and predict one .dcm with `tunesmith predict RUN file.dcm --json`. About a minute.
# Not a medical result: see examples/dicom.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate   # puts the `tunesmith` command on PATH for the predict step
python examples/dicom.py "$@"
