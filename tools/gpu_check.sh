#!/usr/bin/env bash
# One-command GPU check (< 8 min on one GPU), one JSON out; on a machine
# without CUDA it records every GPU part as skipped and exits 0.
#   bash tools/gpu_check.sh --out work_dirs/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" tools/gpu_check.py "$@"
