#!/usr/bin/env bash
# The project's test command (see README): the default suite, full-size parity tests included.
# Uses the active virtual environment, else ./.venv (created by scripts/setup_env.sh if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
  [[ -x .venv/bin/python ]] || bash scripts/setup_env.sh
  source .venv/bin/activate
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest -q -ra "$@"
