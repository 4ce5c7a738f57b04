#!/usr/bin/env bash
# The main job, from a fresh clone: set up ./.venv, make sure the weights are there, and run the
# pipeline on the example photos in examples/room, writing a result bundle to out/room.
#   bash scripts/demo.sh [extra 'run' options, e.g. --postprocess qubo --keyframes 4]
# Environment (see the README's table):
#   PANST3R_ACCEPT_LICENSE=1   accept the PanSt3R non-commercial licence without a prompt (needed without a terminal)
#   PANST3R_DEMO_WEIGHTS       weights id or alias (default v2)
#   PANST3R_DEMO_OUT           output bundle folder (default out/room)
# Exit status: 0 the bundle was written; 3 the weights are not in the cache and could not be downloaded (the
# last line says which file to place where); anything else: the run failed (its message says why).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  PANST3R_WITH_BLENDER=0 bash scripts/setup_env.sh   # creates or completes .venv; quick when complete
  PY=.venv/bin/python
fi
WEIGHTS="${PANST3R_DEMO_WEIGHTS:-v2}"

no_weights() {  # $1: why. The last word, whatever the route: which file to place where.
  local how
  how="$("$PY" -m panst3r_engine weights path "$WEIGHTS" 2>&1 >/dev/null || true)"
  echo "demo: $(tr -s ' \n' ' ' <<<"$1" | sed 's/ $//')." >&2
  echo "demo: the weights are not in the cache; ${how#not downloaded yet: }; then run \`bash scripts/demo.sh\` again." >&2
  exit 3
}

if ! "$PY" -m panst3r_engine weights path "$WEIGHTS" >/dev/null 2>&1; then
  ACCEPT=()
  if [[ "${PANST3R_ACCEPT_LICENSE:-0}" == "1" ]]; then
    ACCEPT=(--accept-license)
  elif [[ -t 0 ]]; then
    "$PY" -m panst3r_engine weights download "$WEIGHTS" 2>&1 | sed 's/^error: //' >&2 || true  # shows the licence
    read -r -p "Accept the licence above and download the weights? [y/N] " answer
    [[ "$answer" =~ ^[Yy] ]] || no_weights "the licence was not accepted"
    ACCEPT=(--accept-license)
  else
    no_weights "the PanSt3R weights are for non-commercial use only and their licence has not been accepted; run this
      in a terminal to read it and be asked, or set PANST3R_ACCEPT_LICENSE=1 to accept it"
  fi
  "$PY" -m panst3r_engine weights download "$WEIGHTS" "${ACCEPT[@]}" || no_weights "the download failed (above)"
fi

# The text tower computes the class embeddings once (cached afterwards); Apache-2.0, no acceptance needed.
if ! "$PY" -m panst3r_engine weights path siglip-text >/dev/null 2>&1; then
  "$PY" -m panst3r_engine weights download siglip-text || echo "note: no text model; cached class embeddings will be used if present" >&2
fi

OUT="${PANST3R_DEMO_OUT:-out/room}"
mkdir -p "$(dirname "$OUT")"
"$PY" -m panst3r_engine run examples/room --out "$OUT" --overwrite --weights "$WEIGHTS" "$@"
