#!/usr/bin/env bash
# The project's test command (see README): the default suite, full-size parity tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest -q -ra "$@"
