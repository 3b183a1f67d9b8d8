import CRdKafka
import Dispatch
import Logging
import Synchronization
import SystemSupport

/// The outcome of one produced record, as its delivery report says.
typealias DeliveryHandler = @Sendable (Result<DeliveryReport, KafkaError>) -> Void

/// A producer handle with its poll thread. The thread serves delivery reports (calling each record's handler) and
/// client errors; it blocks in `rd_kafka_poll` until an event arrives, and `rd_kafka_yield` wakes it to stop.
///
/// Also the handle behind ``KafkaAdmin``: librdkafka runs admin requests on a producer-type handle.
final class ProducerClient: RDKafkaClient, @unchecked Sendable {
    // @unchecked Sendable: mutable state is in `state` (a Mutex); `pollThread` is written once in `init`.

    private struct State {
        var closed = false
        /// Counts poll rounds that served events; a sender that saw `QUEUE_FULL` waits for it to change.
        var servedRounds: UInt64 = 0
        /// Wake-ups of senders waiting for room, called after the next poll round that served events, or on close.
        var spaceWaiters: [@Sendable () -> Void] = []
    }

    private let state = Mutex(State())
    private var pollThread: DedicatedThread?
    /// Called after each round of delivery reports (``onDeliveryRound(_:)``).
    private let roundHandler = Mutex<RoundHandler?>(nil)
    /// Topic names by librdkafka's topic handle (which lives as long as the client): a delivery report names its
    /// topic without building a string per record.
    private let topicNames = Mutex<[Int: String]>([:])

    init(configuration: KafkaConfiguration, logger: Logger, onError: @escaping @Sendable (KafkaError) -> Void) throws {
        try super.init(type: RD_KAFKA_PRODUCER, configuration: configuration, logger: logger, onError: onError) {
            rd_kafka_conf_set_dr_msg_cb($0, deliveryReportCallback)
        }
        do {
            pollThread = try DedicatedThread.start(name: "sluice-kprod") { [self] in pollLoop() }
        } catch {
            destroyHandle()
            throw error
        }
    }

    private func pollLoop() {
        while !state.withLock({ $0.closed }) {
            // Blocks until a delivery report or error arrives; the timeout only bounds how long a stop can go
            // unnoticed if the wake-up were lost.
            if rd_kafka_poll(handle, 1000) > 0 {
                deliveryRoundEnded()
                let waiters = state.withLock { state in
                    state.servedRounds &+= 1
                    defer { state.spaceWaiters.removeAll() }
                    return state.spaceWaiters
                }
                for waiter in waiters { waiter() }
            }
        }
    }

    /// Sets what runs after each round of delivery reports, once their handlers ran, on the thread that served
    /// them (the poll thread, or one that flushes or shuts down).
    func onDeliveryRound(_ handler: @escaping @Sendable () -> Void) {
        roundHandler.withLock { $0 = RoundHandler(body: handler) }
    }

    private func deliveryRoundEnded() {
        roundHandler.withLock { $0 }?.body()
    }

    /// The handler in a struct of its own: a bare closure in a `Mutex` gains two reabstraction thunks every time
    /// `withLock` reads it (swiftlang/swift#91348), so each round would call through a longer chain than the last.
    private struct RoundHandler {
        let body: @Sendable () -> Void
    }

    // MARK: - Producing

    /// Enqueues `message`; `onDelivery` runs once with its delivery report, on the poll thread. When librdkafka's
    /// queue is full, waits for delivery reports to make room and tries again.
    /// - Throws: ``KafkaError`` if the record cannot be enqueued (unknown partition, too large, client closed);
    ///   `onDelivery` is then not called.
    func produce(_ message: OutgoingMessage, onDelivery: @escaping DeliveryHandler) async throws {
        let token = Unmanaged.passRetained(DeliveryToken(onDelivery)).toOpaque()
        while let round = try enqueue(message, token: token) {
            await withCheckedContinuation { continuation in
                if !waitForSpace(after: round, { continuation.resume() }) { continuation.resume() }
            }
        }
    }

    /// ``produce(_:onDelivery:)`` for a thread of the caller's own: blocks that thread while librdkafka's queue is
    /// full. Never call it from the poll thread or from Swift's cooperative pool.
    func produceBlocking(_ message: OutgoingMessage, onDelivery: @escaping DeliveryHandler) throws {
        let token = Unmanaged.passRetained(DeliveryToken(onDelivery)).toOpaque()
        // Made only when the queue is full: most records are enqueued at the first try.
        var room: DispatchSemaphore?
        while let round = try enqueue(message, token: token) {
            let wake = room ?? DispatchSemaphore(value: 0)
            room = wake
            if waitForSpace(after: round, { wake.signal() }) { wake.wait() }
        }
    }

    /// ``produce(_:onDelivery:)`` for a caller that must neither suspend nor block (an event loop).
    /// - Throws: ``KafkaError`` if the record cannot be enqueued, ``KafkaError/Code/queueFull`` when librdkafka's queue
    ///   is full; `onDelivery` is then not called.
    func produceNow(_ message: OutgoingMessage, onDelivery: @escaping DeliveryHandler) throws {
        let token = Unmanaged.passRetained(DeliveryToken(onDelivery)).toOpaque()
        if try enqueue(message, token: token) != nil {
            _ = Unmanaged<DeliveryToken>.fromOpaque(token).takeRetainedValue()
            throw KafkaError(RD_KAFKA_RESP_ERR__QUEUE_FULL, "producing to \(message.topic)")
        }
    }

    /// Tries to enqueue: `nil` when enqueued, or the poll round after which to try again when the queue is full.
    /// - Throws: ``KafkaError`` for any other refusal; the token is then released.
    private func enqueue(_ message: OutgoingMessage, token: UnsafeMutableRawPointer) throws -> UInt64? {
        guard let round = state.withLock({ $0.closed ? nil : $0.servedRounds }) else {
            _ = Unmanaged<DeliveryToken>.fromOpaque(token).takeRetainedValue()
            throw KafkaError.closed("producing to \(message.topic)")
        }
        let err = enqueueOnce(message, token: token)
        if err == RD_KAFKA_RESP_ERR_NO_ERROR { return nil }
        guard err == RD_KAFKA_RESP_ERR__QUEUE_FULL else {
            _ = Unmanaged<DeliveryToken>.fromOpaque(token).takeRetainedValue()
            throw KafkaError(err, "producing to \(message.topic)")
        }
        return round
    }

    /// Registers `wake` for the first poll round after `round` that serves events (or for the close).
    /// - Returns: `false` when such a round already happened, or the client is closed: try again at once.
    private func waitForSpace(after round: UInt64, _ wake: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state in
            guard !state.closed, state.servedRounds == round else { return false }
            state.spaceWaiters.append(wake)
            return true
        }
    }

    /// One `rd_kafka_produceva` call. librdkafka copies key and value (`RD_KAFKA_MSG_F_COPY`); the headers list is
    /// ours and passes to librdkafka only when the call succeeds (librdkafka #4627: never `RD_KAFKA_VTYPE_HEADER`).
    private func enqueueOnce(_ message: OutgoingMessage, token: UnsafeMutableRawPointer) -> rd_kafka_resp_err_t {
        let headers = Self.nativeHeaders(message.headers)
        let err = message.topic.withCString { topic in
            withOptionalBytes(message.key) { key in
                withOptionalBytes(message.value) { value in
                    produceva(
                        topic: topic, partition: message.partition, key: key, value: value, headers: headers,
                        token: token)
                }
            }
        }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR, let headers { rd_kafka_headers_destroy(headers) }
        return err
    }

    private static func nativeHeaders(_ headers: [KafkaHeader]) -> OpaquePointer? {
        guard !headers.isEmpty else { return nil }
        let native = rd_kafka_headers_new(headers.count)
        for header in headers {
            // The name goes with its length: passing a String where C wants a string copied it to a new buffer.
            var name = header.name
            name.withUTF8 { name in
                name.withMemoryRebound(to: CChar.self) { name in
                    if let value = header.value {
                        value.withUnsafeBytes {
                            _ = rd_kafka_header_add(native, name.baseAddress, name.count, $0.baseAddress, $0.count)
                        }
                    } else {
                        _ = rd_kafka_header_add(native, name.baseAddress, name.count, nil, 0)
                    }
                }
            }
        }
        return native
    }

    private func produceva(
        topic: UnsafePointer<CChar>, partition: Int32?, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?,
        headers: OpaquePointer?, token: UnsafeMutableRawPointer
    ) -> rd_kafka_resp_err_t {
        withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 7) { fields in
            var count = 0
            func add(_ type: rd_kafka_vtype_t, _ fill: (inout rd_kafka_vu_t) -> Void) {
                fields[count] = rd_kafka_vu_t()
                fields[count].vtype = type
                fill(&fields[count])
                count += 1
            }
            func bytes(_ buffer: UnsafeRawBufferPointer) -> rd_kafka_vu_t.__Unnamed_union_u.__Unnamed_struct_mem {
                .init(ptr: UnsafeMutableRawPointer(mutating: buffer.baseAddress), size: buffer.count)
            }
            add(RD_KAFKA_VTYPE_TOPIC) { $0.u.cstr = topic }
            add(RD_KAFKA_VTYPE_MSGFLAGS) { $0.u.i = RD_KAFKA_MSG_F_COPY }
            add(RD_KAFKA_VTYPE_OPAQUE) { $0.u.ptr = token }
            if let partition { add(RD_KAFKA_VTYPE_PARTITION) { $0.u.i32 = partition } }
            if let key { add(RD_KAFKA_VTYPE_KEY) { $0.u.mem = bytes(key) } }
            if let value { add(RD_KAFKA_VTYPE_VALUE) { $0.u.mem = bytes(value) } }
            if let headers { add(RD_KAFKA_VTYPE_HEADERS) { $0.u.headers = headers } }
            guard let error = rd_kafka_produceva(handle, fields.baseAddress, count) else {
                return RD_KAFKA_RESP_ERR_NO_ERROR
            }
            defer { rd_kafka_error_destroy(error) }
            return rd_kafka_error_code(error)
        }
    }

    // MARK: - Flush and close

    /// Records enqueued or in flight whose delivery report has not been served yet.
    var outstanding: Int { Int(rd_kafka_outq_len(handle)) }

    /// Waits until every enqueued record has its delivery report, or `timeout` passes.
    /// - Throws: ``KafkaError`` with ``KafkaError/Code/timedOut`` saying how many records are still waiting.
    func flush(timeout: Duration) async throws {
        let milliseconds = Self.milliseconds(timeout)
        try await DedicatedThread.run(name: "sluice-kflush") { [self] in
            guard !state.withLock({ $0.closed }) else { return }
            let err = rd_kafka_flush(handle, milliseconds)
            // rd_kafka_flush serves delivery reports on this thread.
            deliveryRoundEnded()
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw KafkaError(err, "flush: \(outstanding) records still without a delivery report after \(timeout)")
            }
        }
    }

    /// Stops the client: records not yet delivered are purged (their handlers get a `_PURGE_*` error), the poll
    /// thread ends and the handle is destroyed. Blocks; idempotent.
    func shutdown() {
        let first = state.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        rd_kafka_purge(handle, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT))
        // Serve the purged records' reports so every handler runs exactly once (bounded: purging is local).
        for _ in 0..<100 where rd_kafka_outq_len(handle) > 0 {
            rd_kafka_poll(handle, 50)
        }
        deliveryRoundEnded()
        rd_kafka_yield(handle)
        pollThread?.join()
        let waiters = state.withLock { state in
            defer { state.spaceWaiters.removeAll() }
            return state.spaceWaiters
        }
        for waiter in waiters { waiter() }
        destroyHandle()
    }

    static func milliseconds(_ duration: Duration) -> Int32 {
        let (seconds, attoseconds) = duration.components
        let total = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return Int32(clamping: max(0, total))
    }
}

/// Carries a record's delivery handler through librdkafka as the record's opaque pointer: retained when the record
/// is enqueued, released by the delivery report (or by the failed enqueue).
private final class DeliveryToken {
    let handler: DeliveryHandler
    init(_ handler: @escaping DeliveryHandler) { self.handler = handler }
}

/// Calls `body` with `bytes`, `nil` for `nil`. An empty array gets a non-null address, so that librdkafka keeps an
/// empty key or value apart from a missing one (a null value is a tombstone).
private func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
    guard let bytes else { return body(nil) }
    if bytes.isEmpty {
        return withUnsafeTemporaryAllocation(byteCount: 1, alignment: 1) {
            body(UnsafeRawBufferPointer(rebasing: $0[0..<0]))
        }
    }
    return bytes.withUnsafeBytes { body($0) }
}

extension ProducerClient {
    /// The name of the topic behind `topic`, a handle of this client.
    fileprivate func name(of topic: OpaquePointer) -> String {
        let address = Int(bitPattern: UnsafeRawPointer(topic))
        if let name = topicNames.withLock({ $0[address] }) { return name }
        let name = String(cString: rd_kafka_topic_name(topic))
        topicNames.withLock { $0[address] = name }
        return name
    }
}

private let deliveryReportCallback:
    @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
        rk, native, _ in
        guard let native, let opaque = native.pointee._private else { return }
        let token = Unmanaged<DeliveryToken>.fromOpaque(opaque).takeRetainedValue()
        let record = native.pointee
        let producer = client(rk) as? ProducerClient
        let topic = record.rkt.map { rkt in producer?.name(of: rkt) ?? String(cString: rd_kafka_topic_name(rkt)) } ?? ""
        if record.err == RD_KAFKA_RESP_ERR_NO_ERROR {
            token.handler(.success(DeliveryReport(topic: topic, partition: record.partition, offset: record.offset)))
        } else {
            token.handler(.failure(KafkaError(record.err, "delivering to \(topic)[\(record.partition)]")))
        }
    }
