"""Prints the offsets GROUP has committed for TOPIC as one JSON object {"partition": offset}; a partition without a
committed offset is left out.

usage: python3 committed.py BOOTSTRAP GROUP TOPIC
"""
import json
import sys

from confluent_kafka import Consumer, TopicPartition

bootstrap, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
print(json.dumps({str(tp.partition): tp.offset for tp in committed if tp.offset >= 0}))
consumer.close()
