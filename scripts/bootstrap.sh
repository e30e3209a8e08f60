#!/usr/bin/env bash
# Set up .venv with pinned dependencies; cheap to re-run (it does nothing when nothing changed).
#   - torch==2.13.0 unless a torch is already importable: an unpinned torch pulls several GB of CUDA wheels.
#   - mujoco<4 from the first install: a later downgrade in place leaves 4.x files behind.
#   - headless rendering needs EGL (libegl1 + Mesa); installed with apt-get when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.rlplastic-installed

if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing EGL/Mesa for headless rendering (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1-mesa-dri libglvnd0 >/dev/null
  else
    echo "bootstrap: warning: libEGL.so.1 not found; install libegl1 and libgl1-mesa-dri (or set MUJOCO_GL=osmesa)" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0"
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
echo "bootstrap: installing rlplastic and its dependencies"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
echo "$want" > "$STAMP"
