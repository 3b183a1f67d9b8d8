#!/usr/bin/env bash
# Batched `predict` against one image at a time: `digits` (predict batched, docs/capture.md "Batched steps") and
# `digits-unbatched` served in turn by one `sluice worker` on a fresh copy of the referee's embedded broker, loaded by
# `sluice bench` with a digits image at each window; REPS rounds, the pipelines alternating within each. Prints one
# line per run: pipeline, window, responses/s, p50 and p99, and the worker's CPU per request.
#
#   cp -r ../shared/bench /tmp/bench && chmod -R u+w /tmp/bench && make -C /tmp/bench mockbroker
#   SLUICE=.build/release/sluice scripts/batching-benchmark.sh
#
# Environment: SLUICE (default .build/release/sluice), BENCH (the referee's copy, default /tmp/bench), REPS (default
# 3), WINDOWS (default "1 64 1024"), CAPTURE (default REALTIME), N (requests per run, default 20000; a run stops after
# 20 s whichever comes first), WORKER_ARGS (more `sluice worker` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=$(realpath "${SLUICE:-.build/release/sluice}")
REPS=${REPS:-3}
WINDOWS=${WINDOWS:-"1 64 1024"}
CAPTURE=${CAPTURE:-REALTIME}
N=${N:-20000}
PORT=18198
. scripts/referee-worker.sh

image=$(python3 -c 'import json; print(json.dumps({"pixels": json.load(open("Examples/digits/samples.json"))[0]["pixels"]}))')
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for rep in $(seq 1 "$REPS"); do
  for window in $WINDOWS; do
    for pipeline in digits digits-unbatched; do
      PIPELINE=$pipeline referee_start "$WORK" "$PORT" "$CAPTURE" latency -- "$SLUICE"
      before=$(ticks "$WORKER")
      line=$(timeout 120 "$SLUICE" bench --brokers "$BOOTSTRAP" --pipeline "$pipeline" \
        --requests-topic bench.requests --responses-topic bench.responses --data "$image" --window "$window" \
        --requests "$N" --seconds 20 --timeout 30 --kafka fetch.wait.max.ms=1 --kafka fetch.min.bytes=1 \
        --kafka socket.nagle.disable=true --kafka linger.ms=0 2>/dev/null | tail -1)
      after=$(ticks "$WORKER")
      referee_stop
      python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); hz = int(sys.argv[3])
pipeline, window, rep = sys.argv[4], int(sys.argv[5]), sys.argv[6]
answered, sent = r["answered"], r["sent"]
rate, p50, p99 = r["responses_per_second"], r["p50_ms"], r["p99_ms"]
cpu = ticks / hz * 1e6 / max(1, answered)
print(f"{pipeline:16} window {window:5} rep {rep}: {answered}/{sent} answered, {rate:8.0f} responses/s, "
      f"p50 {p50:7.2f} ms, p99 {p99:7.2f} ms, worker {cpu:6.1f} us/request")
' "$line" "$((after - before))" "$(getconf CLK_TCK)" "$pipeline" "$window" "$rep"
    done
  done
done
