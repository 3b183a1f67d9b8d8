#!/usr/bin/env bash
# Where a worker's CPU goes, by thread: one sluice worker serves N text-stats requests from the referee's load
# generator on the referee's embedded broker; prints each kind of worker thread's CPU time (user + system, from
# /proc/<pid>/task/*/stat, threads of one name summed) per request, the worker's total and the broker's.
# What docs/benchmarks.md calls "by thread".
#
#   cp -r ../shared/bench /tmp/bench && chmod -R u+w /tmp/bench && make -C /tmp/bench mockbroker loadgen
#   BENCH=/tmp/bench scripts/thread-costs.sh REALTIME 80000 .build/release/sluice
#
# Environment: BENCH (default /tmp/bench), W (window, default 8192, the referee's `sat`), RATE (requests/s the load
# generator sends at, default as fast as the window allows: compares modes at one rate, where the costs a batch of
# Kafka records shares are the same).
set -euo pipefail
CAPTURE=${1:?usage: thread-costs.sh CAPTURE N SLUICE}
N=${2:?count}
SLUICE=${3:?sluice binary}
PORT=18196
. "$(dirname "$0")/referee-worker.sh"

# "<thread name> <ticks>" for every thread of $1, threads of one name summed.
threads() {
  for task in /proc/"$1"/task/*; do
    echo "$(tr ' ' _ <"$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
  done | awk '{ticks[$1] += $2} END {for (name in ticks) print name, ticks[name]}' | sort
}

referee_start "$WORK" "$PORT" "$CAPTURE" throughput -- "$SLUICE"
threads "$WORKER" >"$WORK/before"
echo "broker $(awk '{print $14 + $15}' "/proc/$BROKER/stat")" >>"$WORK/before"
line=$(timeout 120 "$BENCH/loadgen" -q -b "$BOOTSTRAP" -n "$N" -w "$W" -p throughput -T 60 ${RATE:+-R "$RATE"} |
  grep '^RESULT' || true)
threads "$WORKER" >"$WORK/after"
echo "broker $(awk '{print $14 + $15}' "/proc/$BROKER/stat")" >>"$WORK/after"
matched=$(echo "$line" | tr ' ' '\n' | awk -F= '$1 == "matched" {print $2}')
echo "$CAPTURE: $(echo "$line" | tr ' ' '\n' | awk -F= '$1 == "tput" {printf "%.0f replies/s", $2}'), $matched replies"
sort "$WORK/before" >"$WORK/b" && sort "$WORK/after" >"$WORK/a"
join -a2 -e0 -o 0,1.2,2.2 "$WORK/b" "$WORK/a" |
  awk -v n="${matched:-0}" -v hz="$(getconf CLK_TCK)" 'n > 0 {
    us = ($3 - $2) / hz * 1e6 / n
    if ($1 == "broker") { broker = us; next }
    if (us > 0) printf "  %-16s %6.1f µs/request\n", $1, us
    total += us
  } END { if (n > 0) printf "  %-16s %6.1f µs/request\n  %-16s %6.1f µs/request\n", "worker", total, "broker process", broker }'
