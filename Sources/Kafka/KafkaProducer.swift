import Logging
import Synchronization
import SystemSupport

/// Produces records to Kafka. Batching is librdkafka's (`linger.ms`, `batch.size`, ...).
///
/// A producer made with `promptLane` can send a record at once, instead of holding it `linger.ms` for others to batch
/// with: a caller that knows it sends one request at a time (nothing else of its own in flight) passes `promptly`,
/// while the records of a busy caller batch as configured (docs/kafka-layer.md, "Prompt when idle").
///
/// Delivery reports are served on a thread of the producer's own; ``send(_:)`` returns the report, and
/// ``send(_:promptly:onDelivery:)`` calls a handler on that thread without a hop through the cooperative pool.
/// Call ``close(timeout:)`` when done: it waits for outstanding records, then releases the thread and the handle. A
/// producer released without `close` purges the records still outstanding (their handlers get a `_PURGE_*` error).
public final class KafkaProducer: Sendable {
    private let client: ProducerClient
    /// A second handle with `linger.ms=0`, for records sent `promptly`.
    private let prompt: ProducerClient?

    /// Creates a producer.
    /// - Parameters:
    ///   - configuration: librdkafka properties; `bootstrap.servers` at least.
    ///   - promptLane: keep a second handle with `linger.ms=0` (unless `linger.ms` is 0 already) for records sent
    ///     `promptly`. Records may then overtake records sent before them, as between two producers: for records that
    ///     need no order among themselves, like independent requests.
    ///   - logger: receives librdkafka's log lines.
    ///   - onError: called on the poll thread with client-level errors (brokers unreachable, ...), which librdkafka
    ///     also retries on its own.
    /// - Throws: ``KafkaError`` naming a property librdkafka refuses; `ThreadStartError` when the system refuses its
    ///   poll thread.
    public init(
        configuration: KafkaConfiguration,
        promptLane: Bool = false,
        logger: Logger = Logger(label: "sluice.kafka.producer"),
        onError: @escaping @Sendable (KafkaError) -> Void = { _ in }
    ) throws {
        client = try ProducerClient(configuration: configuration, logger: logger, onError: onError)
        let linger = configuration.effectiveValue("linger.ms").flatMap { Double($0) } ?? 0
        guard promptLane, linger > 0 else {
            prompt = nil
            return
        }
        var immediate = configuration
        try immediate.set("linger.ms", "0")
        do {
            prompt = try ProducerClient(configuration: immediate, logger: logger, onError: onError)
        } catch {
            client.shutdown()
            throw error
        }
    }

    deinit {
        client.shutdown()
        prompt?.shutdown()
    }

    /// The handle a record goes through: the prompt one for a record sent `promptly` while that handle has nothing in
    /// flight, so that it never carries a stream (with `linger.ms=0` alone, 1024 calls at once had a p99 of half a
    /// second: docs/benchmarks.md, "Prompt when idle").
    private func lane(promptly: Bool) -> ProducerClient {
        guard promptly, let prompt, prompt.outstanding == 0 else { return client }
        return prompt
    }

    /// Produces `message` and returns where Kafka stored it.
    /// - Throws: ``KafkaError``: the record could not be enqueued, or its delivery failed (for example
    ///   ``KafkaError/Code/messageTimedOut``, or an error the broker returned).
    public func send(_ message: OutgoingMessage) async throws -> DeliveryReport {
        let outcome = DeliveryOutcome()
        try await client.produce(message) { outcome.fulfil($0) }
        return try await outcome.value
    }

    /// Enqueues `message` and returns once librdkafka holds it; `onDelivery` is called exactly once with its
    /// delivery report.
    /// - Parameter promptly: send it at once, without waiting out `linger.ms`, when the producer has a prompt lane
    ///   that nothing else is using: for a caller that has nothing else in flight.
    /// - Important: `onDelivery` runs on the producer's poll thread: keep it short and never block in it.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued; `onDelivery` is then not called.
    public func send(
        _ message: OutgoingMessage, promptly: Bool = false,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) async throws {
        try await lane(promptly: promptly).produce(message, onDelivery: onDelivery)
    }

    /// ``send(_:promptly:onDelivery:)`` for a thread of the caller's own (a ``DedicatedThread``), never prompt:
    /// blocks that thread while librdkafka's queue is full, and never suspends.
    /// - Important: Never call it from Swift's cooperative pool or from a delivery handler.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued; `onDelivery` is then not called.
    public func sendBlocking(
        _ message: OutgoingMessage,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) throws {
        try client.produceBlocking(message, onDelivery: onDelivery)
    }

    /// ``send(_:promptly:onDelivery:)`` for a caller that must neither suspend nor block, such as an event loop: when
    /// librdkafka's queue is full it throws rather than waits.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued (``KafkaError/Code/queueFull`` when the queue is
    ///   full); `onDelivery` is then not called.
    public func sendNow(
        _ message: OutgoingMessage, promptly: Bool = false,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) throws {
        try lane(promptly: promptly).produceNow(message, onDelivery: onDelivery)
    }

    /// Sets what runs after each round of delivery reports, once their handlers ran, on the thread that served them:
    /// a caller whose handlers gather what was delivered finishes it there together (one lock, one offset store)
    /// instead of once per record. Replaces the previous one.
    /// - Important: Runs on the producer's poll thread (or a thread that flushes or closes it; with `promptLane`,
    ///   on either handle's, possibly at the same time): keep it short and never block in it.
    public func onDeliveryRound(_ handler: @escaping @Sendable () -> Void) {
        client.onDeliveryRound(handler)
        prompt?.onDeliveryRound(handler)
    }

    /// Records enqueued or in flight that have no delivery report yet.
    public var outstanding: Int { client.outstanding + (prompt?.outstanding ?? 0) }

    /// Waits until every record sent so far has its delivery report.
    /// - Throws: ``KafkaError`` with ``KafkaError/Code/timedOut`` if some have none after `timeout`.
    public func flush(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        try await client.flush(timeout: timeout)
        try await prompt?.flush(timeout: deadline - .now)
    }

    /// Flushes for at most `timeout`, then stops: records still undelivered fail with a `_PURGE_*` error.
    public func close(timeout: Duration = .seconds(10)) async {
        do {
            try await flush(timeout: timeout)
        } catch {
            client.logger.warning("closing producer: \(error)")
        }
        _ = try? await DedicatedThread.run(name: "sluice-kclose") { [client, prompt] in
            client.shutdown()
            prompt?.shutdown()
        }
    }
}

/// One delivery report awaited by ``KafkaProducer/send(_:)``: fulfilled on the poll thread, read by the sender.
private final class DeliveryOutcome: Sendable {
    private enum State {
        case pending
        case waiting(CheckedContinuation<DeliveryReport, any Error>)
        case done(Result<DeliveryReport, KafkaError>)
    }
    private let state = Mutex(State.pending)

    func fulfil(_ result: Result<DeliveryReport, KafkaError>) {
        let waiter = state.withLock { state -> CheckedContinuation<DeliveryReport, any Error>? in
            defer { state = .done(result) }
            if case .waiting(let continuation) = state { return continuation }
            return nil
        }
        waiter?.resume(with: result.mapError { $0 as any Error })
    }

    var value: DeliveryReport {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let done = state.withLock { state -> Result<DeliveryReport, KafkaError>? in
                    if case .done(let result) = state { return result }
                    state = .waiting(continuation)
                    return nil
                }
                if let done { continuation.resume(with: done.mapError { $0 as any Error }) }
            }
        }
    }
}
