#!/usr/bin/env bash
# The demo: real inference over Kafka on the embedded broker. Starts `sluice broker`, then for each of three capture
# modes a `sluice worker` serving the `digits` pipeline; sends 20 handwritten digits with `sluice call`, prints the
# answers, and shows what each mode published to the lineage topic; then `sluice materialize` folds that topic into a
# store, and `sluice runs` lists the runs and shows one as a DAG; last, `sluice gateway` answers a curl call through a
# worker. Stops everything it started, by PID. Fails (exit 1)
# when a step does not do what it shows: an answer missing or mostly wrong, lineage that a mode should (not) have
# published, runs missing from the store.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-.build/debug/sluice}
out=$(mktemp -d)
broker_pid=""
worker_pid=""
materializer_pid=""
gateway_pid=""
cleanup() {
  for pid in $gateway_pid $worker_pid $materializer_pid $broker_pid; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $out" || rm -rf "$out"
}
trap cleanup EXIT

echo "== the embedded broker (librdkafka's mock cluster on 127.0.0.1) with the digits topics"
"$SLUICE" broker --topic digits.requests:4 --topic digits.responses:4 --topic digits.dlq:2 --topic sluice.lineage:4 \
  --topic sluice.gateway.replies:2 \
  >"$out/broker.out" 2>"$out/broker.err" &
broker_pid=$!
for _ in $(seq 1 100); do [ -s "$out/broker.out" ] && break; sleep 0.1; done
brokers=$(head -1 "$out/broker.out")
[ -n "$brokers" ] || { echo "the broker did not start:"; cat "$out/broker.err"; exit 1; }
echo "   bootstrap servers: $brokers"

# 20 held-out images from scikit-learn's digits data set, one JSON input per line, and their true labels.
python3 - "$out" <<'PY'
import json, sys
samples = json.load(open("Examples/digits/samples.json"))
with open(f"{sys.argv[1]}/inputs.jsonl", "w") as inputs, open(f"{sys.argv[1]}/labels.json", "w") as labels:
    for sample in samples:
        inputs.write(json.dumps({"pixels": sample["pixels"]}) + "\n")
    json.dump([sample["label"] for sample in samples], labels)
PY

serve() {  # serve MODE-NAME CAPTURE
  echo
  echo "== capture $1: sluice worker --pipeline digits --capture '$2'"
  "$SLUICE" worker --brokers "$brokers" --pipeline digits --capture "$2" --http 127.0.0.1:0 \
    --kafka session.timeout.ms=6000 --kafka heartbeat.interval.ms=500 \
    --kafka fetch.wait.max.ms=10 --kafka linger.ms=1 >"$out/worker.out" 2>"$out/worker-$1.err" &
  worker_pid=$!
  timeout 120 "$SLUICE" call --brokers "$brokers" --pipeline digits --kafka fetch.wait.max.ms=10 \
    <"$out/inputs.jsonl" >"$out/answers-$1.jsonl" 2>"$out/call.err" || { cat "$out/call.err"; exit 1; }
  python3 - "$out/answers-$1.jsonl" "$out/labels.json" <<'PY'
import json, sys
answers = [json.loads(line) for line in open(sys.argv[1])]
labels = json.load(open(sys.argv[2]))
right = 0
for answer, label in zip(answers, labels):
    output = answer["output"]
    right += output["digit"] == label
    print(f"   true {label}  answered {output['digit']}  p={output['probability']:.3f}  "
          f"run_id={answer['run_id']}  {answer['duration_ms']:.2f} ms in the worker")
print(f"   {right} of {len(answers)} right")
if len(answers) != len(labels) or right < 0.8 * len(labels):
    sys.exit(f"expected {len(labels)} answers, mostly right; got {len(answers)}, {right} right")
PY
  kill -TERM "$worker_pid"; wait "$worker_pid"; worker_pid=""
}

serve BATCH BATCH
serve REALTIME REALTIME
serve memory-only '{"mode": "REALTIME", "runs": "off"}'

echo
echo "== what each mode published to sluice.lineage (records, and events by capture mode and type)"
timeout 60 python3 Tests/SluiceCLITests/python/read_topic.py "$brokers" sluice.lineage >"$out/lineage.jsonl"
python3 - "$out/lineage.jsonl" <<'PY'
import collections, json, sys
# Lineage records v2: the events of one run, with the run's members once (docs/lineage-events.md).
records = [json.loads(line)["value"] for line in open(sys.argv[1])]
events = [dict(event, capture=record["capture"]) for record in records for event in record["events"]]
record_count = collections.Counter(record["capture"] for record in records)
by_mode = collections.defaultdict(collections.Counter)
for event in events:
    by_mode[event["capture"]][event["type"]] += 1
if by_mode["BATCH"]["run_started"] != 20 or by_mode["REALTIME"]["run_started"] != 20 or by_mode.get("MEMORY"):
    sys.exit(f"expected 20 runs each from BATCH and REALTIME and none from memory-only: {dict(by_mode)}")
for mode in ("BATCH", "REALTIME", "MEMORY"):
    counts = by_mode.get(mode)
    if not counts:
        print(f"   {mode:9} nothing: memory-only publishes no lineage")
        continue
    runs = counts["run_started"]
    print(f"   {mode:9} {sum(counts.values())} events in {record_count[mode]} records for {runs} runs: "
          + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))
run = [e for e in events if e["capture"] == "BATCH" and e["type"] in ("step_started", "step_completed")][:8]
print("   one BATCH run, its steps and lineage edges:")
for event in run:
    if event["type"] == "step_started":
        sources = ", ".join(i.get("produced_by") or "?" for i in event["inputs"])
        print(f"     {event['step_run']:12} <- {sources}")
PY
echo
echo "== sluice materialize: the lineage topic into a store of JSON lines, one per run"
"$SLUICE" materialize --brokers "$brokers" --store "$out/store" --http 127.0.0.1:0 \
  --kafka fetch.wait.max.ms=10 >"$out/materialize.out" 2>"$out/materialize.err" &
materializer_pid=$!
# BATCH and REALTIME published 20 runs each: wait until the segments hold all 40 (at most 60 s).
for _ in $(seq 1 600); do
  [ "$(cat "$out"/store/runs/pipeline=digits/*/*.jsonl 2>/dev/null | wc -l)" -ge 40 ] && break
  sleep 0.1
done
kill -TERM "$materializer_pid"; wait "$materializer_pid"; materializer_pid=""
stored=$(cat "$out"/store/runs/pipeline=digits/*/*.jsonl 2>/dev/null | wc -l)
[ "$stored" -eq 40 ] || { echo "expected 40 runs in the store, found $stored:"; tail -20 "$out/materialize.err"; exit 1; }
echo "   $stored runs in $(ls "$out"/store/runs/pipeline=digits/*/*.jsonl | wc -l) segment(s)"
echo
echo "== sluice runs list --limit 5"
"$SLUICE" runs --store "$out/store" list --limit 5 | sed 's/^/   /'
run_id=$("$SLUICE" runs --store "$out/store" list --limit 1 | awk 'NR == 2 { print $1 }')
[ -n "$run_id" ] || { echo "sluice runs list printed no run"; exit 1; }
echo
echo "== sluice runs show $run_id"
"$SLUICE" runs --store "$out/store" show "$run_id" | sed 's/^/   /'
echo
echo "== sluice gateway: the same workers over HTTP (a memory-only worker, so the store above stays as it is)"
"$SLUICE" worker --brokers "$brokers" --pipeline digits --capture MEMORY --http 127.0.0.1:0 \
  --kafka session.timeout.ms=6000 --kafka heartbeat.interval.ms=500 \
  --kafka fetch.wait.max.ms=10 --kafka linger.ms=1 >"$out/worker.out" 2>"$out/worker-gateway.err" &
worker_pid=$!
"$SLUICE" gateway --brokers "$brokers" --http 127.0.0.1:0 --kafka session.timeout.ms=6000 \
  --kafka heartbeat.interval.ms=500 --kafka fetch.wait.max.ms=10 --kafka linger.ms=1 2>"$out/gateway.err" &
gateway_pid=$!
port=""
for _ in $(seq 1 600); do  # at most 60 s: the port it listens on, then its reply partitions
  port=${port:-$(sed -n 's/.*gateway, health and metrics on .* port \([0-9]*\).*/\1/p' "$out/gateway.err" | head -1)}
  [ -n "$port" ] && curl -s "127.0.0.1:$port/ready" | grep -q '"serving"' && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the gateway did not start:"; cat "$out/gateway.err"; exit 1; }
head -1 "$out/inputs.jsonl" >"$out/image.json"
echo "   curl -d @image.json http://127.0.0.1:$port/v1/pipelines/digits/invoke"
curl -s -w '\n%{http_code}\n' --max-time 60 -d @"$out/image.json" "http://127.0.0.1:$port/v1/pipelines/digits/invoke" \
  >"$out/http-answer.txt"
python3 - "$out/http-answer.txt" "$out/labels.json" <<'PY'
import json, sys
body, status = open(sys.argv[1]).read().strip().rsplit("\n", 1)
answer, label = json.loads(body), json.load(open(sys.argv[2]))[0]
print(f"   HTTP {status}: {body[:150]}…")
if status != "200" or answer["status"] != "ok":
    sys.exit(f"expected HTTP 200 and an ok response, got {status}: {body}")
print(f"   true {label}  answered {answer['output']['digit']}  (capture {answer['capture']}, request {answer['request_id']})")
PY
kill -TERM "$gateway_pid" "$worker_pid"; wait "$gateway_pid" "$worker_pid"; gateway_pid="" worker_pid=""
echo
echo "== stopping the broker"
kill -TERM "$broker_pid"; wait "$broker_pid"; broker_pid=""
echo "   done. KEEP=1 make demo keeps the store: sluice runs --store DIR show RUN_ID --dot | dot -Tsvg > run.svg"
