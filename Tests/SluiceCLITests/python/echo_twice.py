"""A stand-in worker that answers every request twice, as a worker killed between producing and committing does:
reads COUNT requests of REQUESTS in a consumer group and produces for each two responses following
docs/protocol.md (output = the request's value) to its reply-to topic. Exits 0 once it answered COUNT, 1 after
TIMEOUT seconds.

usage: python3 echo_twice.py BOOTSTRAP REQUESTS COUNT [TIMEOUT]
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer

bootstrap, requests_topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "echo-twice", "auto.offset.reset": "earliest",
                     "fetch.wait.max.ms": 10})
consumer.subscribe([requests_topic])
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
answered = 0
deadline = time.monotonic() + timeout
while answered < count and time.monotonic() < deadline:
    message = consumer.poll(0.1)
    if message is None or message.error():
        continue
    headers = {name: value.decode() for name, value in (message.headers() or [])}
    request_id = headers["sluice-request-id"]
    response = {"request_id": request_id, "pipeline": "text-stats", "status": "ok",
                "output": json.loads(message.value()), "error": None, "run_id": None, "capture": "MEMORY",
                "duration_ms": 0.1}
    for _ in range(2):
        producer.produce(headers["sluice-reply-to"], value=json.dumps(response).encode(), key=message.key(),
                         headers=[("sluice-request-id", request_id), ("sluice-status", "ok")])
    producer.flush(10)
    answered += 1
consumer.close()
sys.exit(0 if answered == count else 1)
