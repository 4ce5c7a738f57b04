#!/usr/bin/env bash
# Create (or complete) ./.venv: CPU PyTorch 2.13.0 first and pinned, then the engine with its test extras, then
# bpy==5.0.1 for the Blender tests (PANST3R_WITH_BLENDER=0 leaves bpy out). Idempotent: what is already
# installed is not installed again, so a second run takes a few seconds.
#   PANST3R_PYTHON   the interpreter that creates .venv (default: python3.11, else python3; bpy needs 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PANST3R_PYTHON:-$(command -v python3.11 || command -v python3)}"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PY=.venv/bin/python
has() { "$PY" -I -c "$1" >/dev/null 2>&1; }   # -I: only what is installed in .venv counts, not this folder

has "import pip" || "$PY" -m ensurepip --upgrade >/dev/null
if ! has "import torch"; then
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet torch==2.13.0
fi
has "import panst3r_engine, flask, gsplat, scipy, pytest, transformers, sentencepiece, google.protobuf, pycolmap, ray" ||
  "$PY" -m pip install --quiet -e ".[test]"
if [[ "${PANST3R_WITH_BLENDER:-1}" == "1" ]] && ! has "import bpy"; then
  if ! "$PY" -m pip install --quiet bpy==5.0.1; then
    echo "error: bpy==5.0.1 could not be installed into .venv ($("$PY" -V), bpy needs Python 3.11): recreate" \
         ".venv with Python 3.11 (rm -rf .venv; PANST3R_PYTHON=python3.11 bash scripts/setup_env.sh), or set" \
         "PANST3R_WITH_BLENDER=0 to go without the Blender tests." >&2
    exit 1
  fi
fi
echo "environment ready: $("$PY" -c 'import torch; print("torch", torch.__version__)')" \
     "$("$PY" -I -c 'import bpy; print("| bpy", bpy.app.version_string)' 2>/dev/null || echo "| no bpy")"
