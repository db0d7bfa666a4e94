#!/usr/bin/env bash
# The reproduction runs at GPU budgets (LatentEBM, held-out 4, 70,000-digit pool, three seeds side
# by side on one GPU), in parts that fit a lent machine's calls, each part under a deadline:
#
#   experiments/gpu_budget_runs.sh check SECONDS   # quickstart on/off (quiet), then the seeds' fits beside the gpu tier
#   experiments/gpu_budget_runs.sh fit SECONDS     # the seeds' fits go on (--ckpt_path auto) until the deadline
#   experiments/gpu_budget_runs.sh score           # every kept checkpoint scored on validation and test
#
# Each fit is `experiments/anomaly_selections.py --stage fit` (a checkpoint every 1,000 updates, to
# 20,000); at the deadline it gets SIGTERM, saves a resumable last.ckpt at the end of its batch, and
# the next part goes on from there. Needs LEBM_DATA, OUT and COMMIT; writes its logs under $OUT.
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
SEEDS=${SEEDS:-"1 2 3"}
EXPERIMENT=mnist_anomaly_gpu_budget
left() { echo $(( $1 - ($(date +%s) - START) )); }

fits() {  # fits DEADLINE: the seeds' fits in the background, each stopped by SIGTERM at DEADLINE
  for seed in $SEEDS; do
    timeout -s TERM "$(left "$1")" python3 experiments/anomaly_selections.py --digit 4 --seed "$seed" \
      --max-steps 20000 --every 1000 --experiment "$EXPERIMENT" --stage fit -- --trainer.logger false \
      >>"$OUT/fit-seed$seed.log" 2>&1 &
  done
}

wait_fits() {  # the lebm processes outlive their script's SIGTERM by the batch and the save
  wait
  # anchored: an unanchored pattern also matches a shell whose command line holds the words
  while pgrep -f "^python3 -m lebm fit" >/dev/null; do sleep 1; done
  for seed in $SEEDS; do grep -ho "step [0-9]*\|epoch [0-9]*[^|]*" "$OUT/fit-seed$seed.log" | tail -1; done
}

case "$1" in
  check)
    python3 benchmarks/gpu_check.py --out "$OUT/check" --commit "$COMMIT" --stages quickstart --budget 400  # the stage gets 15% of it: 60 s
    fits "$2"
    python3 benchmarks/gpu_check.py --out "$OUT/tier" --commit "$COMMIT" --stages gpu_tier --budget 540  # the stage gets 37% of it: 200 s
    wait_fits
    ;;
  fit)
    fits "$2"
    wait_fits
    ;;
  score)
    for seed in $SEEDS; do
      python3 experiments/anomaly_selections.py --digit 4 --seed "$seed" --every 1000 --max-examples 4000 \
        --experiment "$EXPERIMENT" --stage score >"$OUT/score-seed$seed.log" 2>&1 &
    done
    wait
    ;;
esac
