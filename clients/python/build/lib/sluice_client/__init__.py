"""Call Sluice pipelines from Python: request-reply over Kafka, following Sluice's wire protocol v1 (docs/protocol.md).

    from sluice_client import SluiceClient, SluiceError

    with SluiceClient("broker-1:9092", "fraud-check") as client:
        verdict = client.call({"amount": 12.5, "currency": "EUR", "country": "DE", "card_present": True, "hour": 14})

    async with AsyncSluiceClient("broker-1:9092", "fraud-check") as client:
        verdict = await client.call({"amount": 12.5, "currency": "EUR", "country": "DE", "card_present": True})

One client serves many calls at once, from any thread (``submit`` returns a ``concurrent.futures.Future``) or from
asyncio tasks. Each client reads one partition of its reply topic, which it names on every request
(``sluice-reply-partition``), so that many clients do not each read every response. Responses are matched by request id
on a background thread; a duplicate (a worker that died after answering serves the request again) and a response to a
call that already timed out are dropped and counted. A request Kafka does not take fails its call at once
(``SluiceDeliveryError``), not at its timeout.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

__all__ = ["SluiceClient", "AsyncSluiceClient", "SluiceError", "SluiceTimeout", "SluiceDeliveryError", "Response"]

#: A JSON value: what a pipeline takes and returns.
JSON = Any


class SluiceError(Exception):
    """An error response: ``code`` as docs/protocol.md lists them (``invalid_input``, ``deadline_exceeded``,
    ``step_failed``, ... or a step's own), ``message``, the failing ``step`` if any, and the whole ``response``."""

    def __init__(self, code: str, message: str, step: Optional[str] = None,
                 response: Optional[Dict[str, JSON]] = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (step {step})" if step else ""))
        self.code = code
        self.message = message
        self.step = step
        self.response = response


class SluiceTimeout(SluiceError, TimeoutError):
    """No response within the call's timeout. The request may still run; its late response is dropped."""

    def __init__(self, request_id: str, timeout: float) -> None:
        super().__init__("timeout", f"no response to {request_id} within {timeout} s")
        self.request_id = request_id


class SluiceDeliveryError(SluiceError):
    """Kafka did not take the request (an unknown topic, a record too large, a broker that stays away past
    ``message.timeout.ms``): no worker will see it. ``kafka_error`` is confluent-kafka's ``KafkaError``."""

    def __init__(self, request_id: str, kafka_error: KafkaError) -> None:
        super().__init__("delivery_failed", f"request {request_id} was not delivered: {kafka_error.str()}")
        self.request_id = request_id
        self.kafka_error = kafka_error


class Response:
    """A successful response: the pipeline's ``output`` and where it came from. ``traceparent`` is the response's
    W3C trace context header: the worker's span of the request when it traces, else the request's own."""

    def __init__(self, value: Dict[str, JSON], traceparent: Optional[str] = None) -> None:
        self.value = value
        self.traceparent = traceparent
        self.request_id: Optional[str] = value.get("request_id")
        self.output: JSON = value.get("output")
        self.run_id: Optional[str] = value.get("run_id")
        self.capture: Optional[str] = value.get("capture")
        self.duration_ms: Optional[float] = value.get("duration_ms")

    def __repr__(self) -> str:
        return f"Response(request_id={self.request_id!r}, output={self.output!r}, run_id={self.run_id!r})"


def _text(value: Union[str, bytes, None]) -> str:
    """A header's value as text (invalid UTF-8 replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


# A call waiting for its response: its future, when it gives up (monotonic seconds) and its timeout.
_Pending = Tuple["Future[Response]", float, float]


class SluiceClient:
    """A client of one pipeline's workers.

    ``bootstrap_servers`` and ``config`` (more librdkafka properties, e.g. SASL) reach the cluster; the topics default
    to the pipeline's (``<pipeline>.requests``, ``<pipeline>.responses``). ``reply_to`` is the topic responses come
    back on: the responses topic, or one whose name starts with it, which a worker accepts (``--allow-reply-prefix``
    widens that). ``reply_partition`` is the one partition of it this client reads and asks to be answered on; by
    default one chosen at random, so that clients spread over the partitions. The client reads it from its current
    end, so create the client before sending and keep it.
    """

    def __init__(self, bootstrap_servers: str, pipeline: str, *, requests_topic: Optional[str] = None,
                 responses_topic: Optional[str] = None, reply_to: Optional[str] = None,
                 reply_partition: Optional[int] = None, config: Optional[Mapping[str, Any]] = None,
                 timeout: float = 30.0, remember_answered: int = 100_000) -> None:
        self.pipeline = pipeline
        self.requests_topic = requests_topic or f"{pipeline}.requests"
        self.reply_to = reply_to or responses_topic or f"{pipeline}.responses"
        self.timeout = timeout
        self.dropped_responses = 0
        common = dict(config or {}, **{"bootstrap.servers": bootstrap_servers})
        self._producer = Producer(dict(common, **{"linger.ms": 1}))
        self._consumer = Consumer(dict(common, **{
            "group.id": f"sluice-client-{uuid.uuid4()}", "enable.auto.commit": False, "fetch.wait.max.ms": 10}))
        self.reply_partition = self._start_at_end(self.reply_to, reply_partition)
        self._lock = threading.Lock()
        self._pending: Dict[str, _Pending] = {}
        self._answered: "OrderedDict[str, bool]" = OrderedDict()
        self._remember_answered = remember_answered
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="sluice-client-reader", daemon=True)
        self._reader.start()

    def _start_at_end(self, topic: str, partition: Optional[int]) -> int:
        """Assigns the consumer `partition` of `topic` (or one at random) from its current end; returns it."""
        # All topics: asking for one by name would let a broker that auto-creates topics create it.
        metadata = self._consumer.list_topics(timeout=10)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            self._consumer.close()
            raise SluiceError("unknown_topic", f"the reply topic {topic} does not exist")
        partitions = sorted(described.partitions)
        if partition is None:
            partition = random.choice(partitions)
        elif partition not in partitions:
            self._consumer.close()
            raise SluiceError("unknown_partition",
                              f"the reply topic {topic} has partitions 0 to {partitions[-1]}, not {partition}")
        _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        self._consumer.assign([TopicPartition(topic, partition, high)])
        return partition

    def submit(self, input: Union[JSON, bytes], *, key: Optional[Union[str, bytes]] = None,
               request_id: Optional[str] = None, deadline: Optional[float] = None, timeout: Optional[float] = None,
               traceparent: Optional[str] = None) -> "Future[Response]":
        """Sends one request and returns a Future of its ``Response``; the future's exception is a ``SluiceError``
        (``SluiceTimeout``, ``SluiceDeliveryError``, or the error response's code). ``input`` is any JSON value (or
        ``bytes`` sent as they are); ``deadline`` is in seconds from now: a worker that takes the request later
        answers ``deadline_exceeded`` without running it."""
        request_id = request_id or uuid.uuid4().hex
        timeout = self.timeout if timeout is None else timeout
        headers: List[Tuple[str, Union[str, bytes, None]]] = [
            ("sluice-request-id", request_id), ("sluice-reply-to", self.reply_to),
            ("sluice-reply-partition", str(self.reply_partition))]
        if deadline is not None:
            headers.append(("sluice-deadline", str(int((time.time() + deadline) * 1000))))
        if traceparent is not None:
            headers.append(("traceparent", traceparent))
        value = bytes(input) if isinstance(input, (bytes, bytearray)) else json.dumps(input).encode()
        future: "Future[Response]" = Future()
        with self._lock:
            if self._closed.is_set():
                raise SluiceError("closed", "the client is closed")
            if request_id in self._pending:
                raise ValueError(f"request id {request_id} is already waiting for its response")
            self._pending[request_id] = (future, time.monotonic() + timeout, timeout)

        def delivered(error: Optional[KafkaError], _: Message) -> None:
            if error is not None:
                self._fail(request_id, SluiceDeliveryError(request_id, error))

        try:
            self._producer.produce(self.requests_topic, value=value, key=key, headers=headers, on_delivery=delivered)
            self._producer.poll(0)
        except (KafkaException, BufferError) as error:
            with self._lock:
                self._pending.pop(request_id, None)
            raise SluiceError("produce_failed", str(error)) from error
        return future

    def call(self, input: Union[JSON, bytes], **options: Any) -> JSON:
        """``submit`` and wait: the pipeline's output, or a raised ``SluiceError`` (``SluiceTimeout``,
        ``SluiceDeliveryError``, or the error response's code)."""
        return self.submit(input, **options).result().output

    def _read(self) -> None:
        while not self._closed.is_set():
            # Delivery reports of requests: a failed one fails its call now.
            self._producer.poll(0)
            message = self._consumer.poll(0.05)
            self._expire()
            if message is None or message.error():
                continue
            headers = {header[0]: _text(header[1]) for header in (message.headers() or [])}
            request_id = headers.get("sluice-request-id", "")
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
                value = json.loads(message.value() or b"")
            except ValueError as failure:
                future.set_exception(SluiceError("bad_response", f"the response is not JSON: {failure}"))
                continue
            if not isinstance(value, dict):
                future.set_exception(SluiceError("bad_response", f"the response is not a JSON object: {value!r}"))
                continue
            if value.get("status") == "ok":
                future.set_result(Response(value, headers.get("traceparent")))
            else:
                detail = value.get("error") or {}
                future.set_exception(SluiceError(
                    detail.get("code", "unknown"), detail.get("message", ""), detail.get("step"), response=value))

    def _fail(self, request_id: str, error: SluiceError) -> None:
        """Fails the call of `request_id` with `error`, if it still waits."""
        with self._lock:
            waiting = self._pending.pop(request_id, None)
            if waiting is None:
                return
            self._remember(request_id)
        waiting[0].set_exception(error)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [(request_id, entry) for request_id, entry in self._pending.items() if entry[1] <= now]
            for request_id, _ in expired:
                del self._pending[request_id]
                # A late response to it is then dropped like a duplicate.
                self._remember(request_id)
        for request_id, (future, _, timeout) in expired:
            future.set_exception(SluiceTimeout(request_id, timeout))

    def _remember(self, request_id: str) -> None:
        """Notes an id that needs no more responses (under the lock); the oldest are forgotten past the limit."""
        self._answered[request_id] = True
        while len(self._answered) > self._remember_answered:
            self._answered.popitem(last=False)

    def close(self) -> None:
        """Sends what is queued, stops reading; calls still waiting fail with ``SluiceError("closed")``."""
        self._producer.flush(10)
        with self._lock:
            self._closed.set()
            pending, self._pending = self._pending, {}
        self._reader.join()
        self._consumer.close()
        for future, _, _ in pending.values():
            future.set_exception(SluiceError("closed", "the client was closed before the response came"))

    def __enter__(self) -> "SluiceClient":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class AsyncSluiceClient:
    """The same client for asyncio: ``await client.call(...)``, ``client.submit(...)`` an awaitable future, and
    ``async with``. The same arguments as ``SluiceClient``; creating and closing it wait for Kafka in a thread, and a
    call never blocks the event loop."""

    def __init__(self, bootstrap_servers: str, pipeline: str, **options: Any) -> None:
        self._arguments = (bootstrap_servers, pipeline)
        self._options = options
        self._client: Optional[SluiceClient] = None

    @property
    def client(self) -> SluiceClient:
        """The ``SluiceClient`` underneath, once started."""
        if self._client is None:
            raise SluiceError("not_started", "use `async with AsyncSluiceClient(...)` or `await client.start()`")
        return self._client

    async def start(self) -> "AsyncSluiceClient":
        """Connects and assigns the reply partition (in a thread: it waits for Kafka's metadata)."""
        if self._client is None:
            loop = asyncio.get_running_loop()
            self._client = await loop.run_in_executor(None, lambda: SluiceClient(*self._arguments, **self._options))
        return self

    def submit(self, input: Union[JSON, bytes], **options: Any) -> "asyncio.Future[Response]":
        """Sends one request; the returned future gives its ``Response`` or raises as ``SluiceClient.submit``'s."""
        return asyncio.wrap_future(self.client.submit(input, **options))

    async def call(self, input: Union[JSON, bytes], **options: Any) -> JSON:
        """Sends one request and returns the pipeline's output, or raises a ``SluiceError``."""
        return (await self.submit(input, **options)).output

    async def close(self) -> None:
        """Sends what is queued and stops (in a thread); calls still waiting fail with ``SluiceError("closed")``."""
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.get_running_loop().run_in_executor(None, client.close)

    async def __aenter__(self) -> "AsyncSluiceClient":
        return await self.start()

    async def __aexit__(self, *_: Any) -> None:
        await self.close()
