#!/usr/bin/env bash
# The main job, from a fresh clone: set up ./.venv, make sure the weights are there, and run the
# pipeline on the example photos in examples/room, writing a result bundle to out/room.
#   bash scripts/demo.sh [extra 'run' options, e.g. --postprocess qubo --keyframes 4]
# Set PANST3R_ACCEPT_LICENSE=1 to accept the PanSt3R non-commercial licence without a prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  [[ -x .venv/bin/python ]] || PANST3R_WITH_BLENDER=0 bash scripts/setup_env.sh
  PY=.venv/bin/python
fi
WEIGHTS="${PANST3R_DEMO_WEIGHTS:-v2}"

if ! "$PY" -m panst3r_engine weights path "$WEIGHTS" >/dev/null 2>&1; then
  ACCEPT=()
  if [[ "${PANST3R_ACCEPT_LICENSE:-0}" == "1" ]]; then
    ACCEPT=(--accept-license)
  elif [[ -t 0 ]]; then
    "$PY" -m panst3r_engine weights download "$WEIGHTS" || true   # prints the licence and how to accept it
    read -r -p "Accept the licence above and download the weights? [y/N] " answer
    [[ "$answer" =~ ^[Yy] ]] && ACCEPT=(--accept-license)
  fi
  if ! "$PY" -m panst3r_engine weights download "$WEIGHTS" "${ACCEPT[@]}"; then
    echo "The weights are not available; see the message above for the file to place by hand." >&2
    exit 1
  fi
fi

# The text tower computes the class embeddings once (cached afterwards); Apache-2.0, no acceptance needed.
if ! "$PY" -m panst3r_engine weights path siglip-text >/dev/null 2>&1; then
  "$PY" -m panst3r_engine weights download siglip-text || echo "note: no text model; cached class embeddings will be used if present" >&2
fi

OUT="${PANST3R_DEMO_OUT:-out/room}"
mkdir -p "$(dirname "$OUT")"
"$PY" -m panst3r_engine run examples/room --out "$OUT" --overwrite --weights "$WEIGHTS" "$@"
