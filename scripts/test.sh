#!/usr/bin/env bash
# The project's test command (see README): the default suite, full-size parity tests and Blender tests included.
#   bash scripts/test.sh [pytest arguments]
# Uses ./.venv, created or completed by scripts/setup_env.sh (test extras and bpy==5.0.1; quick when nothing is
# missing), or another active virtual environment, which must already hold what the tests need: if it does not,
# this says what to install and stops, rather than letting tests skip. PANST3R_WITH_BLENDER=0 runs without
# bpy, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${VIRTUAL_ENV:-}" || "$VIRTUAL_ENV" -ef .venv ]]; then
  bash scripts/setup_env.sh
  VENV="$PWD/.venv"
else
  VENV="$VIRTUAL_ENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

NEED=(pytest transformers sentencepiece google.protobuf gsplat flask scipy pycolmap ray)
[[ "${PANST3R_WITH_BLENDER:-1}" == "1" ]] && NEED+=(bpy)
MISSING="$(python -c 'import importlib.util as u, sys
def missing(name):
    try:
        return u.find_spec(name) is None
    except ImportError:
        return True
print(" ".join(n for n in sys.argv[1:] if missing(n)))' "${NEED[@]}")"
if [[ -n "$MISSING" ]]; then
  echo "error: the tests need $MISSING, missing from $VENV: run \`$VENV/bin/python -m pip install -e '.[test]'" \
       "bpy==5.0.1\` (bpy needs Python 3.11), or set PANST3R_WITH_BLENDER=0 to run without the Blender tests." >&2
  exit 1
fi
if [[ "${PANST3R_WITH_BLENDER:-1}" != "1" ]]; then
  echo "note: PANST3R_WITH_BLENDER=${PANST3R_WITH_BLENDER}: the Blender tests (tests/blender, scene rendering)" \
       "are skipped." >&2
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest -q -ra "$@"
