"""A foreign client for `sluice worker`: Python's confluent-kafka following docs/protocol.md only.

Reads request specs, one JSON object per line of standard input: {"id", "value" (a JSON value; or "raw": a string
sent as is; or "parts": [[string, count], ...], the strings repeated and joined, for large values), "headers"
(optional object), "key" (optional)}. Produces each to REQUESTS with `sluice-request-id` and
`sluice-reply-to: RESPONSES` (unless the spec's headers say otherwise), then reads RESPONSES until every id has a
response or TIMEOUT seconds pass, and then on to the end of every partition after a settling second, so that a
duplicate produced after the first answer is seen too. Prints one JSON line per response received, duplicates
included, in arrival order: {"id", "headers", "value" (the parsed response), "key", "timestamp", "partition"}; then exits 0 if
every request was answered, 1 otherwise.

usage: python3 request_reply.py BOOTSTRAP REQUESTS RESPONSES [TIMEOUT]
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, requests_topic, responses_topic = sys.argv[1], sys.argv[2], sys.argv[3]
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60
common = {"bootstrap.servers": bootstrap, "socket.nagle.disable": True}

specs = [json.loads(line) for line in sys.stdin if line.strip()]

# Read the responses topic from its current end: assign every partition at the high watermark first.
consumer = Consumer(dict(common, **{"group.id": f"client-{uuid.uuid4()}", "enable.auto.commit": False,
                                    "fetch.wait.max.ms": 10}))
metadata = consumer.list_topics(responses_topic, timeout=10)
partitions = list(metadata.topics[responses_topic].partitions)
assignment = []
for partition in partitions:
    _, high = consumer.get_watermark_offsets(TopicPartition(responses_topic, partition), timeout=10)
    assignment.append(TopicPartition(responses_topic, partition, high))
consumer.assign(assignment)

producer = Producer(dict(common, **{"linger.ms": 1, "message.max.bytes": 10_000_000}))
for spec in specs:
    headers = {"sluice-request-id": spec["id"], "sluice-reply-to": responses_topic}
    headers.update(spec.get("headers", {}))
    headers = [(name, value) for name, value in headers.items() if value is not None]
    if "parts" in spec:
        value = b"".join(text.encode() * count for text, count in spec["parts"])
    elif "raw" in spec:
        value = spec["raw"].encode()
    else:
        value = json.dumps(spec["value"]).encode()
    producer.produce(requests_topic, value=value, key=spec.get("key"), headers=headers)
producer.flush(10)

wanted = {spec["id"] for spec in specs}
seen = set()
positions = {}


def take(message):
    positions[message.partition()] = message.offset() + 1
    headers = {name: value.decode() for name, value in (message.headers() or [])}
    body = json.loads(message.value())
    seen.add(headers.get("sluice-request-id"))
    print(json.dumps({"id": headers.get("sluice-request-id"), "headers": headers, "value": body,
                      "key": message.key().decode() if message.key() else None,
                      "timestamp": message.timestamp()[1], "partition": message.partition()}), flush=True)


deadline = time.monotonic() + timeout
while wanted - seen and time.monotonic() < deadline:
    message = consumer.poll(0.2)
    if message is not None and not message.error():
        take(message)

# Every id answered: a second answer would have been produced by now. Read on to the ends the partitions have
# after a settling second.
time.sleep(1)
starts = {start.partition: start.offset for start in assignment}
ends = {}
for partition in partitions:
    _, high = consumer.get_watermark_offsets(TopicPartition(responses_topic, partition), timeout=10)
    ends[partition] = high
settle = time.monotonic() + 30
while any(positions.get(p, starts[p]) < end for p, end in ends.items()) and time.monotonic() < settle:
    message = consumer.poll(0.2)
    if message is not None and not message.error():
        take(message)
consumer.close()
sys.exit(0 if not wanted - seen else 1)
