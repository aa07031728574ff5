#!/usr/bin/env bash
# The GPU check of vpr, run unchanged on a machine with a GPU (at most 8 minutes on one GPU):
#   benchmarks/gpu_check.sh [--out DIR]        # figures in DIR (default: $OUT, else ./gpu_check_out)
#   benchmarks/gpu_check.sh --cpu-smoke        # every section on the CPU at tiny sizes (CI, under 2 min)
# Uses the repository's .venv when there is one (else $PYTHON, else python). See benchmarks/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --kill-after=15 480 "$PYTHON" "$here/gpu_check.py" "$@"
