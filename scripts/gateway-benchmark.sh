#!/usr/bin/env bash
# The HTTP gateway beside the Kafka-native path at the same concurrency: for each window, a fresh embedded broker
# (`sluice broker`), one `sluice worker` serving text-stats and one `sluice gateway`; `wrk` keeps WINDOW connections
# busy with POST /v1/pipelines/text-stats/invoke, then (on another fresh broker and worker) `sluice bench` keeps WINDOW
# requests in flight over Kafka. REPS rounds. Prints one line per run: path, window, calls/s, p50, p99, and the CPU
# per call of the gateway (or of `sluice bench`, the Kafka client) and of the worker.
#
#   apt-get install wrk tcpdump
#   SLUICE=.build/release/sluice scripts/gateway-benchmark.sh
#
# Then TOGETHER rounds of one call at a time on both paths at once, on one broker and worker: wrk -c1 through the
# gateway beside `sluice bench --window 1`, so that both see the same broker (the embedded broker's round trip varies
# by ±1 ms from one start to the next, more than the gateway adds). With tcpdump installed (and the right to capture),
# each such round is also captured on the loopback device and scripts/gateway-hops.py prints what the gateway adds,
# packet by packet, free of the broker's fetch cycle.
#
# Environment: SLUICE (default .build/release/sluice), REPS (default 3), WINDOWS (default "1 64 1024"), CAPTURE
# (default MEMORY), DURATION (seconds per run, default 10), TOGETHER (default 3), PATHS (default "gateway kafka": the
# paths each rep runs), GATEWAY_LINGER (the gateway's linger.ms, default 1 as for the worker and `sluice bench`;
# "default" for librdkafka's own).
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=$(realpath "${SLUICE:-.build/release/sluice}")
REPS=${REPS:-3}
WINDOWS=${WINDOWS:-"1 64 1024"}
CAPTURE=${CAPTURE:-MEMORY}
DURATION=${DURATION:-10}
TOGETHER=${TOGETHER:-3}
PATHS=${PATHS:-"gateway kafka"}
GATEWAY_LINGER=${GATEWAY_LINGER:-1}
PORT=18280
WORK=$(mktemp -d)
BROKER="" WORKER="" GATEWAY="" BENCH="" CAPTURE_PID=""
stop_all() {
  for pid in $CAPTURE_PID $BENCH $GATEWAY $WORKER $BROKER; do
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  done
  BROKER="" WORKER="" GATEWAY="" BENCH="" CAPTURE_PID=""
}
trap 'stop_all; rm -rf "$WORK"' EXIT
KAFKA=(--kafka fetch.wait.max.ms=1 --kafka fetch.min.bytes=1 --kafka socket.nagle.disable=true
  --kafka session.timeout.ms=6000 --kafka heartbeat.interval.ms=200)
GATEWAY_KAFKA=("${KAFKA[@]}")
[ "$GATEWAY_LINGER" = default ] || GATEWAY_KAFKA+=(--kafka "linger.ms=$GATEWAY_LINGER")
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"text": "the quick brown fox jumps over the lazy dog"}'
wrk.headers["Content-Type"] = "application/json"
LUA
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Starts a fresh broker and a worker (and, with "gateway", a gateway) and waits until they serve.
start() {
  "$SLUICE" broker --topic text-stats.requests:8 --topic text-stats.responses:8 --topic sluice.gateway.replies:8 \
    >"$WORK/broker.out" 2>/dev/null &
  BROKER=$!
  for _ in $(seq 1 100); do [ -s "$WORK/broker.out" ] && break; sleep 0.1; done
  BOOTSTRAP=$(head -1 "$WORK/broker.out")
  "$SLUICE" worker --brokers "$BOOTSTRAP" --pipeline text-stats --capture "$CAPTURE" --http "127.0.0.1:$((PORT + 1))" \
    "${KAFKA[@]}" --kafka linger.ms=1 >/dev/null 2>"$WORK/worker.err" &
  WORKER=$!
  for _ in $(seq 1 300); do
    curl -s --max-time 1 "http://127.0.0.1:$((PORT + 1))/health" | grep -q '"assigned_partitions" *: *8' && break
    sleep 0.1
  done
  if [ "$1" = gateway ]; then
    "$SLUICE" gateway --brokers "$BOOTSTRAP" --http "127.0.0.1:$PORT" "${GATEWAY_KAFKA[@]}" >/dev/null 2>"$WORK/gateway.err" &
    GATEWAY=$!
    for _ in $(seq 1 300); do
      curl -s --max-time 1 "http://127.0.0.1:$PORT/ready" | grep -q serving && break
      sleep 0.1
    done
  fi
}

report() {  # report PATH WINDOW REP CALLS_PER_S P50_MS P99_MS CLIENT_TICKS WORKER_TICKS CALLS ERRORS
  python3 -c '
import sys
path, window, rep, rate, p50, p99 = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
client, worker, calls, errors, hz = int(sys.argv[7]), int(sys.argv[8]), max(1, int(sys.argv[9])), sys.argv[10], int(sys.argv[11])
us = lambda ticks: ticks / hz * 1e6 / calls
print(f"{path:7} window {window:5} rep {rep}: {rate:8.0f} calls/s, p50 {p50:7.2f} ms, p99 {p99:7.2f} ms, "
      f"{path} {us(client):6.1f} us/call, worker {us(worker):6.1f} us/call, errors {errors}")
' "$@" "$(getconf CLK_TCK)"
}

wrk_figures() {  # wrk_figures FILE: calls/s, p50 and p99 (ms), calls, errors
  python3 -c '
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
calls = int(re.search(r"(\d+) requests in", text).group(1))
socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = sum(int(n) for n in socket.groups()) if socket else 0
errors += int(non2xx.group(1)) if non2xx else 0
print(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1), ms("50%"), ms("99%"), calls, errors)
' "$1"
}

bench_figures() {  # bench_figures FILE: calls/s, p50 and p99 (ms), calls, errors
  python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(r["responses_per_second"], r["p50_ms"], r["p99_ms"], r["answered"], r["errors"] + r["missing"])
' "$1"
}

run_gateway() {  # run_gateway WINDOW REP
  start gateway
  # Warm-up, not measured: the gateway's first look-up of the pipeline and its producer's first metadata request.
  wrk -t1 -c"$1" -d2s -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v1/pipelines/text-stats/invoke" >/dev/null 2>&1 || true
  gateway_before=$(ticks "$GATEWAY") worker_before=$(ticks "$WORKER")
  wrk -t1 -c"$1" -d"${DURATION}s" --latency -s "$WORK/post.lua" \
    "http://127.0.0.1:$PORT/v1/pipelines/text-stats/invoke" >"$WORK/wrk.out" 2>&1 || true
  gateway_ticks=$(($(ticks "$GATEWAY") - gateway_before)) worker_ticks=$(($(ticks "$WORKER") - worker_before))
  stop_all
  read -r rate p50 p99 calls errors < <(wrk_figures "$WORK/wrk.out")
  report gateway "$1" "$2" "$rate" "$p50" "$p99" "$gateway_ticks" "$worker_ticks" "$calls" "$errors"
}

# Starts `sluice bench` with WINDOW requests in flight for DURATION seconds, in the background (BENCH).
start_bench() {  # start_bench WINDOW
  "$SLUICE" bench --brokers "$BOOTSTRAP" --pipeline text-stats --window "$1" --requests 10000000 \
    --seconds "$DURATION" --timeout 30 --kafka fetch.wait.max.ms=1 --kafka fetch.min.bytes=1 \
    --kafka socket.nagle.disable=true --kafka linger.ms=1 >"$WORK/bench.out" 2>/dev/null &
  BENCH=$!
}

run_kafka() {  # run_kafka WINDOW REP
  start kafka
  worker_before=$(ticks "$WORKER")
  start_bench "$1"
  bench_ticks=0
  while kill -0 "$BENCH" 2>/dev/null; do bench_ticks=$(ticks "$BENCH" 2>/dev/null || echo "$bench_ticks"); sleep 0.2; done
  wait "$BENCH" || true
  BENCH=""
  worker_ticks=$(($(ticks "$WORKER") - worker_before))
  stop_all
  read -r rate p50 p99 calls errors < <(bench_figures "$WORK/bench.out")
  report kafka "$1" "$2" "$rate" "$p50" "$p99" "$bench_ticks" "$worker_ticks" "$calls" "$errors"
}

for rep in $(seq 1 "$REPS"); do
  for window in $WINDOWS; do
    for path in $PATHS; do "run_$path" "$window" "$rep"; done
  done
done

# The local ports of each process's connections to the broker, as "PORT ROLE" lines for scripts/gateway-hops.py.
roles() {  # roles BROKER_PORT GATEWAY_PID BENCH_PID
  ss -tnpH | python3 -c '
import re, sys
broker, roles = sys.argv[1], {sys.argv[2]: "gateway", sys.argv[3]: "bench"}
for line in sys.stdin:
    fields, pid = line.split(), re.search(r"pid=(\d+)", line)
    if pid and pid.group(1) in roles and fields[4].endswith(":" + broker):
        print(fields[3].rsplit(":", 1)[1], roles[pid.group(1)])
' "$@"
}

for round in $(seq 1 "$TOGETHER"); do
  start gateway
  wrk -t1 -c1 -d2s -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v1/pipelines/text-stats/invoke" >/dev/null 2>&1 || true
  if command -v tcpdump >/dev/null; then
    tcpdump -i lo -s 128 -w "$WORK/round.pcap" "tcp port ${BOOTSTRAP##*:} or tcp port $PORT" 2>/dev/null &
    CAPTURE_PID=$!
    sleep 0.5
  fi
  wrk -t1 -c1 -d"${DURATION}s" --latency -s "$WORK/post.lua" \
    "http://127.0.0.1:$PORT/v1/pipelines/text-stats/invoke" >"$WORK/wrk.out" 2>&1 &
  wrk_pid=$!
  start_bench 1
  # Connections are made as the clients need them (the bench's producer's with its first request): gathered while
  # the bench runs.
  while kill -0 "$BENCH" 2>/dev/null; do roles "${BOOTSTRAP##*:}" "$GATEWAY" "$BENCH"; sleep 1; done |
    sort -u >"$WORK/roles.txt"
  wait "$BENCH" || true
  BENCH=""
  wait "$wrk_pid" || true
  captured=$CAPTURE_PID
  stop_all
  read -r gateway_rate gateway_p50 gateway_p99 _ gateway_errors < <(wrk_figures "$WORK/wrk.out")
  read -r kafka_rate kafka_p50 kafka_p99 _ kafka_errors < <(bench_figures "$WORK/bench.out")
  python3 -c '
import sys
r, g, gp50, gp99, ge, k, kp50, kp99, ke = sys.argv[1:]
print(f"together window 1 round {r}: gateway {float(g):.0f} calls/s p50 {float(gp50):.2f} ms p99 {float(gp99):.2f} ms "
      f"(errors {ge}), kafka {float(k):.0f} calls/s p50 {float(kp50):.2f} ms p99 {float(kp99):.2f} ms (errors {ke}): "
      f"added p50 {float(gp50) - float(kp50):+.2f} ms")
' "$round" "$gateway_rate" "$gateway_p50" "$gateway_p99" "$gateway_errors" "$kafka_rate" "$kafka_p50" "$kafka_p99" \
    "$kafka_errors"
  if [ -n "$captured" ]; then
    python3 scripts/gateway-hops.py "$WORK/round.pcap" "${BOOTSTRAP##*:}" "$PORT" "$WORK/roles.txt" || true
  fi
done
