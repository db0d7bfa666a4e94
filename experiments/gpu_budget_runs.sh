#!/usr/bin/env bash
# The reproduction runs at GPU budgets (LatentEBM, held-out 4, 70,000-digit pool, three seeds side
# by side on one GPU), in parts that fit a lent machine's calls, each part under a deadline:
#
#   experiments/gpu_budget_runs.sh check SECONDS   # quickstart on/off (quiet), then the seeds' fits beside the gpu tier
#   experiments/gpu_budget_runs.sh fit SECONDS     # the seeds' fits go on (--ckpt_path auto) until the deadline
#   experiments/gpu_budget_runs.sh score           # every kept checkpoint scored on validation and test
#
# Each fit is `experiments/anomaly_selections.py --stage fit` (a checkpoint every 1,000 updates, to
# STEPS); at the deadline it gets SIGTERM, saves a resumable last.ckpt at the end of its batch, and
# the next part goes on from there. Needs LEBM_DATA, OUT and COMMIT; writes its logs under $OUT.
# What runs, from the environment: DIGITS (default 4) x SEEDS (default 1 2 3), one process each;
# STEPS (20000); EXPERIMENT (mnist_anomaly_gpu_budget: the run folders and the record) and FIT_ARGS
# (more `lebm fit` arguments: a factor of the gap study, for example
#   EXPERIMENT=mnist_anomaly_gpu_ngf64 FIT_ARGS="--model.init_args.decoder.init_args.net.init_args.ngf 64").
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
SEEDS=${SEEDS:-"1 2 3"}
DIGITS=${DIGITS:-4}
STEPS=${STEPS:-20000}
EXPERIMENT=${EXPERIMENT:-mnist_anomaly_gpu_budget}
read -r -a EXTRA <<<"${FIT_ARGS:-}"
left() { echo $(( $1 - ($(date +%s) - START) )); }

fits() {  # fits DEADLINE: the seeds' fits in the background, each stopped by SIGTERM at DEADLINE
  for digit in $DIGITS; do
    for seed in $SEEDS; do
      timeout -s TERM "$(left "$1")" python3 experiments/anomaly_selections.py --digit "$digit" --seed "$seed" \
        --max-steps "$STEPS" --every 1000 --experiment "$EXPERIMENT" --stage fit -- --trainer.logger false \
        "${EXTRA[@]}" >>"$OUT/fit-digit$digit-seed$seed.log" 2>&1 &
    done
  done
}

wait_fits() {  # the lebm processes outlive their script's SIGTERM by the batch and the save
  wait
  # anchored: an unanchored pattern also matches a shell whose command line holds the words
  while pgrep -f "^python3 -m lebm fit" >/dev/null; do sleep 1; done
  for log in "$OUT"/fit-*.log; do echo "$log: $(grep -o "epoch [0-9]*/" "$log" | tail -1)"; done
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
    for digit in $DIGITS; do
      for seed in $SEEDS; do
        python3 experiments/anomaly_selections.py --digit "$digit" --seed "$seed" --every 1000 --max-examples 4000 \
          --experiment "$EXPERIMENT" --stage score >"$OUT/score-digit$digit-seed$seed.log" 2>&1 &
      done
    done
    wait
    ;;
esac
