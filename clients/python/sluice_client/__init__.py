"""Call Sluice pipelines from Python: request-reply over Kafka, following Sluice's wire protocol v1 (docs/protocol.md).

    from sluice_client import SluiceClient, SluiceError

    with SluiceClient("broker-1:9092", "fraud-check") as client:
        verdict = client.call({"amount": 12.5, "currency": "EUR", "country": "DE", "card_present": True, "hour": 14})

One client serves many calls at once, from any thread: ``submit`` returns a ``concurrent.futures.Future``. Responses
are matched by request id on a background thread; a duplicate (a worker that died after answering serves the request
again) and a response to a call that already timed out are dropped and counted.
"""

import json
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

__all__ = ["SluiceClient", "SluiceError", "SluiceTimeout", "Response"]


class SluiceError(Exception):
    """An error response: ``code`` as docs/protocol.md lists them (``invalid_input``, ``deadline_exceeded``,
    ``step_failed``, ... or a step's own), ``message``, the failing ``step`` if any, and the whole ``response``."""

    def __init__(self, code, message, step=None, response=None):
        super().__init__(f"{code}: {message}" + (f" (step {step})" if step else ""))
        self.code = code
        self.message = message
        self.step = step
        self.response = response


class SluiceTimeout(SluiceError, TimeoutError):
    """No response within the call's timeout. The request may still run; its late response is dropped."""

    def __init__(self, request_id, timeout):
        super().__init__("timeout", f"no response to {request_id} within {timeout} s")
        self.request_id = request_id


class Response:
    """A successful response: the pipeline's ``output`` and where it came from. ``traceparent`` is the response's
    W3C trace context header: the worker's span of the request when it traces, else the request's own."""

    def __init__(self, value, traceparent=None):
        self.value = value
        self.traceparent = traceparent
        self.request_id = value.get("request_id")
        self.output = value.get("output")
        self.run_id = value.get("run_id")
        self.capture = value.get("capture")
        self.duration_ms = value.get("duration_ms")

    def __repr__(self):
        return f"Response(request_id={self.request_id!r}, output={self.output!r}, run_id={self.run_id!r})"


class SluiceClient:
    """A client of one pipeline's workers.

    ``bootstrap_servers`` and ``config`` (more librdkafka properties, e.g. SASL) reach the cluster; the topics default
    to the pipeline's (``<pipeline>.requests``, ``<pipeline>.responses``). ``reply_to`` is the topic responses come
    back on: the responses topic, or one whose name starts with it, which a worker accepts (``--allow-reply-prefix``
    widens that). The client reads it from its current end, so create the client before sending and keep it.
    """

    def __init__(self, bootstrap_servers, pipeline, *, requests_topic=None, responses_topic=None, reply_to=None,
                 config=None, timeout=30.0, remember_answered=100_000):
        self.pipeline = pipeline
        self.requests_topic = requests_topic or f"{pipeline}.requests"
        self.reply_to = reply_to or responses_topic or f"{pipeline}.responses"
        self.timeout = timeout
        self.dropped_responses = 0
        common = dict(config or {}, **{"bootstrap.servers": bootstrap_servers})
        self._producer = Producer(dict(common, **{"linger.ms": 1}))
        self._consumer = Consumer(dict(common, **{
            "group.id": f"sluice-client-{uuid.uuid4()}", "enable.auto.commit": False, "fetch.wait.max.ms": 10}))
        self._start_at_end(self.reply_to)
        self._lock = threading.Lock()
        self._pending = {}
        self._answered = OrderedDict()
        self._remember_answered = remember_answered
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="sluice-client-reader", daemon=True)
        self._reader.start()

    def _start_at_end(self, topic):
        # All topics: asking for one by name would let a broker that auto-creates topics create it.
        metadata = self._consumer.list_topics(timeout=10)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            self._consumer.close()
            raise SluiceError("unknown_topic", f"the reply topic {topic} does not exist")
        assignment = []
        for partition in described.partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            assignment.append(TopicPartition(topic, partition, high))
        self._consumer.assign(assignment)

    def submit(self, input, *, key=None, request_id=None, deadline=None, timeout=None, traceparent=None):
        """Sends one request and returns a Future of its ``Response``; the future's exception is a ``SluiceError``
        (or ``SluiceTimeout``). ``input`` is any JSON value (or ``bytes`` sent as they are); ``deadline`` is in
        seconds from now: a worker that takes the request later answers ``deadline_exceeded`` without running it."""
        request_id = request_id or uuid.uuid4().hex
        timeout = self.timeout if timeout is None else timeout
        headers = [("sluice-request-id", request_id), ("sluice-reply-to", self.reply_to)]
        if deadline is not None:
            headers.append(("sluice-deadline", str(int((time.time() + deadline) * 1000))))
        if traceparent is not None:
            headers.append(("traceparent", traceparent))
        value = input if isinstance(input, (bytes, bytearray)) else json.dumps(input).encode()
        future = Future()
        with self._lock:
            if self._closed.is_set():
                raise SluiceError("closed", "the client is closed")
            if request_id in self._pending:
                raise ValueError(f"request id {request_id} is already waiting for its response")
            self._pending[request_id] = (future, time.monotonic() + timeout, timeout)
        try:
            self._producer.produce(self.requests_topic, value=value, key=key, headers=headers)
            self._producer.poll(0)
        except (KafkaException, BufferError) as error:
            with self._lock:
                self._pending.pop(request_id, None)
            raise SluiceError("produce_failed", str(error)) from error
        return future

    def call(self, input, **options):
        """``submit`` and wait: the pipeline's output, or a raised ``SluiceError`` / ``SluiceTimeout``."""
        future = self.submit(input, **options)
        self._producer.flush(10)
        return future.result().output

    def _read(self):
        while not self._closed.is_set():
            self._producer.poll(0)
            message = self._consumer.poll(0.05)
            self._expire()
            if message is None or message.error():
                continue
            headers = {name: (value or b"").decode("utf-8", "replace") for name, value in (message.headers() or [])}
            request_id = headers.get("sluice-request-id")
            with self._lock:
                waiting = self._pending.pop(request_id, None)
                if waiting is None:
                    # Someone else's response, a duplicate, or the answer to a call that gave up.
                    if request_id in self._answered:
                        self.dropped_responses += 1
                    continue
                self._remember(request_id)
            future = waiting[0]
            try:
                value = json.loads(message.value())
            except (TypeError, ValueError) as error:
                future.set_exception(SluiceError("bad_response", f"the response is not JSON: {error}"))
                continue
            if value.get("status") == "ok":
                future.set_result(Response(value, headers.get("traceparent")))
            else:
                error = value.get("error") or {}
                future.set_exception(SluiceError(
                    error.get("code", "unknown"), error.get("message", ""), error.get("step"), response=value))

    def _expire(self):
        now = time.monotonic()
        with self._lock:
            expired = [(request_id, entry) for request_id, entry in self._pending.items() if entry[1] <= now]
            for request_id, _ in expired:
                del self._pending[request_id]
                # A late response to it is then dropped like a duplicate.
                self._remember(request_id)
        for request_id, (future, _, timeout) in expired:
            future.set_exception(SluiceTimeout(request_id, timeout))

    def _remember(self, request_id):
        """Notes an id that needs no more responses (under the lock); the oldest are forgotten past the limit."""
        self._answered[request_id] = True
        while len(self._answered) > self._remember_answered:
            self._answered.popitem(last=False)

    def close(self):
        """Sends what is queued, stops reading; calls still waiting fail with ``SluiceError("closed")``."""
        self._producer.flush(10)
        with self._lock:
            self._closed.set()
            pending, self._pending = self._pending, {}
        self._reader.join()
        self._consumer.close()
        for future, _, _ in pending.values():
            future.set_exception(SluiceError("closed", "the client was closed before the response came"))

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
