#!/usr/bin/env bash
# Set up .venv with pinned dependencies; cheap to re-run (it does nothing when nothing changed).
#   - torch==2.13.0 unless a torch is already importable: an unpinned torch pulls several GB of CUDA wheels.
#     From a standard index (PyPI) that is the CUDA build on Linux x86-64; a local index may serve a CPU build.
#   - TORCH_INDEX_URL=<url> installs torch==2.13.0 from that index instead, replacing the torch in .venv once per
#     URL: https://download.pytorch.org/whl/cpu for a CPU-only wheel, .../whl/cu128 for a given CUDA build.
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

report_torch() {  # which torch build the venv has, and whether it sees a GPU
  "$VENV/bin/python" -c 'import torch; print(f"bootstrap: torch {torch.__version__} (CUDA build: '\
'{torch.version.cuda}, CUDA available: {torch.cuda.is_available()})")' || true
}
TORCH_STAMP=$VENV/.rlplastic-torch-index
if [ -n "${TORCH_INDEX_URL:-}" ] && [ "$(cat "$TORCH_STAMP" 2>/dev/null)" != "$TORCH_INDEX_URL" ]; then
  echo "bootstrap: installing torch==2.13.0 from $TORCH_INDEX_URL"
  "$VENV/bin/python" -m pip uninstall -q -y torch >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
  echo "$TORCH_INDEX_URL" > "$TORCH_STAMP"
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  report_torch
  exit 0
fi
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0"
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
echo "bootstrap: installing rlplastic and its dependencies"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
echo "$want" > "$STAMP"
report_torch
