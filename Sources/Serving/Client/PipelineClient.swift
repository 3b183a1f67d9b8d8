import Kafka
import Logging
import Pipelines
import Synchronization
import SystemSupport

/// Calls pipelines over Kafka: produces requests with a request id and a reply-to topic, reads that topic, and hands
/// each response to its caller by request id.
///
/// Where responses come back is ``Replies``: the whole of one topic, in a consumer group of the client's own (`sluice
/// call`), or the partitions a consumer group shares out among its clients, each request naming one of them in
/// `sluice-reply-partition` (`sluice gateway`: many gateways on one reply topic, each reading its own responses only).
///
/// A response for an id nobody waits for (another client's, a second delivery after a worker crash, or one that came
/// after its call gave up) is dropped and counted (``dropped``), so each call gets exactly one response. Memory is
/// bounded: at most `maxWaiting` calls wait at once (one more is refused with ``Refused``).
///
/// The client reads its reply partitions from the group's committed offsets, or from the start of their retention when
/// there are none, skipping what was produced before it started: fine for the embedded broker and moderate topics;
/// with long retention give each pipeline's callers a reply-to topic of their own (docs/protocol.md).
public final class PipelineClient: Sendable {
    /// Where the client reads its responses.
    public enum Replies: Sendable {
        /// Every partition of the topic, in a consumer group of this client's own. Requests name no partition.
        case topic(String)
        /// The partitions of the topic that the consumer group `group` gives this client; each request names one of
        /// them in `sluice-reply-partition`. Clients of one group split the topic's partitions: a topic needs at
        /// least as many partitions as the group has clients.
        case sharedTopic(String, group: String)

        /// The topic requests name in `sluice-reply-to`.
        public var topic: String {
            switch self {
            case .topic(let topic), .sharedTopic(let topic, _): topic
            }
        }
    }

    /// Why a call did not get a response.
    public struct Timeout: Error, CustomStringConvertible {
        public let requestID: String
        public var description: String { "no response to request \(requestID) in time" }
    }

    /// Why a call was refused, or ended without its response before its timeout.
    public struct Refused: Error, CustomStringConvertible {
        public enum Reason: Sendable, Equatable {
            /// The client reads no partition of its shared reply topic yet (it is joining its group, or the group has
            /// more clients than the topic has partitions).
            case noReplyPartition
            /// `maxWaiting` calls wait already.
            case tooManyWaiting(Int)
            /// A call with the same request id waits already.
            case duplicateRequestID
            /// The group moved the call's reply partition to another client while the call waited: its response
            /// goes there.
            case replyPartitionMoved
            /// The client is closing.
            case closed
        }

        public let requestID: String
        public let reason: Reason

        public var description: String {
            switch reason {
            case .noReplyPartition: "no reply partition is assigned to this client yet"
            case .tooManyWaiting(let limit): "\(limit) calls wait for their responses already"
            case .duplicateRequestID: "a call with request id \(requestID) is waiting already"
            case .replyPartitionMoved: "the reply partition of request \(requestID) moved to another client"
            case .closed: "the client is closing"
            }
        }
    }

    /// The responses dropped since the client started, by why (see ``PipelineClient``).
    public struct Dropped: Sendable, Equatable {
        /// Second responses to answered requests.
        public var duplicates: Int
        /// Responses that came after their call gave up.
        public var late: Int
        /// Responses to requests this client did not send, or older than what it remembers.
        public var unmatched: Int

        public init(duplicates: Int = 0, late: Int = 0, unmatched: Int = 0) {
            self.duplicates = duplicates
            self.late = late
            self.unmatched = unmatched
        }
    }

    private typealias State = ReplyCorrelation<ReplyWaiter>

    public let replies: Replies
    private let producer: KafkaProducer
    private let consumer: KafkaConsumer
    private let state: LockedState
    /// Where each call's timeout is filed (one thread for all of them).
    private let timeouts: DeadlineScheduler

    /// - Parameters:
    ///   - kafka: librdkafka properties, with `bootstrap.servers`.
    ///   - replies: where responses come back.
    ///   - maxWaiting: calls that may wait for their responses at once.
    /// - Throws: ``KafkaError`` when a client cannot be created; `ThreadStartError` when the system refuses the
    ///   thread that times calls out.
    public init(kafka: KafkaConfiguration, replies: Replies, maxWaiting: Int = 100_000, logger: Logger) throws {
        self.replies = replies
        let started = Timestamps.wallMicros() / 1000
        producer = try KafkaProducer(configuration: kafka, promptLane: true, logger: logger)
        var settings = kafka
        try settings.set("auto.offset.reset", "earliest")
        let state: LockedState
        switch replies {
        case .topic(let topic):
            var generator = SystemRandomNumberGenerator()
            try settings.set("group.id", "sluice.client.\(String(generator.next() as UInt64, radix: 36))")
            state = LockedState(State(sharesTopic: false, maxWaiting: maxWaiting))
            consumer = try KafkaConsumer(
                configuration: settings, topics: [topic],
                onMessages: { Self.receive($0, state: state, since: started) }, storesHandledOffsets: false,
                logger: logger)
        case .sharedTopic(let topic, let group):
            try settings.set("group.id", group)
            state = LockedState(State(sharesTopic: true, maxWaiting: maxWaiting))
            let handler = RebalanceHandler(
                partitionsAssigned: { added in
                    state.withLock { $0.assign(added.filter { $0.topic == topic }.map(\.partition)) }
                },
                partitionsRevoked: { removed, _ in
                    let stranded = state.withLock { $0.revoke(removed.filter { $0.topic == topic }.map(\.partition)) }
                    for (id, waiter) in stranded {
                        waiter.fulfil(.failure(Refused(requestID: id, reason: .replyPartitionMoved)))
                    }
                })
            // Offsets are stored as responses are read: a client that takes over a shared partition starts after
            // what its group has read.
            consumer = try KafkaConsumer(
                configuration: settings, topics: [topic], rebalanceHandler: handler,
                onMessages: { Self.receive($0, state: state, since: started) }, logger: logger)
        }
        self.state = state
        timeouts = try DeadlineScheduler(name: "sluice-timeouts") { tokens in
            for (id, waiter) in state.withLock({ $0.expire(tokens) }) {
                waiter.fulfil(.failure(Timeout(requestID: id)))
            }
        }
    }

    /// Calls `pipeline`'s workers on its default topics: requests on `<pipeline>.requests`, responses on
    /// `<pipeline>.responses` (or the topics given).
    /// - Throws: ``KafkaError`` when a client cannot be created.
    public convenience init(
        kafka: KafkaConfiguration, pipeline: String, responsesTopic: String? = nil, logger: Logger
    ) throws {
        try self.init(
            kafka: kafka, replies: .topic(responsesTopic ?? WireProtocol.responsesTopic(pipeline)), logger: logger)
    }

    /// The responses dropped so far, by why.
    public var dropped: Dropped {
        let counts = state.withLock { $0.dropped }
        return Dropped(duplicates: counts.duplicates, late: counts.late, unmatched: counts.unmatched)
    }

    /// Calls waiting for their responses now.
    public var waitingCount: Int { state.withLock { $0.waitingCount } }

    /// Whether the client can call: it reads its whole reply topic, or the group gave it a partition of it.
    public var hasReplyPartition: Bool { state.withLock { $0.partitions.map { !$0.isEmpty } ?? true } }

    /// The partitions of a shared reply topic the group gives this client now (empty for ``Replies/topic(_:)``).
    public var replyPartitions: [Int32] { state.withLock { $0.partitions ?? [] } }

    /// How long since the consumer's poll thread last went round its loop (see
    /// ``KafkaConsumer/timeSinceLastPoll``).
    public var timeSinceLastPoll: Duration { consumer.timeSinceLastPoll }

    /// Sends one request to `requestsTopic` and waits for its response.
    /// - Parameters:
    ///   - input: the pipeline's input as JSON.
    ///   - requestID: the correlation id; a random one by default.
    ///   - deadline: how long the request may wait before a worker runs it (sent as `sluice-deadline`).
    ///   - timeout: how long to wait for the response.
    ///   - traceparent: the W3C trace context the request's span is a child of (sent as `traceparent`); the
    ///     response's ``ResponseMessage/traceparent`` is the one the worker answers with.
    /// - Throws: ``Timeout``; ``Refused``; ``KafkaError`` when the request cannot be produced; `CancellationError`.
    public func call(
        _ input: [UInt8], to requestsTopic: String, requestID: String? = nil, key: [UInt8]? = nil,
        deadline: Duration? = nil, timeout: Duration = .seconds(30), traceparent: String? = nil
    ) async throws -> ResponseMessage {
        let token = Mutex<UInt64?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                do {
                    let started = try call(
                        input, to: requestsTopic, requestID: requestID, key: key, deadline: deadline, timeout: timeout,
                        traceparent: traceparent
                    ) { continuation.resume(with: $0) }
                    token.withLock { $0 = started }
                    if Task.isCancelled { cancel(started) }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            if let started = token.withLock({ $0 }) { cancel(started) }
        }
    }

    /// ``call(_:to:requestID:key:deadline:timeout:traceparent:)`` for a caller that must neither suspend nor block
    /// (an event loop): produces the request now and hands its outcome to `completion`, exactly once, on the thread
    /// that has it (the consumer's poll thread, the client's timer thread or the producer's poll thread): a
    /// ``ResponseMessage``, or ``Timeout``, ``Refused`` (the reply partition moved, the client closed) or the
    /// ``KafkaError`` that failed the request's delivery.
    /// - Returns: the call's token, for ``cancel(_:)``.
    /// - Throws: ``Refused`` and ``KafkaError`` (``KafkaError/Code/queueFull`` included) when the call does not start;
    ///   `completion` is then not called.
    @discardableResult
    public func call(
        _ input: [UInt8], to requestsTopic: String, requestID: String? = nil, key: [UInt8]? = nil,
        deadline: Duration? = nil, timeout: Duration = .seconds(30), traceparent: String? = nil,
        completion: @escaping @Sendable (Result<ResponseMessage, any Error>) -> Void
    ) throws -> UInt64 {
        let id = requestID ?? Self.newRequestID()
        // Registered before the request is produced, so that no response can come before its waiter.
        let waiter = ReplyWaiter(completion)
        let partition: Int32?
        let token: UInt64
        let (registration, alone) = state.withLock { ($0.register(id, waiter: waiter), $0.waitingCount == 1) }
        switch registration {
        case .waiting(let chosen, let filed): (partition, token) = (chosen, filed)
        case .refused(let reason): throw Refused(requestID: id, reason: reason)
        }
        var headers = Self.headers(requestID: id, deadline: deadline, traceparent: traceparent)
        headers.append(KafkaHeader(WireProtocol.Header.replyTo, replies.topic))
        if let partition { headers.append(KafkaHeader(WireProtocol.Header.replyPartition, String(partition))) }
        do {
            // The response, not the delivery report, ends the wait: a request Kafka refuses fails it. A call that no
            // other call waits beside goes at once, not after linger.ms (docs/kafka-layer.md, "Prompt when idle").
            try producer.sendNow(
                OutgoingMessage(topic: requestsTopic, key: key, value: input, headers: headers), promptly: alone
            ) { [state] in
                if case .failure(let error) = $0 { state.withLock { $0.giveUp(token) }?.fulfil(.failure(error)) }
            }
        } catch {
            _ = state.withLock { $0.giveUp(token) }
            throw error
        }
        timeouts.schedule(token, after: timeout)
        return token
    }

    /// Ends the call named by `token` with `CancellationError`, if it still waits; a response that still comes for
    /// it counts as late.
    public func cancel(_ token: UInt64) {
        state.withLock { $0.giveUp(token) }?.fulfil(.failure(CancellationError()))
    }

    /// Sends one request to `requestsTopic` without waiting for its response: the request names no reply-to topic, so
    /// it is answered on the pipeline's responses topic. Never suspends or blocks; `acknowledged` gets Kafka's
    /// acknowledgement (or the error that failed the delivery) once, on the producer's poll thread.
    /// - Returns: the request id.
    /// - Throws: ``KafkaError`` (``KafkaError/Code/queueFull`` included) when the request cannot be enqueued;
    ///   `acknowledged` is then not called.
    @discardableResult
    public func send(
        _ input: [UInt8], to requestsTopic: String, requestID: String? = nil, key: [UInt8]? = nil,
        deadline: Duration? = nil, traceparent: String? = nil,
        acknowledged: @escaping @Sendable (Result<Void, KafkaError>) -> Void
    ) throws -> String {
        let id = requestID ?? Self.newRequestID()
        let headers = Self.headers(requestID: id, deadline: deadline, traceparent: traceparent)
        try producer.sendNow(OutgoingMessage(topic: requestsTopic, key: key, value: input, headers: headers)) {
            acknowledged($0.map { _ in })
        }
        return id
    }

    /// Stops reading responses and ends every call still waiting with ``Refused`` (`closed`).
    public func close() async {
        _ = try? await DedicatedThread.run(name: "sluice-tstop") { [timeouts] in timeouts.stop() }
        await consumer.close()
        await producer.close()
        for (id, waiter) in state.withLock({ $0.removeAll() }) {
            waiter.fulfil(.failure(Refused(requestID: id, reason: .closed)))
        }
    }

    /// A new request id: 32 hexadecimal digits, a random 64-bit prefix of this process's and a 64-bit number no other
    /// id of this process has (a counter scrambled by a random key: the ids of a process do not show how many came
    /// before). Unique without a system call per id (the system's random source measured 2 % of a gateway's CPU).
    public static func newRequestID() -> String {
        let number = RequestIDs.scramble(RequestIDs.counter.add(1, ordering: .relaxed).newValue ^ RequestIDs.key)
        return String(unsafeUninitializedCapacity: 32) { buffer in
            let digits: StaticString = "0123456789abcdef"
            for (offset, value) in [(0, RequestIDs.prefix), (16, number)] {
                for index in 0..<16 {
                    let nibble = Int((value >> UInt64(60 - 4 * index)) & 0xF)
                    buffer[offset + index] = digits.utf8Start[nibble]
                }
            }
            return 32
        }
    }

    private static func headers(requestID: String, deadline: Duration?, traceparent: String?) -> [KafkaHeader] {
        var headers = [KafkaHeader(WireProtocol.Header.requestID, requestID)]
        if let deadline {
            let milliseconds =
                Timestamps.wallMicros() / 1000 + deadline.components.seconds * 1000
                + deadline.components.attoseconds / 1_000_000_000_000_000
            headers.append(KafkaHeader(WireProtocol.Header.deadline, String(milliseconds)))
        }
        if let traceparent { headers.append(KafkaHeader(WireProtocol.Header.traceparent, traceparent)) }
        return headers
    }

    /// Hands each response of a poll round to its call, on the consumer's poll thread (no hop to a task): what the
    /// call's completion does next (an event loop's `execute`, a continuation's resume) is as short. Responses
    /// produced before the client started (more than a second before: clocks differ) are skipped.
    private static func receive(_ batch: [KafkaMessage], state: LockedState, since started: Int64) {
        for message in batch {
            if let time = message.timestampMilliseconds, time < started - 1000 { continue }
            guard let response = ResponseMessage(message) else { continue }
            if case .deliver(let waiter) = state.withLock({ $0.resolve(response.requestID) }) {
                waiter.fulfil(.success(response))
            }
        }
    }
}

/// What ``PipelineClient/newRequestID()`` draws on: chosen at random once per process.
private enum RequestIDs {
    static let prefix = random()
    static let key = random()
    static let counter = Atomic<UInt64>(0)

    private static func random() -> UInt64 {
        var generator = SystemRandomNumberGenerator()
        return generator.next()
    }

    /// A bijection of 64-bit numbers that spreads each bit over all others (SplitMix64's finaliser), so distinct
    /// counts give distinct ids.
    static func scramble(_ value: UInt64) -> UInt64 {
        var mixed = value
        mixed = (mixed ^ (mixed >> 30)) &* 0xbf58_476d_1ce4_e5b9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94d0_49bb_1331_11eb
        return mixed ^ (mixed >> 31)
    }
}

/// A response as it came from Kafka: its value unparsed, with what its headers say.
public struct ResponseMessage: Sendable {
    public let requestID: String
    /// Whether the response is an error (`sluice-status: error`).
    public let isError: Bool
    /// The response object of docs/protocol.md, as the worker wrote it.
    public let value: [UInt8]
    /// The response's `traceparent` header: the worker's span of the request.
    public let traceparent: String?

    /// Reads `message`'s headers, or its value when it lacks them; `nil` when it is no response.
    init?(_ message: KafkaMessage) {
        guard let value = message.value else { return nil }
        self.value = value
        traceparent = message.headers.string(named: WireProtocol.Header.traceparent)
        if let id = message.headers.string(named: WireProtocol.Header.requestID),
            let status = message.headers.string(named: WireProtocol.Header.status)
        {
            requestID = id
            isError = status != "ok"
        } else {
            guard let response = try? Response(json: value) else { return nil }
            requestID = response.requestID
            isError = response.error != nil
        }
    }

    /// The response, parsed.
    /// - Throws: ``ResponseDecodingError`` when the value does not follow docs/protocol.md.
    public func response() throws -> Response {
        var response = try Response(json: value)
        response.traceparent = traceparent
        return response
    }
}

/// The client's state behind its lock, shared with the consumer's rebalance hooks.
private final class LockedState: Sendable {
    private let mutex: Mutex<ReplyCorrelation<ReplyWaiter>>

    init(_ state: ReplyCorrelation<ReplyWaiter>) { mutex = Mutex(state) }

    func withLock<T: Sendable>(_ body: (inout ReplyCorrelation<ReplyWaiter>) -> T) -> T {
        mutex.withLock { body(&$0) }
    }
}

/// The one caller waiting for a response: its completion, called at most once whoever fulfils it first (the
/// consumer's poll thread, the timer, a failed delivery, a cancellation, a revoke or the close).
private final class ReplyWaiter: Sendable {
    private let completion: Mutex<(@Sendable (Result<ResponseMessage, any Error>) -> Void)?>

    init(_ completion: @escaping @Sendable (Result<ResponseMessage, any Error>) -> Void) {
        self.completion = Mutex(completion)
    }

    func fulfil(_ result: Result<ResponseMessage, any Error>) {
        completion.withLock { pending in
            defer { pending = nil }
            return pending
        }?(result)
    }
}
