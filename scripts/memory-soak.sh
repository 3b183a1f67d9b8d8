#!/usr/bin/env bash
# A worker's memory at the referee's `sat` window over a long run: one `sluice worker` serving text-stats on a fresh
# copy of the referee's embedded broker, the load generator sending for SECONDS (run again while time is left: one
# run sends at most 10 million requests), the worker's RSS read every 15 s. Prints each reading, then the peak
# (VmHWM) and each load generator run's result line. What docs/benchmarks.md's "RSS <= 100 MiB at sat, 10 minutes,
# flat" rows come from.
#
#   cp -r ../shared/bench /tmp/bench && chmod -R u+w /tmp/bench && make -C /tmp/bench mockbroker loadgen
#   scripts/memory-soak.sh REALTIME 600 .build/release/sluice
#
# Environment: BENCH (the referee's copy, default /tmp/bench), W (window, default 8192), WORKER_ARGS.
set -euo pipefail
CAPTURE=${1:?usage: memory-soak.sh CAPTURE SECONDS SLUICE}
LIMIT=${2:?seconds}
SLUICE=${3:?sluice binary}
. "$(dirname "$0")/referee-worker.sh"

referee_start "$WORK" 18197 "$CAPTURE" throughput -- "$SLUICE"
end=$((SECONDS + LIMIT))
(
  while [ $((end - SECONDS)) -gt 5 ]; do
    "$BENCH/loadgen" -q -b "$BOOTSTRAP" -n 10000000 -w "$W" -p throughput -T $((end - SECONDS)) | grep '^RESULT' || true
  done
) >"$WORK/loadgen.out" &
LOADGEN=$!
while kill -0 "$LOADGEN" 2>/dev/null; do
  echo "$(date +%T) $(grep VmRSS "/proc/$WORKER/status" | tr -s ' \t' ' ')"
  sleep 15
done
grep VmHWM "/proc/$WORKER/status" | tr -s ' \t' ' '
cat "$WORK/loadgen.out"
