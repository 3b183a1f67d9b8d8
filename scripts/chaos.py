#!/usr/bin/env python3
"""Sluice's chaos suite: real `sluice broker` and `sluice worker` processes, a foreign client (Python's
confluent-kafka), faults from outside. Every scenario is bounded in count and time, stops what it started by PID,
and prints one JSON line:

  {"scenario", "capture", "sent", "answered", "missing", "duplicates", "wrong", ...scenario figures}

`answered` counts ids with at least one response, `duplicates` responses beyond the first of an id, `wrong` responses
whose status, code or output is not what the request calls for. Exit status 1 when a scenario breaks a guarantee of
docs/operations.md: anything missing or wrong anywhere, or a duplicate where the guarantees allow none (hostile input,
a frozen broker), a worker that died or kept requests in flight, a store that lost or doubled a run or differs from
an undisturbed one.

usage: scripts/chaos.py [--small] [--sluice PATH] [SCENARIO ...]
scenarios: hostile kill9 freeze churn materializer (default: all)
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

PIPELINE = "text-stats"
REQUESTS, RESPONSES, DLQ = f"{PIPELINE}.requests", f"{PIPELINE}.responses", f"{PIPELINE}.dlq"
CAPTURES = ["BATCH", "REALTIME", "OFF", "MEMORY"]
# The embedded broker holds a rebalance open for session.timeout.ms - 1 s (docs/operations.md): keep it short here
# (the freeze scenario lengthens it past the freeze, or the frozen broker would expire every session).
SESSION_MS = 3000
WORKER_KAFKA = ["heartbeat.interval.ms=200", "fetch.wait.max.ms=10", "linger.ms=1", "socket.nagle.disable=true"]


class Processes:
    """Processes this run started; each is stopped by its PID, and all of them at exit."""

    def __init__(self, sluice, workdir):
        self.sluice, self.workdir, self.started = sluice, workdir, []

    def start(self, name, arguments):
        err = open(os.path.join(self.workdir, f"{name}-{len(self.started)}.err"), "w+")
        process = subprocess.Popen([self.sluice] + arguments, stdout=subprocess.PIPE, stderr=err, text=True)
        process.err_path = err.name
        self.started.append(process)
        return process

    def stop_all(self):
        for process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start_broker(processes, partitions, lineage_partitions=8):
    broker = processes.start("broker", ["broker", "--topic", f"{REQUESTS}:{partitions}",
                                        "--topic", f"{RESPONSES}:{partitions}", "--topic", f"{DLQ}:8",
                                        "--topic", f"sluice.lineage:{lineage_partitions}"])
    return broker, broker.stdout.readline().strip()


class Service:
    """A `sluice worker` or `sluice materialize` process with `--http 127.0.0.1:0`, and its /health and /metrics."""

    def __init__(self, processes, name, arguments):
        self.started_at = time.monotonic()
        self.process = processes.start(name, arguments + ["--http", "127.0.0.1:0"])
        self.port = None
        deadline = time.monotonic() + 30
        while self.port is None and time.monotonic() < deadline and self.process.poll() is None:
            match = re.search(r"health and metrics on .* port (\d+)", open(self.process.err_path).read())
            self.port = int(match.group(1)) if match else None
            time.sleep(0.05)
        if self.port is None:
            raise RuntimeError(f"{name} did not start: {open(self.process.err_path).read()[-2000:]}")

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return None, ""

    def health(self):
        status, body = self.get("/health")
        return json.loads(body) if status else {}

    def wait_until(self, condition, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return time.monotonic()
            time.sleep(0.05)
        return None


class Worker(Service):
    def __init__(self, processes, bootstrap, capture, name, extra=(), session_ms=SESSION_MS):
        settings = WORKER_KAFKA + [f"session.timeout.ms={session_ms}"]
        super().__init__(processes, name, ["worker", "--brokers", bootstrap, "--pipeline", PIPELINE,
                                           "--capture", capture, "--name", name]
                         + [a for setting in settings for a in ("--kafka", setting)] + list(extra))

    def answered(self):
        _, body = self.get("/metrics")
        match = re.search(r"sluice_request_duration_seconds_count\{[^}]*\} (\d+)", body)
        return int(match.group(1)) if match else 0

    def commit_refusals(self):
        """Offset commits the group coordinator refused, as librdkafka logged them (COMMITFAIL)."""
        return sum("COMMITFAIL" in line for line in open(self.process.err_path))


class Load:
    """Sends requests at a bounded rate from a thread and reads every response, counting per id."""

    def __init__(self, bootstrap, specs, rate):
        self.bootstrap, self.specs, self.rate = bootstrap, specs, rate
        self.responses = {}  # id -> list of (response value, arrival time)
        self.sent_at = {}
        self.positions = {}
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{uuid.uuid4()}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        partitions = self.consumer.list_topics(RESPONSES, timeout=10).topics[RESPONSES].partitions
        self.assignment = []
        for partition in partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(RESPONSES, partition), timeout=10)
            self.assignment.append(TopicPartition(RESPONSES, partition, high))
        self.consumer.assign(self.assignment)
        self.sender = threading.Thread(target=self.send, daemon=True)

    def send(self):
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "message.max.bytes": 10_000_000})
        start = time.monotonic()
        for index, spec in enumerate(self.specs):
            wait = start + index / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            headers = {"sluice-request-id": spec["id"]}
            headers.update(spec.get("headers", {}))
            self.sent_at[spec["id"]] = time.monotonic()
            while True:
                try:
                    producer.produce(REQUESTS, value=spec["value"], key=spec.get("key"), headers=list(headers.items()))
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(60)

    def run(self, timeout, during=None):
        """Sends everything, calls `during()` meanwhile (in this thread), reads responses until every id is answered
        or `timeout` passes, then reads on to the end of the topic after a settling second."""
        self.sender.start()
        deadline = time.monotonic() + timeout
        action = threading.Thread(target=during, daemon=True) if during else None
        if action:
            action.start()
        wanted = {spec["id"] for spec in self.specs}
        while time.monotonic() < deadline and (len(self.responses) < len(wanted) or self.sender.is_alive()
                                                or (action and action.is_alive())):
            self.poll()
        time.sleep(1)
        ends = {p: self.consumer.get_watermark_offsets(TopicPartition(RESPONSES, p), timeout=10)[1]
                for p in (tp.partition for tp in self.assignment)}
        starts = {tp.partition: tp.offset for tp in self.assignment}
        settle = time.monotonic() + 30
        while time.monotonic() < settle and any(self.positions.get(p, starts[p]) < end for p, end in ends.items()):
            self.poll()
        self.consumer.close()

    def poll(self):
        message = self.consumer.poll(0.1)
        if message is None or message.error():
            return
        self.positions[message.partition()] = message.offset() + 1
        headers = dict((name, value.decode()) for name, value in (message.headers() or []))
        request_id = headers.get("sluice-request-id")
        self.responses.setdefault(request_id, []).append((json.loads(message.value()), time.monotonic()))

    def report(self, scenario, capture, check):
        """Counts with `check(spec, response) -> bool` telling a right response from a wrong one."""
        missing = [s["id"] for s in self.specs if s["id"] not in self.responses]
        duplicates = sum(len(r) - 1 for r in self.responses.values())
        wrong = [s["id"] for s in self.specs if s["id"] in self.responses
                 and not all(check(s, value) for value, _ in self.responses[s["id"]])]
        latencies = sorted(self.responses[s["id"]][0][1] - self.sent_at[s["id"]] for s in self.specs
                           if s["id"] in self.responses and s["id"] in self.sent_at)
        p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else None
        return {"scenario": scenario, "capture": capture, "sent": len(self.specs), "answered": len(self.responses),
                "missing": len(missing), "duplicates": duplicates, "wrong": len(wrong),
                "p99_seconds": round(p99, 3) if p99 is not None else None,
                "examples": {"missing": missing[:3], "wrong": wrong[:3]}}


# MARK: - Requests

def valid(index):
    text = f"word{index} and more {index}"
    return {"id": f"ok-{index}", "value": json.dumps({"text": text}).encode(), "key": f"k{index % 13}",
            "expect": ("ok", {"tokens": 4, "first": f"word{index}", "last": str(index)})}


def hostile(index):
    """The hostile corpus: (id suffix, value bytes, headers, expected code). Sizes near the limits included."""
    text = lambda n: b'{"text": "' + b"ab " * n + b'"}'
    corpus = [
        ("not-json", b"{not json", {}, "invalid_input"),
        ("wrong-type", b'{"text": 42}', {}, "invalid_input"),
        ("missing-member", b'{}', {}, "invalid_input"),
        ("array", b"[1, 2, 3]", {}, "invalid_input"),
        ("invalid-utf8", b'{"text": "\xff\xfe"}', {}, "invalid_input"),
        ("tombstone", None, {}, "invalid_input"),
        ("empty", b"", {}, "invalid_input"),
        ("deep", b"[" * 10_000 + b"]" * 10_000, {}, "invalid_input"),
        ("bad-deadline", b'{"text": "a"}', {"sluice-deadline": "soon"}, "invalid_input"),
        ("expired", b'{"text": "a"}', {"sluice-deadline": "1000"}, "deadline_exceeded"),
        ("foreign-reply", b'{"text": "a"}', {"sluice-reply-to": "somebody.else"}, "reply_to_not_allowed"),
        ("over-limit", text(700_000), {}, "payload_too_large"),
        ("just-over-limit", b'{"text": "' + b"x" * (1 << 20) + b'"}', {}, "payload_too_large"),
        ("near-limit-invalid", b"{not json " + b"x" * 1_040_000, {}, "invalid_input"),
        ("near-limit-valid", text(340_000), {}, "ok"),
    ]
    name, value, headers, code = corpus[index % len(corpus)]
    return {"id": f"{name}-{index}", "value": value, "headers": headers, "key": f"h{index % 13}",
            "expect": (code, None)}


def check(spec, response):
    code, output = spec["expect"]
    if response.get("request_id") != spec["id"]:
        return False
    if code == "ok":
        return response["status"] == "ok" and (output is None or response["output"] == output)
    return response["status"] == "error" and response["error"]["code"] == code


# MARK: - Scenarios

def scenario_hostile(processes, small):
    """The hostile corpus between valid requests, in every capture mode, one worker with few slots."""
    results = []
    for capture in CAPTURES:
        # Sixteen partitions: the embedded broker keeps 5 MiB of each, and the corpus holds megabyte requests.
        _, bootstrap = start_broker(processes, 16)
        worker = Worker(processes, bootstrap, capture, f"hostile-{capture}", ["--concurrency", "8"])
        worker.wait_until(lambda w: w.health().get("assigned_partitions", 0) > 0)
        count = 15 if small else 300
        specs = []
        for index in range(count):
            specs.append(hostile(index))
            specs += [valid(index * 4 + k) for k in range(4)]
        load = Load(bootstrap, specs, rate=200 if small else 100)
        load.run(timeout=120 if small else 300)
        result = load.report("hostile", capture, check)
        result["worker_alive"] = worker.process.poll() is None
        result["in_flight_after"] = worker.health().get("in_flight")
        results.append(result)
        processes.stop_all()
    return results


def scenario_kill9(processes, small):
    """Workers killed with SIGKILL under load, each once it serves, and restarted: nothing missing; duplicates are
    allowed (what a killed worker answered after its last commit is served again, with its request id, and clients
    drop it), and counted."""
    results = []
    for capture in (["BATCH"] if small else ["BATCH", "REALTIME"]):
        _, bootstrap = start_broker(processes, 8)
        workers = [Worker(processes, bootstrap, capture, f"kill9-{capture}-{i}") for i in range(2)]
        kills = 2 if small else 10
        rate = 800
        specs = [valid(index) for index in range(16000 if small else 60000)]
        load = Load(bootstrap, specs, rate=rate)
        end = time.monotonic() + len(specs) / rate

        def killer():
            for round in range(kills):
                victim = workers[round % 2]
                # Killed while it serves: it has answered requests its commits may not cover yet.
                before = victim.answered()
                victim.wait_until(lambda w: w.answered() > before + 200, timeout=max(1, end - time.monotonic()))
                victim.process.kill()
                victim.process.wait()
                workers[round % 2] = Worker(processes, bootstrap, capture, f"kill9-{capture}-r{round}")

        load.run(timeout=300, during=killer)
        result = load.report("kill9", capture, check)
        result["kills"] = kills
        results.append(result)
        processes.stop_all()
    return results


def scenario_freeze(processes, small):
    """The broker stopped (SIGSTOP) for some seconds under load, then continued: nothing missing, nothing twice.
    Reports how often /health answered 503 meanwhile (records in flight wait for librdkafka's own timeouts, so a
    short freeze fails no delivery and the worker stays live)."""
    results = []
    for capture in (["BATCH"] if small else ["BATCH", "REALTIME"]):
        broker, bootstrap = start_broker(processes, 8)
        frozen = 5 if small else 15
        worker = Worker(processes, bootstrap, capture, f"freeze-{capture}", ["--delivery-stall-seconds", "2"],
                        session_ms=(frozen + 10) * 1000)
        worker.wait_until(lambda w: w.health().get("assigned_partitions", 0) > 0)
        specs = [valid(index) for index in range(1500 if small else 9000)]
        load = Load(bootstrap, specs, rate=300)
        statuses = []

        def freezer():
            time.sleep(1.5)
            broker.send_signal(signal.SIGSTOP)
            end = time.monotonic() + frozen
            while time.monotonic() < end:
                statuses.append(worker.get("/health")[0])
                time.sleep(0.5)
            broker.send_signal(signal.SIGCONT)

        load.run(timeout=180, during=freezer)
        result = load.report("freeze", capture, check)
        result["frozen_seconds"] = frozen
        result["health_503_while_frozen"] = statuses.count(503)
        result["health_after"] = worker.get("/health")[0]
        results.append(result)
        processes.stop_all()
    return results


def scenario_churn(processes, small):
    """Membership churn under load: a second worker joins, a third, the first gets SIGTERM. Reports how long each
    joiner took to own partitions and to serve, and the duplicates the embedded broker's refused commits cause."""
    results = []
    for capture in (["BATCH"] if small else ["BATCH", "REALTIME"]):
        _, bootstrap = start_broker(processes, 8)
        first = Worker(processes, bootstrap, capture, f"churn-{capture}-1")
        first.wait_until(lambda w: w.health().get("assigned_partitions", 0) > 0)
        rate = 1000
        specs = [valid(index) for index in range(20000 if small else 40000)]
        load = Load(bootstrap, specs, rate=rate)
        joins = []
        members = [first]

        def churn():
            for name in ("2", "3"):
                time.sleep(2)
                joiner = Worker(processes, bootstrap, capture, f"churn-{capture}-{name}")
                members.append(joiner)
                owned = joiner.wait_until(lambda w: w.health().get("assigned_partitions", 0) > 0)
                serving = joiner.wait_until(lambda w: w.answered() > 0)
                joins.append({"owns_partitions_after": round(owned - joiner.started_at, 2) if owned else None,
                              "serves_after": round(serving - joiner.started_at, 2) if serving else None})
            first.process.terminate()
            first.process.wait(60)
            joins.append({"first_exit_status": first.process.returncode})

        load.run(timeout=240, during=churn)
        result = load.report("churn", capture, check)
        result["joins"] = joins
        result["commit_refusals"] = sum(member.commit_refusals() for member in members)
        results.append(result)
        processes.stop_all()
    return results


def store_files(root):
    """Every file of a store but its derived index and temporary files, by path: their bytes."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.relpath(os.path.join(directory, name), root)
            if not path.startswith(("tmp", "index.sqlite")):
                files[path] = open(os.path.join(directory, name), "rb").read()
    return files


def stored_runs(root):
    """The runs of the store's segments: their complete lines (a segment may be in the middle of a write)."""
    return [json.loads(line) for path, data in store_files(root).items() if path.endswith(".jsonl")
            for line in data.split(b"\n")[:-1] if line.strip()]


def stored_lines(root):
    """How many complete lines the store's segments hold (cheaper than reading the runs)."""
    return sum(data.count(b"\n") for path, data in store_files(root).items() if path.endswith(".jsonl"))


def start_materializer(processes, bootstrap, store, group):
    return Service(processes, "materialize",
                   ["materialize", "--brokers", bootstrap, "--store", store, "--group", group, "--batch-size", "1024",
                    "--kafka", "fetch.wait.max.ms=10", "--kafka", "session.timeout.ms=6000",
                    "--kafka", "heartbeat.interval.ms=200"])


def scenario_materializer(processes, small):
    """A BATCH worker answers requests; a materializer folding its lineage is killed with SIGKILL at random moments
    and restarted, then catches up. Its store must hold every answered run once and be, byte for byte, the store an
    undisturbed materializer writes from the same topic."""
    import random
    # The embedded broker keeps 5 MiB of a partition: 32 lineage partitions hold the whole run's lineage, so the
    # undisturbed replay reads it all from the start.
    _, bootstrap = start_broker(processes, 8, lineage_partitions=32)
    worker = Worker(processes, bootstrap, "BATCH", "materializer-load")
    worker.wait_until(lambda w: w.health().get("assigned_partitions", 0) > 0)
    specs = [valid(index) for index in range(3000 if small else 12000)]
    load = Load(bootstrap, specs, rate=300)
    killed = os.path.join(processes.workdir, "killed-store")
    undisturbed = os.path.join(processes.workdir, "undisturbed-store")
    kills = 3 if small else 12
    randomness = random.Random(12)

    def killer():
        for _ in range(kills):
            materializer = start_materializer(processes, bootstrap, killed, "chaos-killed")
            # Killed at a random moment of its work: once it owns partitions (the previous one's session has
            # expired and the group joined), within the next 3 s.
            materializer.wait_until(lambda m: m.health().get("assigned_partitions", 0) > 0, timeout=60)
            time.sleep(randomness.uniform(0.0, 3.0))
            materializer.process.kill()
            materializer.process.wait()

    load.run(timeout=300, during=killer)
    result = load.report("materializer", "BATCH", check)
    answered = {value["run_id"] for responses in load.responses.values() for value, _ in responses}
    for store, group in ((killed, "chaos-killed"), (undisturbed, "chaos-undisturbed")):
        materializer = start_materializer(processes, bootstrap, store, group)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and stored_lines(store) < len(answered):
            time.sleep(2)
        time.sleep(1)
        materializer.process.terminate()
        materializer.process.wait(60)
    runs = [run["run_id"] for run in stored_runs(killed)]
    result.update({"kills": kills, "runs_answered": len(answered), "runs_stored": len(set(runs)),
                   "runs_missing_from_store": len(answered - set(runs)), "runs_stored_twice": len(runs) - len(set(runs)),
                   "identical_to_undisturbed": store_files(killed) == store_files(undisturbed)})
    processes.stop_all()
    return [result]


SCENARIOS = {"hostile": scenario_hostile, "kill9": scenario_kill9, "freeze": scenario_freeze, "churn": scenario_churn,
             "materializer": scenario_materializer}
# Where the guarantees allow no duplicate at all.
NO_DUPLICATES = {"hostile", "freeze"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the short form that make test runs")
    parser.add_argument("--sluice", default=os.environ.get("SLUICE", ".build/debug/sluice"))
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs (the directory is printed)")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    arguments = parser.parse_args()
    failed = False
    workdir = tempfile.mkdtemp(prefix="sluice-chaos-")
    if arguments.keep:
        print(f"logs in {workdir}", file=sys.stderr)
    try:
        processes = Processes(os.path.abspath(arguments.sluice), workdir)
        try:
            for name in arguments.scenarios:
                for result in SCENARIOS[name](processes, arguments.small):
                    print(json.dumps(result), flush=True)
                    broken = result["missing"] or result["wrong"] or (name in NO_DUPLICATES and result["duplicates"])
                    broken = broken or result.get("worker_alive") is False or result.get("in_flight_after") not in (0, None)
                    broken = broken or result.get("identical_to_undisturbed") is False
                    broken = broken or result.get("runs_missing_from_store") or result.get("runs_stored_twice")
                    failed = failed or bool(broken)
        finally:
            processes.stop_all()
    finally:
        if not arguments.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
