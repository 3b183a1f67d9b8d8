import DequeModule
import Kafka
import Logging
import Pipelines
import Synchronization

/// Calls a pipeline over Kafka: produces requests with a request id and a reply-to topic, reads the responses
/// topic, and hands each response to its caller by request id.
///
/// A response for an id nobody waits for (another client's, or a second delivery after a worker crash) is dropped,
/// so each call gets exactly one response. The client reads the responses topic in a consumer group of its own from
/// the start of the topic's retention, skipping what was produced before it started: fine for the embedded broker
/// and moderate topics; with long retention give each client a reply-to topic of its own (docs/protocol.md).
public final class PipelineClient: Sendable {
    /// Why a call did not get a response.
    public struct Timeout: Error, CustomStringConvertible {
        public let requestID: String
        public var description: String { "no response to request \(requestID) in time" }
    }

    private struct State {
        var waiting: [String: ResponsePromise] = [:]
        var answered: Set<String> = []
        var answeredOrder: Deque<String> = []
        var duplicates = 0
    }

    public let requestsTopic: String
    public let responsesTopic: String
    private let producer: KafkaProducer
    private let consumer: KafkaConsumer
    private let startedMilliseconds: Int64
    private let state = Mutex(State())
    private let reader = Mutex<Task<Void, Never>?>(nil)

    /// - Parameters:
    ///   - kafka: librdkafka properties, with `bootstrap.servers`.
    ///   - pipeline: the pipeline's name, for the default topics.
    /// - Throws: ``KafkaError`` when a client cannot be created.
    public init(
        kafka: KafkaConfiguration, pipeline: String, requestsTopic: String? = nil, responsesTopic: String? = nil,
        logger: Logger
    ) throws {
        self.requestsTopic = requestsTopic ?? WireProtocol.requestsTopic(pipeline)
        self.responsesTopic = responsesTopic ?? WireProtocol.responsesTopic(pipeline)
        startedMilliseconds = Timestamps.wallMicros() / 1000
        producer = try KafkaProducer(configuration: kafka, logger: logger)
        var settings = kafka
        var generator = SystemRandomNumberGenerator()
        try settings.set("group.id", "sluice.client.\(String(generator.next() as UInt64, radix: 36))")
        try settings.set("auto.offset.reset", "earliest")
        consumer = try KafkaConsumer(configuration: settings, topics: [self.responsesTopic], logger: logger)
        let task = Task { [self] in await read() }
        reader.withLock { $0 = task }
    }

    /// Responses dropped because their request had been answered already.
    public var duplicatesDropped: Int { state.withLock { $0.duplicates } }

    /// Sends one request and waits for its response.
    /// - Parameters:
    ///   - input: the pipeline's input as JSON.
    ///   - requestID: the correlation id; a random one by default.
    ///   - deadline: how long the request may wait before a worker runs it (sent as `sluice-deadline`).
    ///   - timeout: how long to wait for the response.
    ///   - traceparent: the W3C trace context the request's span is a child of (sent as `traceparent`); the
    ///     response's ``Response/traceparent`` is the one the worker answers with.
    /// - Throws: ``Timeout``, or ``KafkaError`` when the request cannot be produced.
    public func call(
        _ input: [UInt8], requestID: String? = nil, key: [UInt8]? = nil, deadline: Duration? = nil,
        timeout: Duration = .seconds(30), traceparent: String? = nil
    ) async throws -> Response {
        var generator = SystemRandomNumberGenerator()
        let id =
            requestID ?? String(generator.next() as UInt64, radix: 16) + String(generator.next() as UInt64, radix: 16)
        var headers = [
            KafkaHeader(WireProtocol.Header.requestID, id), KafkaHeader(WireProtocol.Header.replyTo, responsesTopic),
        ]
        if let deadline {
            let milliseconds =
                Timestamps.wallMicros() / 1000 + deadline.components.seconds * 1000
                + deadline.components.attoseconds / 1_000_000_000_000_000
            headers.append(KafkaHeader(WireProtocol.Header.deadline, String(milliseconds)))
        }
        if let traceparent { headers.append(KafkaHeader(WireProtocol.Header.traceparent, traceparent)) }
        // Registered before the request is produced, so that no response can come before its waiter.
        let promise = ResponsePromise()
        state.withLock { $0.waiting[id] = promise }
        defer { state.withLock { _ = $0.waiting.removeValue(forKey: id) } }
        _ = try await producer.send(OutgoingMessage(topic: requestsTopic, key: key, value: input, headers: headers))
        return try await withThrowingTaskGroup(of: Response.self) { group in
            group.addTask { try await promise.value }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw Timeout(requestID: id)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    public func close() async {
        reader.withLock { $0 }?.cancel()
        await consumer.close()
        await producer.close()
        let orphans = state.withLock { state in
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        for (id, waiter) in orphans { waiter.fulfil(.failure(Timeout(requestID: id))) }
    }

    private func read() async {
        for await message in consumer.messages {
            if let time = message.timestampMilliseconds, time < startedMilliseconds - 1000 { continue }
            guard let value = message.value, var response = try? Response(json: value) else { continue }
            response.traceparent = message.headers.string(named: WireProtocol.Header.traceparent)
            let waiter = state.withLock { state -> ResponsePromise? in
                if state.answered.contains(response.requestID) {
                    state.duplicates += 1
                    return nil
                }
                guard let waiter = state.waiting.removeValue(forKey: response.requestID) else { return nil }
                state.answered.insert(response.requestID)
                state.answeredOrder.append(response.requestID)
                if state.answeredOrder.count > 100_000 {
                    state.answered.remove(state.answeredOrder.removeFirst())
                }
                return waiter
            }
            waiter?.fulfil(.success(response))
        }
    }
}

/// A response that arrives once, and the one caller waiting for it (possibly before it arrives).
private final class ResponsePromise: Sendable {
    private enum State {
        case pending
        case waiting(CheckedContinuation<Response, any Error>)
        case done(Result<Response, any Error>)
    }

    private let state = Mutex(State.pending)

    func fulfil(_ result: Result<Response, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Response, any Error>? in
            switch state {
            case .pending:
                state = .done(result)
                return nil
            case .waiting(let continuation):
                state = .done(result)
                return continuation
            case .done:
                return nil
            }
        }
        waiter?.resume(with: result)
    }

    var value: Response {
        get async throws {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let done = state.withLock { state -> Result<Response, any Error>? in
                        if case .done(let result) = state { return result }
                        state = .waiting(continuation)
                        return nil
                    }
                    if let done { continuation.resume(with: done) }
                }
            } onCancel: {
                fulfil(.failure(CancellationError()))
            }
        }
    }
}
