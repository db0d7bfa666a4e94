#!/usr/bin/env bash
# The README's test command on a busy machine: FITS `lebm fit -c quickstart` jobs and BURNERS busy
# Python loops run beside it, all in this one session, so that Linux's scheduler autogroups (one per
# session) do not shelter the tests from the load. The 1-minute load average goes to <run>/uptime.log
# every 20 s; pytest's output to <run>/pytest.log, ending "rc=<exit status> wall=<seconds>".
#   scripts/tests_under_load.sh [FITS=4] [BURNERS=10]   (4 + 10 hold a 2-core machine near load 16)
set -uo pipefail
fits="${1:-4}" burners="${2:-10}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
run="$(mktemp -d -t lebm-load-XXXXXX)"
export WANDB_MODE=offline WANDB_SILENT=true
echo "tests under load: $fits fits, $burners burners; logs in $run" >&2
for i in $(seq 1 "$fits"); do
  (while [ ! -f "$run/stop" ]; do
    lebm fit -c quickstart --trainer.enable_progress_bar false --trainer.default_root_dir "$run/fit$i" \
      --overwrite true --trainer.max_epochs 1000 >"$run/fit$i.log" 2>&1
  done) &
done
for _ in $(seq 1 "$burners"); do
  (while [ ! -f "$run/stop" ]; do timeout 60 python -c "while True: pass  # $run"; done) &
done
(while [ ! -f "$run/stop" ]; do uptime >>"$run/uptime.log"; sleep 20; done) &
sleep 60  # let the load average climb first
cd "$repo" || exit 1
start=$SECONDS
python -m pytest -q -p no:cacheprovider --durations=10 >"$run/pytest.log" 2>&1
status=$?
echo "rc=$status wall=$((SECONDS - start))" >>"$run/pytest.log"
touch "$run/stop"
pkill -f "while True: pass  # $run"
pkill -f -- "--trainer.default_root_dir $run/fit"
wait
tail -n 2 "$run/pytest.log"
exit "$status"
