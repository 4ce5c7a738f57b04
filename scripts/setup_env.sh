#!/usr/bin/env bash
# Create ./.venv with the engine and its test dependencies (CPU PyTorch 2.13.0 first, pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[test]"
if [[ "${PANST3R_WITH_BLENDER:-1}" == "1" ]]; then
  .venv/bin/python -m pip install --quiet bpy==5.0.1 || echo "note: bpy==5.0.1 not installed; Blender tests will be skipped"
fi
echo "environment ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
