import Dispatch
import Logging
import Synchronization
import SystemSupport

/// Produces records to Kafka. Batching is librdkafka's (`linger.ms`, `batch.size`, ...).
///
/// A producer made with `promptWhenIdle` sends a record at once when it is idle, instead of holding the record
/// `linger.ms` for others to batch with: one request at a time then waits for no timer, while a busy sender's records
/// batch as configured (docs/kafka-layer.md, "Prompt when idle").
///
/// Delivery reports are served on a thread of the producer's own; ``send(_:)`` returns the report, and
/// ``send(_:onDelivery:)`` calls a handler on that thread without a hop through the cooperative pool.
/// Call ``close(timeout:)`` when done: it waits for outstanding records, then releases the thread and the handle. A
/// producer released without `close` purges the records still outstanding (their handlers get a `_PURGE_*` error).
public final class KafkaProducer: Sendable {
    private let client: ProducerClient
    /// A second handle with `linger.ms=0`, for records sent while the producer is idle.
    private let prompt: ProducerClient?
    /// When the last record was sent, in nanoseconds of the monotonic clock.
    private let lastSent = Atomic<UInt64>(0)

    /// Creates a producer.
    /// - Parameters:
    ///   - configuration: librdkafka properties; `bootstrap.servers` at least.
    ///   - promptWhenIdle: send a record at once (through a second handle with `linger.ms=0`, unless `linger.ms` is 0
    ///     already) when every record sent before has its delivery report and none was sent in the last millisecond.
    ///     Records may then overtake records sent before them, as between two producers: for records that need no
    ///     order among themselves, like independent requests.
    ///   - logger: receives librdkafka's log lines.
    ///   - onError: called on the poll thread with client-level errors (brokers unreachable, ...), which librdkafka
    ///     also retries on its own.
    /// - Throws: ``KafkaError`` naming a property librdkafka refuses; `ThreadStartError` when the system refuses its
    ///   poll thread.
    public init(
        configuration: KafkaConfiguration,
        promptWhenIdle: Bool = false,
        logger: Logger = Logger(label: "sluice.kafka.producer"),
        onError: @escaping @Sendable (KafkaError) -> Void = { _ in }
    ) throws {
        client = try ProducerClient(configuration: configuration, logger: logger, onError: onError)
        let linger = configuration.effectiveValue("linger.ms").flatMap { Double($0) } ?? 0
        guard promptWhenIdle, linger > 0 else {
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

    /// The handle a record goes through: the prompt one when the producer is idle, every record sent before having
    /// its delivery report and none sent in the last ``idleNanoseconds``.
    private var lane: ProducerClient {
        guard let prompt else { return client }
        let now = DispatchTime.now().uptimeNanoseconds
        let previous = lastSent.exchange(now, ordering: .relaxed)
        guard now &- previous > Self.idleNanoseconds, prompt.outstanding == 0, client.outstanding == 0 else {
            return client
        }
        return prompt
    }

    /// How long a producer with nothing outstanding must have sent nothing to count as idle: long enough that records
    /// of a busy sender (thousands a second) never count, short enough that one call at a time always does.
    static let idleNanoseconds: UInt64 = 1_000_000

    /// Produces `message` and returns where Kafka stored it.
    /// - Throws: ``KafkaError``: the record could not be enqueued, or its delivery failed (for example
    ///   ``KafkaError/Code/messageTimedOut``, or an error the broker returned).
    public func send(_ message: OutgoingMessage) async throws -> DeliveryReport {
        let outcome = DeliveryOutcome()
        try await lane.produce(message) { outcome.fulfil($0) }
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
        try await lane.produce(message, onDelivery: onDelivery)
    }

    /// ``send(_:onDelivery:)`` for a thread of the caller's own (a ``DedicatedThread``): blocks that thread while
    /// librdkafka's queue is full, and never suspends.
    /// - Important: Never call it from Swift's cooperative pool or from a delivery handler.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued; `onDelivery` is then not called.
    public func sendBlocking(
        _ message: OutgoingMessage,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) throws {
        try lane.produceBlocking(message, onDelivery: onDelivery)
    }

    /// ``send(_:onDelivery:)`` for a caller that must neither suspend nor block, such as an event loop: when
    /// librdkafka's queue is full it throws rather than waits.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued (``KafkaError/Code/queueFull`` when the queue is
    ///   full); `onDelivery` is then not called.
    public func sendNow(
        _ message: OutgoingMessage,
        onDelivery: @escaping @Sendable (Result<DeliveryReport, KafkaError>) -> Void
    ) throws {
        try lane.produceNow(message, onDelivery: onDelivery)
    }

    /// Sets what runs after each round of delivery reports, once their handlers ran, on the thread that served them:
    /// a caller whose handlers gather what was delivered finishes it there together (one lock, one offset store)
    /// instead of once per record. Replaces the previous one.
    /// - Important: Runs on the producer's poll thread (or a thread that flushes or closes it; with `promptWhenIdle`,
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
