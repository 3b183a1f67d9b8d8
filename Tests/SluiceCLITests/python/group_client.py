"""A foreign client for `sluice broker`: Python's confluent-kafka, speaking only Kafka.

Produces COUNT records with keys and headers to TOPIC, then reads them with two consumers in one group, which must
split the partitions and together read every record exactly once. Prints one JSON line with what happened; exits 0
when everything checks out, 1 otherwise. Bounded: gives up after 90 seconds.

usage: python3 group_client.py BOOTSTRAP TOPIC COUNT
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 90
common = {"bootstrap.servers": bootstrap, "socket.nagle.disable": True}
consumer_settings = dict(common, **{
    "group.id": f"python-{topic}", "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10,
    "session.timeout.ms": 6000, "heartbeat.interval.ms": 200,
})

assigned = {"a": [], "b": []}


def tracker(name):
    def on_assign(consumer, partitions):
        assigned[name] = sorted(p.partition for p in partitions)
    return on_assign


members = {}
for name in ("a", "b"):
    members[name] = Consumer(consumer_settings)
    members[name].subscribe([topic], on_assign=tracker(name))
    # Let the first member settle before the second joins, so the group has a real rebalance.
    while not assigned[name] and time.monotonic() < deadline:
        for member in members.values():
            member.poll(0.05)

while (not assigned["a"] or not assigned["b"]) and time.monotonic() < deadline:
    for member in members.values():
        member.poll(0.05)

producer = Producer(common)
for i in range(count):
    producer.produce(topic, key=f"k{i}", value=f"v{i}", headers={"sluice-request-id": f"r{i}"})
producer.flush(30)

seen = {"a": [], "b": []}
while sum(len(v) for v in seen.values()) < count and time.monotonic() < deadline:
    for name, member in members.items():
        record = member.poll(0.05)
        if record is None or record.error():
            continue
        headers = dict(record.headers() or [])
        seen[name].append((record.value().decode(), headers.get("sluice-request-id", b"").decode()))

for member in members.values():
    member.close()

values = [value for records in seen.values() for value, _ in records]
report = {
    "assigned": assigned,
    "consumed": {name: len(records) for name, records in seen.items()},
    "distinct": len(set(values)),
    "duplicates": len(values) - len(set(values)),
    "headers_ok": all(value[1:] == request_id[1:] for records in seen.values() for value, request_id in records),
}
ok = (report["distinct"] == count and report["duplicates"] == 0 and report["headers_ok"]
      and assigned["a"] and assigned["b"] and not set(assigned["a"]) & set(assigned["b"]))
print(json.dumps(report))
sys.exit(0 if ok else 1)
