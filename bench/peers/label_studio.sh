#!/usr/bin/env bash
# Install the peer of the load benchmark (bench/load.py --targets label-studio):
# Label Studio from PyPI with uWSGI, its production server, in a venv of its
# own under bench/.peers/ (gitignored). It is never a dependency of Ratchet.
#
#     bench/peers/label_studio.sh            # LABEL_STUDIO_VERSION=1.23.2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
VENV=".peers/label-studio"
PYTHON="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
# uWSGI is what Label Studio's own image runs (deploy/uwsgi.ini); psycopg2 is
# in label-studio's requirements for its PostgreSQL mode.
"$VENV/bin/pip" install --quiet "label-studio==$VERSION" uwsgi
"$VENV/bin/python" -c "import label_studio, sys; print('label-studio', label_studio.__version__, 'in', sys.prefix)"
