"""Reads a whole topic with Python's confluent-kafka and prints one JSON line per message:
{"partition", "offset", "timestamp", "key", "headers", "value", "size"} (value parsed as JSON when it is JSON, else
a string; null for a tombstone; a value over 64 KiB is shown as its first 64 bytes, as a string; size is the value's
length in bytes). Stops when every partition has been read to the high watermark it had at start,
or after TIMEOUT seconds (default 30).

usage: python3 read_topic.py BOOTSTRAP TOPIC [TIMEOUT]
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 30
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                     "enable.auto.commit": False, "socket.nagle.disable": True, "fetch.wait.max.ms": 10})
metadata = consumer.list_topics(topic, timeout=10)
ends = {}
assignment = []
for partition in metadata.topics[topic].partitions:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    if high > low:
        ends[partition] = high
        assignment.append(TopicPartition(topic, partition, low))
consumer.assign(assignment)
deadline = time.monotonic() + timeout
while ends and time.monotonic() < deadline:
    message = consumer.poll(0.2)
    if message is None or message.error():
        continue
    raw = message.value()
    try:
        value = json.loads(raw) if raw is not None and len(raw) <= 65536 else None
    except ValueError:
        value = raw.decode(errors="replace")
    if raw is not None and len(raw) > 65536:
        value = raw[:64].decode(errors="replace")
    print(json.dumps({
        "partition": message.partition(), "offset": message.offset(), "timestamp": message.timestamp()[1],
        "key": message.key().decode(errors="replace") if message.key() is not None else None,
        "headers": {name: (v.decode(errors="replace") if v is not None else None)
                    for name, v in (message.headers() or [])},
        "value": value, "size": len(raw) if raw is not None else None,
    }), flush=True)
    if message.offset() + 1 >= ends.get(message.partition(), 0):
        ends.pop(message.partition(), None)
consumer.close()
sys.exit(0 if not ends else 1)
