#!/usr/bin/env bash
# The prepared GPU check (see bench/gpu_check.py): bench/gpu_check.sh OUT_DIR [--cpu]
# Uses $PYTHON, else python3 (on the lent GPU machine: its own torch and transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
