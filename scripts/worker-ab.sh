#!/usr/bin/env bash
# Interleaved A/B of sluice builds on the referee's embedded broker and load generator: for each repetition, each
# build in turn serves N text-stats requests at window W on a fresh broker; prints replies/s and the worker's CPU
# (user + system, from /proc/<pid>/stat) per request, sorted by build. What docs/benchmarks.md calls "runs of each
# build alternating".
#
#   cp -r ../shared/bench /tmp/bench && chmod -R u+w /tmp/bench && make -C /tmp/bench mockbroker loadgen
#   BENCH=/tmp/bench scripts/worker-ab.sh MEMORY 300000 6 /tmp/sluice-before /tmp/sluice-after
#
# Environment: BENCH (the referee's copy, default /tmp/bench), W (window, default 8192, the referee's `sat`),
# PROFILE (`throughput`, the referee's `sat` flags, or `latency`: linger.ms=0, as `lat1`), PERF=1 to `perf record -g`
# the worker for 6 s into /tmp/worker-ab.perf.data (of the last run), WORKER_ARGS for more `sluice worker` flags.
# Prints replies/s, the worker's and the broker's CPU per request, p50 and p99.
set -euo pipefail
CAPTURE=${1:?usage: worker-ab.sh CAPTURE N REPS SLUICE...}
N=${2:?count}
REPS=${3:?repetitions}
shift 3
PROFILE=${PROFILE:-throughput}
PORT=18199
. "$(dirname "$0")/referee-worker.sh"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one_run() { # $1 = sluice binary; prints "replies/s cpu-µs-per-request ..."
  referee_start "$WORK" "$PORT" "$CAPTURE" "$PROFILE" -- "$1"
  local before after broker_before broker_after line perf=""
  before=$(ticks "$WORKER")
  broker_before=$(ticks "$BROKER")
  if [ "${PERF:-}" = 1 ]; then
    (sleep 2; perf record -F 1999 -g -p "$WORKER" -o /tmp/worker-ab.perf.data -- sleep 6 >/dev/null 2>&1) &
    perf=$!
  fi
  line=$(timeout 90 "$BENCH/loadgen" -q -b "$BOOTSTRAP" -n "$N" -w "$W" -p "$PROFILE" -T 60 | grep '^RESULT' || true)
  after=$(ticks "$WORKER")
  broker_after=$(ticks "$BROKER")
  [ -n "$perf" ] && wait "$perf"
  referee_stop
  echo "$line" | awk -v ticks=$((after - before)) -v broker=$((broker_after - broker_before)) \
    -v hz="$(getconf CLK_TCK)" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n = v["matched"] > 0 ? v["matched"] : 1
    printf "%10.0f replies/s %7.1f us/req broker %5.1f us/req p50 %6.2f ms p99 %7.2f ms\n", v["tput"],
      ticks / hz * 1e6 / n, broker / hz * 1e6 / n, v["p50_us"] / 1000, v["p99_us"] / 1000 }'
}

for _ in $(seq 1 "$REPS"); do
  for build in "$@"; do echo "$build $(one_run "$build")"; done
done | sort
