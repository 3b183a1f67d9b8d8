#!/usr/bin/env bash
# Allocations per request of one kind of worker thread, and where they are made: the referee's embedded broker and
# load generator, one `sluice worker` with scripts/allocation-sampler.c preloaded, N text-stats requests at window W.
# Counts repeat exactly from run to run (CPU time on a shared machine does not): the measure docs/benchmarks.md uses
# for allocation work.
#
#   cp -r ../shared/bench /tmp/bench && chmod -R u+w /tmp/bench && make -C /tmp/bench mockbroker loadgen
#   scripts/allocations.sh MEMORY 100000 .build/release/sluice
#   THREAD=sluice-lineage scripts/allocations.sh REALTIME 30000 .build/release/sluice
#
# Environment: THREAD (part of the thread name: default-qos, the cooperative pool; sluice-kcons, sluice-kprod,
# sluice-lineage, rdk:broker), BENCH (default /tmp/bench), W (default 8192), TOP (call sites shown, default 25).
set -euo pipefail
CAPTURE=${1:?usage: allocations.sh CAPTURE N SLUICE}
N=${2:?count}
SLUICE=${3:?sluice binary}
PORT=18196
. "$(dirname "$0")/referee-worker.sh"

gcc -O2 -shared -fPIC -o "$WORK/sampler.so" "$(dirname "$0")/allocation-sampler.c" -ldl
referee_start "$WORK" "$PORT" "$CAPTURE" throughput -- env SAMPLER_THREAD="${THREAD:-default-qos}" \
  SAMPLER_OUT="$WORK" LD_PRELOAD="$WORK/sampler.so" "$SLUICE"
kill -USR2 "$WORKER"
timeout 120 "$BENCH/loadgen" -q -b "$BOOTSTRAP" -n "$N" -w "$W" -p throughput -T 100 | grep '^RESULT' | cut -c1-100
kill -USR2 "$WORKER"
sleep 0.5
python3 - "$WORK" "$N" "${TOP:-25}" <<'PY'
import collections, subprocess, sys
work, requests, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mappings, bases = [], {}
for line in open(f"{work}/maps.txt"):
    fields = line.split()
    if len(fields) < 6:
        continue
    start, end = (int(x, 16) for x in fields[0].split("-"))
    offset, path = int(fields[2], 16), fields[5]
    bases[path] = min(bases.get(path, start - offset), start - offset)
    if "x" in fields[1]:
        mappings.append((start, end, path))
stacks = []
for line in open(f"{work}/stacks.txt"):
    fields = line.split()
    stacks.append((int(fields[0]), [int(x, 16) for x in fields[1:] if x not in ("(nil)", "0x0")]))
by_file = collections.defaultdict(set)
for _, frames in stacks:
    for address in frames:
        for start, end, path in mappings:
            if start <= address < end:
                by_file[path].add(address)
                break
names = {}
for path, addresses in by_file.items():
    addresses = sorted(addresses)
    lines = subprocess.run(["addr2line", "-f", "-e", path] + [hex(a - bases[path] - 1) for a in addresses],
                           capture_output=True, text=True).stdout.split("\n")
    names.update({a: lines[2 * i] for i, a in enumerate(addresses) if 2 * i < len(lines)})
mangled = sorted(set(names.values()))
demangled = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(mangled),
                           capture_output=True, text=True).stdout.split("\n")
readable = dict(zip(mangled, demangled))
allocator = ("swift_slowAlloc", "swift_allocObject", "swift_allocBox")
sites = collections.Counter()
for count, frames in stacks:
    shown = [readable.get(names.get(a, "?"), "?")[:80] for a in frames]
    shown = [name for name in shown if not name.startswith(allocator)]
    sites[" < ".join(shown[:4])] += count
total = sum(sites.values())
print(f"allocations per request on the sampled threads: {8 * total / requests:.1f} (1 in 8 sampled)")
for site, count in sites.most_common(top):
    print(f"{8 * count / requests:6.2f}  {site}")
PY
