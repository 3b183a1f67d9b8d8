#!/usr/bin/env bash
# The demo so far: the embedded broker as a process, used by a client nobody here wrote (Python confluent-kafka).
# Stops everything it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-.build/debug/sluice}
out=$(mktemp -d)
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then kill -TERM "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$out"
}
trap cleanup EXIT

echo "== starting the embedded broker: $SLUICE broker --topic demo:4"
"$SLUICE" broker --topic demo:4 >"$out/broker.out" 2>"$out/broker.err" &
broker_pid=$!
for _ in $(seq 1 100); do [ -s "$out/broker.out" ] && break; sleep 0.1; done
bootstrap=$(head -1 "$out/broker.out")
[ -n "$bootstrap" ] || { echo "the broker did not start:"; cat "$out/broker.err"; exit 1; }
echo "   bootstrap servers: $bootstrap"

echo "== topics (sluice topics list --brokers $bootstrap)"
"$SLUICE" topics list --brokers "$bootstrap" | sed 's/^/   /'

echo "== a Python confluent-kafka client: 1000 records, then two consumers of one group read them"
timeout 120 python3 Tests/SluiceCLITests/python/group_client.py "$bootstrap" demo 1000 | sed 's/^/   /'

echo "== stopping the broker (SIGTERM)"
kill -TERM "$broker_pid"; wait "$broker_pid"; broker_pid=""
echo "   stopped. The worker, the pipelines and the lineage store come with issues 4-6 (see README)."
