# Sourced by the measurement scripts (worker-ab.sh, thread-costs.sh, allocations.sh, batching-benchmark.sh): one
# `sluice worker` serving PIPELINE (default text-stats) on a fresh copy of the referee's embedded broker, with the referee's `sat` flags (its "throughput"
# profile, or "latency": linger.ms=0). Sourcing it sets BENCH (the referee's copy, default /tmp/bench) and W (the
# load generator's window, default 8192, the referee's `sat`) unless set, makes a directory WORK and removes it, and
# stops what was started, on exit. `referee_start` sets BROKER, WORKER (their pids) and BOOTSTRAP; `referee_stop` ends
# both.
#
#   referee_start WORK_DIR PORT CAPTURE [PROFILE] -- COMMAND...   # COMMAND: the sluice binary, or a wrapper with it

BENCH=${BENCH:-/tmp/bench}
W=${W:-8192}
BROKER=""
WORKER=""
BOOTSTRAP=""
WORK=$(mktemp -d)
trap 'referee_stop; rm -rf "$WORK"' EXIT

referee_start() {
  local work=$1 port=$2 capture=$3 profile=${4:-throughput}
  shift 4
  [ "${1:-}" = "--" ] && shift
  local linger=1
  [ "$profile" = latency ] && linger=0
  "${BENCH:-/tmp/bench}/mockbroker" 1 bench.requests:8 bench.responses:8 bench.lineage:8 >"$work/broker.out" \
    2>/dev/null &
  BROKER=$!
  for _ in $(seq 1 50); do [ -s "$work/broker.out" ] && break; sleep 0.1; done
  BOOTSTRAP=$(head -1 "$work/broker.out")
  "$@" worker --brokers "$BOOTSTRAP" --pipeline "${PIPELINE:-text-stats}" --group "referee-$RANDOM" \
    --requests-topic bench.requests --responses-topic bench.responses --lineage-topic bench.lineage \
    --capture "$capture" --http "127.0.0.1:$port" --kafka fetch.wait.max.ms=1 --kafka fetch.min.bytes=1 \
    --kafka socket.nagle.disable=true --kafka max.in.flight=5 --kafka linger.ms=$linger ${WORKER_ARGS:-} \
    >"$work/worker.out" 2>"$work/worker.err" &
  WORKER=$!
  for _ in $(seq 1 300); do
    curl -s --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"assigned_partitions" *: *8' && break
    sleep 0.1
  done
}

referee_stop() {
  for pid in $WORKER $BROKER; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  WORKER=""
  BROKER=""
}
