#!/usr/bin/env bash
# The materializer against a backlog: RUNS runs of text-stats lineage (9 events each, one lineage record v2 per run;
# default 111112, about 1M events) produced to `sluice.lineage` on the embedded broker, spread over PARTITIONS
# partitions (the mock keeps at most 5 MiB per partition), then one `sluice materialize` started on an empty store and
# timed until it has read every event. Prints events/s, and the materializer's CPU time, page faults and bytes written
# per event.
# Stops everything it started, by PID; bounded by TIMEOUT
# seconds (default 600).
# usage: scripts/materialize-benchmark.sh   (env: RUNS, PARTITIONS=128, SLUICE, BENCH, TIMEOUT, and ARGS: more
# `sluice materialize` flags, e.g. ARGS="--batch-size 32768"; PERF=FILE: a system-wide `perf record -g` of the first
# 8 seconds of the fold into FILE; SHARDS=N: N materializers with `--shard I/N`, each with a store of its own, timed
# together and their CPU summed)
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-.build/release/sluice}
BENCH=${BENCH:-.build/release/lineage-benchmark}
RUNS=${RUNS:-111112}
PARTITIONS=${PARTITIONS:-128}
TIMEOUT=${TIMEOUT:-600}
SHARDS=${SHARDS:-1}
out=$(mktemp -d)
source scripts/started-processes.sh
cleanup() {
  stop_started
  rm -rf "$out"
}
trap cleanup EXIT

"$SLUICE" broker --topic "sluice.lineage:$PARTITIONS" >"$out/broker.out" 2>"$out/broker.err" &
started+=($!)
for _ in $(seq 1 100); do [ -s "$out/broker.out" ] && break; sleep 0.1; done
brokers=$(head -1 "$out/broker.out")
timeout "$TIMEOUT" "$BENCH" "$RUNS" --produce "$brokers"
events=$((RUNS * 9))

materializers=()
for ((shard = 0; shard < SHARDS; shard++)); do
  shard_args=()
  [ "$SHARDS" -gt 1 ] && shard_args=(--shard "$shard/$SHARDS")
  "$SLUICE" materialize --brokers "$brokers" --store "$out/store$shard" --http 127.0.0.1:0 "${shard_args[@]}" \
    --kafka fetch.wait.max.ms=10 ${ARGS:-} >"$out/materialize$shard.out" 2>"$out/materialize$shard.err" &
  started+=($!)
  materializers+=($!)
done
# Summed over the materializers, from /proc: a field of stat, or a line of io.
sum_stat() { for pid in "${materializers[@]}"; do awk "{print \$$1}" "/proc/$pid/stat"; done | awk '{s += $1} END {print s}'; }
# Their CPU time so far (user and system, in clock ticks): steadier than the wall clock on a shared machine.
cpu_ticks() { echo $(($(sum_stat 14) + $(sum_stat 15))); }
system_ticks() { sum_stat 15; }
minor_faults() { sum_stat 10; }
# Bytes handed to write(2) and pwrite(2) so far: the segments, the index and SQLite's temporary files.
written_bytes() { for pid in "${materializers[@]}"; do awk '/^wchar/ {print $2}' "/proc/$pid/io"; done | awk '{s += $1} END {print s}'; }
ports=()
for ((shard = 0; shard < SHARDS; shard++)); do
  port=""
  for _ in $(seq 1 300); do
    port=$(grep -o 'port [0-9]*' "$out/materialize$shard.err" | head -1 | cut -d' ' -f2 || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "materializer $shard did not start:"; cat "$out/materialize$shard.err"; exit 1; }
  ports+=("$port")
done
health() { for port in "${ports[@]}"; do curl -s --max-time 2 "http://127.0.0.1:$port/health" || echo '{}'; done; }
# Polled without starting a process, which on two cores takes CPU from the materializer (a curl, a subshell and a
# sleep five times a second took about 5 % of the machine): /health through bash's /dev/tcp, and the pause a read
# with a timeout on a pipe that never gets data.
exec 9<> <(:)
pause() { read -r -t "$1" -u 9 || true; }
events_read=0
read_events() {
  local status port
  events_read=0
  for port in "${ports[@]}"; do
    status=""
    exec 8<>"/dev/tcp/127.0.0.1/$port" || continue
    printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&8
    read -r -d '' -t 2 -u 8 status || true
    exec 8<&-
    if [[ $status =~ \"events\":([0-9]+) ]]; then events_read=$((events_read + BASH_REMATCH[1])); fi
  done
}
# The clock starts at the first event read (after the group has formed), and stops when the last one is.
deadline=$((SECONDS + TIMEOUT))
read_events
while [ "$events_read" -eq 0 ] && [ $SECONDS -lt $deadline ]; do pause 0.05; read_events; done
start=$EPOCHREALTIME
cpu_start=$(cpu_ticks)
system_start=$(system_ticks)
faults_start=$(minor_faults)
written_start=$(written_bytes)
if [ -n "${PERF:-}" ]; then perf record -a -g -o "$PERF" -- sleep 8 >/dev/null 2>&1 & started+=($!); fi
while [ "$events_read" -lt "$events" ] && [ $SECONDS -lt $deadline ]; do pause 0.2; read_events; done
end=$EPOCHREALTIME
cpu_end=$(cpu_ticks)
system_end=$(system_ticks)
faults_end=$(minor_faults)
written_end=$(written_bytes)
read=$events_read
echo "segments: $(du -sbc "$out"/store*/runs | tail -1 | cut -f1) bytes, index: $(du -sb "$out"/store*/index.sqlite* | awk '{s += $1} END {print s}') bytes"
echo "materializer CPU: $(python3 -c "print(round(($cpu_end - $cpu_start) / $(getconf CLK_TCK) * 1e6 / $read, 2))") µs per event ($(python3 -c "print(round(($system_end - $system_start) / $(getconf CLK_TCK) * 1e6 / $read, 2))") in the kernel), $(((faults_end - faults_start) / (read / 1000))) page faults per 1000 events, $(((written_end - written_start) / read)) bytes written per event"
echo "$read of $events events materialized: $(python3 -c "print(round($read / ($end - $start)))") events/s over $PARTITIONS partitions in $SHARDS process(es) ($(health))"
