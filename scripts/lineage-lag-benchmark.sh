#!/usr/bin/env bash
# One materializer behind two REALTIME workers at saturation: the lag over time. The embedded broker with text-stats'
# topics and a lineage topic of LINEAGE_PARTITIONS partitions; `sluice materialize`; two `sluice worker --capture
# REALTIME`; the referee's load generator at window 8192 for DURATION seconds. Every second it prints the
# materializer's events/s and lag (records), then, after the load, how long the lag took to drain. Stops everything it
# started, by PID; bounded by DURATION + DRAIN seconds.
# usage: scripts/lineage-lag-benchmark.sh   (env: SLUICE, BENCH=/tmp/bench (the referee, built: make -C BENCH
# loadgen), DURATION=30, DRAIN=120, LINEAGE_PARTITIONS=64, WORKERS=2, KEEP=1 keeps the processes' logs)
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-.build/release/sluice}
BENCH=${BENCH:-/tmp/bench}
DURATION=${DURATION:-30}
DRAIN=${DRAIN:-120}
LINEAGE_PARTITIONS=${LINEAGE_PARTITIONS:-64}
WORKERS=${WORKERS:-2}
out=$(mktemp -d)
source scripts/started-processes.sh
cleanup() {
  stop_started
  if [ -n "${KEEP:-}" ]; then echo "logs kept in $out"; else rm -rf "$out"; fi
}
trap cleanup EXIT

"$SLUICE" broker --topic text-stats.requests:8 --topic text-stats.responses:8 --topic text-stats.dlq:1 \
  --topic "sluice.lineage:$LINEAGE_PARTITIONS" >"$out/broker.out" 2>"$out/broker.err" &
started+=($!)
for _ in $(seq 1 100); do [ -s "$out/broker.out" ] && break; sleep 0.1; done
brokers=$(head -1 "$out/broker.out")

# The port a service printed in its log ("... port N").
port_of() {
  local port=""
  for _ in $(seq 1 300); do
    port=$(grep -o 'port [0-9]*' "$1" | head -1 | cut -d' ' -f2 || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "not started: $(cat "$1")" >&2; exit 1; }
  echo "$port"
}
# The first sample of a Prometheus series (0 when absent).
sample() {
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | grep -E "^$2 " | head -1 | awk '{printf "%d", $2}' || true
}

"$SLUICE" materialize --brokers "$brokers" --store "$out/store" --http 127.0.0.1:0 --kafka fetch.wait.max.ms=10 \
  >"$out/materialize.out" 2>"$out/materialize.err" &
started+=($!)
materializer=$(port_of "$out/materialize.err")
# Started together, so that they join the group in one round; the referee's throughput settings.
flags=(--kafka fetch.wait.max.ms=1 --kafka fetch.min.bytes=1 --kafka socket.nagle.disable=true --kafka max.in.flight=5
  --kafka linger.ms=1)
for i in $(seq 1 "$WORKERS"); do
  "$SLUICE" worker --brokers "$brokers" --pipeline text-stats --capture REALTIME --http 127.0.0.1:0 \
    --name "worker-$i" "${flags[@]}" >"$out/worker-$i.out" 2>"$out/worker-$i.err" &
  started+=($!)
done
ports=()
for i in $(seq 1 "$WORKERS"); do ports+=("$(port_of "$out/worker-$i.err")"); done
# Ready when every worker owns partitions and they add up to the request topic's 8.
for _ in $(seq 1 600); do
  sum=0
  for port in "${ports[@]}"; do
    n=$(curl -s --max-time 1 "http://127.0.0.1:$port/health" | grep -o '"assigned_partitions":[0-9]*' | cut -d: -f2)
    [ "${n:-0}" -gt 0 ] || { sum=-1; break; }
    sum=$((sum + n))
  done
  [ "$sum" -eq 8 ] && break
  sleep 0.1
done
[ "$sum" -eq 8 ] || { echo "the workers did not share the 8 request partitions" >&2; exit 1; }

"$BENCH/loadgen" -b "$brokers" -t text-stats.requests -r text-stats.responses -n 10000000 -w 8192 -T "$DURATION" \
  -D 5 -p throughput -q >"$out/loadgen.out" 2>"$out/loadgen.err" &
loadgen=$!
started+=($loadgen)
echo "second  events/s  lag (records)"
last=$(sample "$materializer" sluice_materializer_events_total)
max_lag=0
second=0
load_ended=""
while [ $second -lt $((DURATION + DRAIN)) ]; do
  sleep 1
  second=$((second + 1))
  events=$(sample "$materializer" sluice_materializer_events_total)
  lag=$(sample "$materializer" sluice_materializer_lag_records)
  printf '%6d  %8d  %d\n' "$second" "$((events - last))" "$lag"
  last=$events
  [ "${lag:-0}" -gt "$max_lag" ] && max_lag=$lag
  if [ -z "$load_ended" ] && ! kill -0 "$loadgen" 2>/dev/null; then load_ended=$second; fi
  if [ -n "$load_ended" ] && [ "${lag:-0}" -eq 0 ]; then break; fi
done
echo "load: $(grep -v '^$' "$out/loadgen.out" | tail -2 | tr '\n' ' ')$(tail -3 "$out/loadgen.err")"
echo "events materialized: $last; largest lag: $max_lag records; load ended at ${load_ended:-(still running)} s;" \
  "caught up at $second s"
