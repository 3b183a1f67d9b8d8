"""Produces one record per stdin line with Python's confluent-kafka: the line is KEY<TAB>VALUE (or just VALUE,
without a key), both sent as UTF-8 bytes as they are. Exits 0 when every record is acknowledged.

usage: python3 produce_lines.py BOOTSTRAP TOPIC
"""
import sys

from confluent_kafka import Producer

bootstrap, topic = sys.argv[1], sys.argv[2]
producer = Producer({"bootstrap.servers": bootstrap, "socket.nagle.disable": True, "linger.ms": 1})
failures = []
for line in sys.stdin.read().splitlines():
    key, _, value = line.partition("\t") if "\t" in line else ("", "", line)
    producer.produce(topic, value=value.encode(), key=key.encode() if key else None,
                     on_delivery=lambda error, _: error and failures.append(error))
remaining = producer.flush(30)
sys.exit(0 if remaining == 0 and not failures else 1)
