"""The Python client against real processes: `sluice broker` and a `sluice worker` serving text-stats.

SLUICE_BIN names the `sluice` executable (Sluice's tests set it). Run: python3 -m unittest discover clients/python/tests
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from concurrent.futures import wait

from confluent_kafka import Producer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sluice_client import SluiceClient, SluiceError, SluiceTimeout  # noqa: E402

SLUICE = os.environ.get("SLUICE_BIN", "sluice")
processes = []
brokers = None


def start(arguments):
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([SLUICE] + arguments, stdout=subprocess.PIPE, stderr=log)
    processes.append((process, log))
    return process


def setUpModule():
    global brokers
    broker = start(["broker", "--topic", "text-stats.requests:4", "--topic", "text-stats.responses:4",
                    "--topic", "text-stats.dlq:1", "--topic", "sluice.lineage:4",
                    "--topic", "idle.requests:1", "--topic", "idle.responses:1"])
    brokers = broker.stdout.readline().decode().strip()
    if not brokers:
        raise RuntimeError("sluice broker did not print its address")
    start(["worker", "--brokers", brokers, "--pipeline", "text-stats", "--capture", "BATCH",
           "--kafka", "fetch.wait.max.ms=10", "--kafka", "session.timeout.ms=6000"])


def tearDownModule():
    # Stops what this module started, by PID: SIGTERM, then SIGKILL after 30 s.
    for process, log in reversed(processes):
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class ClientTests(unittest.TestCase):
    def setUp(self):
        # The first call waits for the worker to join its group; later ones are quick.
        self.client = SluiceClient(brokers, "text-stats", config={"socket.nagle.disable": True}, timeout=60)

    def tearDown(self):
        self.client.close()

    def test_a_call_returns_the_pipelines_output(self):
        output = self.client.call({"text": "hello big world"})
        self.assertEqual(output, {"tokens": 3, "first": "hello", "last": "world"})
        response = self.client.submit({"text": "one"}, request_id="python-1").result(60)
        self.assertEqual(response.request_id, "python-1")
        self.assertEqual(response.capture, "BATCH")
        self.assertRegex(response.run_id, "^[0-9a-f]{32}$")
        self.assertIsNone(response.traceparent)
        # A worker that does not trace answers with the request's own trace context.
        traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        self.assertEqual(self.client.submit({"text": "traced"}, traceparent=traceparent).result(60).traceparent,
                         traceparent)

    def test_an_error_response_is_an_exception_with_its_code(self):
        with self.assertRaises(SluiceError) as raised:
            self.client.call({"text": 42})
        self.assertEqual(raised.exception.code, "invalid_input")
        self.assertIn("text", raised.exception.message)
        with self.assertRaises(SluiceError) as raised:
            self.client.call(b"not json")
        self.assertEqual(raised.exception.code, "invalid_input")

    def test_a_request_past_its_deadline_is_not_run(self):
        with self.assertRaises(SluiceError) as raised:
            self.client.call({"text": "too late"}, deadline=-1)
        self.assertEqual(raised.exception.code, "deadline_exceeded")
        self.assertIsNone(raised.exception.response["run_id"])
        # A deadline in the future is met.
        self.assertEqual(self.client.call({"text": "in time"}, deadline=60)["tokens"], 2)

    def test_many_calls_at_once_each_get_their_own_response(self):
        futures = {index: self.client.submit({"text": " ".join(["w"] * index)}) for index in range(1, 101)}
        done, not_done = wait(futures.values(), timeout=120)
        self.assertFalse(not_done)
        for index, future in futures.items():
            self.assertEqual(future.result().output["tokens"], index)

    def test_a_duplicate_response_is_dropped(self):
        self.client.submit({"text": "once"}, request_id="python-duplicate").result(60)
        # What a worker that died after answering would send again: the same request id.
        producer = Producer({"bootstrap.servers": brokers})
        duplicate = {"request_id": "python-duplicate", "pipeline": "text-stats", "status": "ok",
                     "output": {"tokens": 1, "first": "once", "last": "once"}, "error": None, "run_id": None,
                     "capture": "BATCH", "duration_ms": 0}
        producer.produce("text-stats.responses", json.dumps(duplicate).encode(),
                         headers=[("sluice-request-id", "python-duplicate"), ("sluice-status", "ok")])
        producer.flush(10)
        deadline = time.monotonic() + 30
        while self.client.dropped_responses == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.client.dropped_responses, 1)
        # An id may not wait twice at once; a new one still works.
        waiting = self.client.submit({"text": "twice"}, request_id="python-twice")
        with self.assertRaises(ValueError):
            self.client.submit({"text": "twice"}, request_id="python-twice")
        self.assertEqual(waiting.result(60).output["tokens"], 1)


class TimeoutTests(unittest.TestCase):
    def test_no_worker_means_a_timeout(self):
        with SluiceClient(brokers, "idle", timeout=1) as client:
            started = time.monotonic()
            with self.assertRaises(SluiceTimeout) as raised:
                client.call({"text": "anyone?"}, request_id=f"idle-{uuid.uuid4()}")
            self.assertGreaterEqual(time.monotonic() - started, 1)
            self.assertEqual(raised.exception.code, "timeout")

    def test_a_missing_reply_topic_is_refused(self):
        with self.assertRaises(SluiceError) as raised:
            SluiceClient(brokers, "no-such-pipeline")
        self.assertEqual(raised.exception.code, "unknown_topic")


if __name__ == "__main__":
    unittest.main()
