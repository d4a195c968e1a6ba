#!/usr/bin/env bash
# The real-data results in one command (README, "Real data"):
#   bash tools/fsdd_mnist_study.sh FSDD_RECORDINGS_DIR MNIST_DIR [OUT]
# 1. JT and CRMT, training seeds 0 1 2, FSDD's standard split;
# 2. JT and CRMT, seed 0, speaker split (speaker george held out);
# 3. Mixup/CRMT-Mix and MMAT/CRMT-AT, seed 0, standard split.
# Each run's report.{md,json} is copied to OUT (default docs/results) as
# fsdd_mnist_{seeds,speaker,at_mix}.{md,json}. Finished trainings and
# evaluations are reused, so an interrupted study resumes.
set -euo pipefail
FSDD=${1:?usage: $0 FSDD_RECORDINGS_DIR MNIST_DIR [OUT]}
MNIST=${2:?usage: $0 FSDD_RECORDINGS_DIR MNIST_DIR [OUT]}
OUT=${3:-docs/results}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
run() {  # run NAME demo-args...
    local name=$1; shift
    "$PYTHON" tools/demo.py --dataset fsdd_mnist --fsdd "$FSDD" \
        --mnist "$MNIST" --work-dir "work_dirs/fsdd_mnist_$name" "$@"
    mkdir -p "$OUT"
    cp "work_dirs/fsdd_mnist_$name/report.md" "$OUT/fsdd_mnist_$name.md"
    cp "work_dirs/fsdd_mnist_$name/report.json" "$OUT/fsdd_mnist_$name.json"
}
start=$(date +%s)
run seeds --seeds 0 1 2
run speaker --split speaker --test-speakers george --seed 0
run at_mix --seed 0 --pairs mixup:crmt_mix mmat:crmt_at
echo "FSDD-MNIST study done in $(( $(date +%s) - start )) s; reports in $OUT"
