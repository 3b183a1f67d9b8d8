import Logging
import Synchronization
import SystemSupport

/// Produces records to Kafka. Batching is librdkafka's (`linger.ms`, `batch.size`, ...).
///
/// Delivery reports are served on a thread of the producer's own; ``send(_:)`` returns the report, and
/// ``send(_:onDelivery:)`` calls a handler on that thread without a hop through the cooperative pool.
/// Call ``close(timeout:)`` when done: it waits for outstanding records, then releases the thread and the handle. A
/// producer released without `close` purges the records still outstanding (their handlers get a `_PURGE_*` error).
public final class KafkaProducer: Sendable {
    private let client: ProducerClient

    /// Creates a producer.
    /// - Parameters:
    ///   - configuration: librdkafka properties; `bootstrap.servers` at least.
    ///   - logger: receives librdkafka's log lines.
    ///   - onError: called on the poll thread with client-level errors (brokers unreachable, ...), which librdkafka
    ///     also retries on its own.
    /// - Throws: ``KafkaError`` naming a property librdkafka refuses; `ThreadStartError` when the system refuses its
    ///   poll thread.
    public init(
        configuration: KafkaConfiguration,
        logger: Logger = Logger(label: "sluice.kafka.producer"),
        onError: @escaping @Sendable (KafkaError) -> Void = { _ in }
    ) throws {
        client = try ProducerClient(configuration: configuration, logger: logger, onError: onError)
    }

    deinit { client.shutdown() }

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
    /// - Important: `onDelivery` runs on the producer's poll thread: keep it short and never block in it.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued; `onDelivery` is then not called.
    public func send(
        _ message: OutgoingMessage,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) async throws {
        try await client.produce(message, onDelivery: onDelivery)
    }

    /// ``send(_:onDelivery:)`` for a thread of the caller's own (a ``DedicatedThread``): blocks that thread while
    /// librdkafka's queue is full, and never suspends.
    /// - Important: Never call it from Swift's cooperative pool or from a delivery handler.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued; `onDelivery` is then not called.
    public func sendBlocking(
        _ message: OutgoingMessage,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) throws {
        try client.produceBlocking(message, onDelivery: onDelivery)
    }

    /// ``send(_:onDelivery:)`` for a caller that must neither suspend nor block, such as an event loop: when
    /// librdkafka's queue is full it throws rather than waits.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued (``KafkaError/Code/queueFull`` when the queue is
    ///   full); `onDelivery` is then not called.
    public func sendNow(
        _ message: OutgoingMessage,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) throws {
        try client.produceNow(message, onDelivery: onDelivery)
    }

    /// Sets what runs after each round of delivery reports, once their handlers ran, on the thread that served them:
    /// a caller whose handlers gather what was delivered finishes it there together (one lock, one offset store)
    /// instead of once per record. Replaces the previous one.
    /// - Important: Runs on the producer's poll thread (or a thread that flushes or closes it): keep it short and
    ///   never block in it.
    public func onDeliveryRound(_ handler: @escaping @Sendable () -> Void) {
        client.onDeliveryRound(handler)
    }

    /// Records enqueued or in flight that have no delivery report yet.
    public var outstanding: Int { client.outstanding }

    /// Waits until every record sent so far has its delivery report.
    /// - Throws: ``KafkaError`` with ``KafkaError/Code/timedOut`` if some have none after `timeout`.
    public func flush(timeout: Duration) async throws {
        try await client.flush(timeout: timeout)
    }

    /// Flushes for at most `timeout`, then stops: records still undelivered fail with a `_PURGE_*` error.
    public func close(timeout: Duration = .seconds(10)) async {
        do {
            try await client.flush(timeout: timeout)
        } catch {
            client.logger.warning("closing producer: \(error)")
        }
        _ = try? await DedicatedThread.run(name: "sluice-kclose") { [client] in client.shutdown() }
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
