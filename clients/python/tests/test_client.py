"""The Python client against real processes: `sluice broker` and a `sluice worker` serving text-stats.

SLUICE_BIN names the `sluice` executable (Sluice's tests set it). Run: python3 -m unittest discover clients/python/tests
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from concurrent.futures import wait

from confluent_kafka import Producer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sluice_client import (  # noqa: E402
    AsyncSluiceClient, SluiceClient, SluiceDeliveryError, SluiceError, SluiceTimeout)

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
        producer.produce("text-stats.responses", json.dumps(duplicate).encode(), partition=self.client.reply_partition,
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


    def test_each_client_reads_only_the_reply_partition_it_names(self):
        # Requests with different keys land on different partitions of the requests topic; every response comes
        # back on this client's reply partition, the only one it reads.
        with SluiceClient(brokers, "text-stats", reply_partition=2, timeout=60) as client:
            self.assertEqual(client.reply_partition, 2)
            futures = [client.submit({"text": "x " * index}, key=f"key-{index}") for index in range(1, 9)]
            self.assertEqual([future.result(60).output["tokens"] for future in futures], list(range(1, 9)))
        self.assertIn(self.client.reply_partition, range(4))
        with self.assertRaises(SluiceError) as raised:
            SluiceClient(brokers, "text-stats", reply_partition=4)
        self.assertEqual(raised.exception.code, "unknown_partition")


class AsyncTests(unittest.TestCase):
    def test_asyncio_calls_run_side_by_side(self):
        async def main():
            async with AsyncSluiceClient(brokers, "text-stats", timeout=60) as client:
                outputs = await asyncio.gather(*(client.call({"text": "w " * index}) for index in range(1, 21)))
                with self.assertRaises(SluiceError) as raised:
                    await client.call({"text": 42})
                return outputs, raised.exception.code

        outputs, code = asyncio.run(main())
        self.assertEqual([output["tokens"] for output in outputs], list(range(1, 21)))
        self.assertEqual(code, "invalid_input")

    def test_an_unstarted_client_says_so(self):
        with self.assertRaises(SluiceError) as raised:
            AsyncSluiceClient(brokers, "text-stats").submit({"text": "a"})
        self.assertEqual(raised.exception.code, "not_started")


class TimeoutTests(unittest.TestCase):
    def test_no_worker_means_a_timeout(self):
        with SluiceClient(brokers, "idle", timeout=1) as client:
            started = time.monotonic()
            with self.assertRaises(SluiceTimeout) as raised:
                client.call({"text": "anyone?"}, request_id=f"idle-{uuid.uuid4()}")
            self.assertGreaterEqual(time.monotonic() - started, 1)
            self.assertEqual(raised.exception.code, "timeout")

    def test_a_request_kafka_does_not_take_fails_at_once(self):
        # A broker of its own, stopped once the client is connected: the request cannot be delivered, and the call
        # fails when librdkafka gives it up (message.timeout.ms), long before the call's own timeout.
        own = start(["broker", "--topic", "gone.requests:1", "--topic", "gone.responses:1"])
        address = own.stdout.readline().decode().strip()
        client = SluiceClient(address, "gone", timeout=120, config={"message.timeout.ms": 2000, "log_level": 0})
        own.terminate()
        own.wait(30)
        started = time.monotonic()
        with self.assertRaises(SluiceDeliveryError) as raised:
            client.call({"text": "lost"})
        self.assertLess(time.monotonic() - started, 60)
        self.assertEqual(raised.exception.code, "delivery_failed")
        client.close()

    def test_a_missing_reply_topic_is_refused(self):
        with self.assertRaises(SluiceError) as raised:
            SluiceClient(brokers, "no-such-pipeline")
        self.assertEqual(raised.exception.code, "unknown_topic")


class PackageTests(unittest.TestCase):
    project = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

    def test_the_package_type_checks_strictly(self):
        package = os.path.join(self.project, "sluice_client")
        checked = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", package],
                                 capture_output=True, text=True, timeout=300)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

    def test_pip_installs_it_with_its_type_marker(self):
        # Into a directory of its own, then imported from outside the repository: what `pip install ./clients/python`
        # gives a user (confluent-kafka, its one dependency, is already installed here).
        with tempfile.TemporaryDirectory() as directory:
            # Built from a copy: pip builds in place, and the repository stays as it is.
            project = shutil.copytree(self.project, os.path.join(directory, "project"),
                                      ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
            target = os.path.join(directory, "site")
            installed = subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, project],
                capture_output=True, text=True, timeout=300)
            self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
            found = subprocess.run(
                [sys.executable, "-c", "import os, sluice_client; print(os.path.dirname(sluice_client.__file__))"],
                capture_output=True, text=True, cwd=directory, env=dict(os.environ, PYTHONPATH=target), timeout=60,
                check=True)
            location = found.stdout.strip()
            self.assertEqual(location, os.path.join(target, "sluice_client"))
            self.assertTrue(os.path.exists(os.path.join(location, "py.typed")))


if __name__ == "__main__":
    unittest.main()
