import CRdKafka
import Dispatch
import Logging
import Synchronization
import SystemSupport

/// A group consumer handle with its poll thread and a bounded buffer of records for the Swift side (or, given a
/// ``Handler``, records handed to it on the poll thread, with no buffer).
///
/// The poll thread blocks in `rd_kafka_consumer_poll` until a record or event arrives, copies records into the
/// buffer and serves rebalances. When the buffer holds `capacity` records, the thread stops polling and waits for
/// the reader to take it down to half: records wait in librdkafka's own bounded queue (`queued.max.messages.kbytes`),
/// and nothing is fetched twice. Only when the buffer stays full for ``pauseAfter`` does the thread pause every
/// assigned partition (librdkafka then drops what it prefetched and resumes from the next record not yet returned)
/// and go on serving rebalances; when the reader has taken the buffer down to half, it resumes them. Pausing is for
/// a reader that stalls: in librdkafka 2.0.2 a resumed partition's fetcher restarts only on its broker thread's next
/// wake-up, up to about a second later, so a reader that merely keeps up slowly must not pause on every burst. Only
/// the poll thread calls pause/resume, so the paused set librdkafka holds is the one recorded here.
final class ConsumerClient: RDKafkaClient, @unchecked Sendable {
    // @unchecked Sendable: mutable state is in `state` (a ConsumerStateMachine behind a Mutex); `pollThread` and
    // `queue` are written in `init` only; `pendingRevoke` belongs to the poll thread, then to the closing thread once
    // it has joined the poll thread; librdkafka's handle and queue are thread-safe.

    private typealias Reader = CheckedContinuation<KafkaMessage?, Never>

    /// How long the buffer may stay full before the partitions are paused.
    static let pauseAfter: DispatchTimeInterval = .milliseconds(500)

    let capacity: Int
    /// Takes each poll round's records on the poll thread instead of the buffer (see ``KafkaConsumer``).
    struct Handler {
        var storesOffsets: Bool
        var handle: @Sendable ([KafkaMessage]) -> Void
    }

    private let handler: Handler?
    private let rebalanceHandler: RebalanceHandler
    private let state: Mutex<ConsumerStateMachine<Reader>>
    /// Signalled by the reader when it takes the buffer down to half while the poll thread waits for room.
    private let drained = DispatchSemaphore(value: 0)
    private var queue: OpaquePointer!
    private var pollThread: DedicatedThread?

    /// A revoke whose hook runs: librdkafka waits for the unassign until ``finishRevoke(_:)``.
    private struct PendingRevoke {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>
        var partitions: [TopicPartition]
        var lost: Bool
        var cooperative: Bool
    }

    /// Poll thread only, or the closing thread once the poll thread has ended.
    private var pendingRevoke: PendingRevoke?
    /// When the poll thread last went round its loop (`DispatchTime` nanoseconds), for liveness.
    private let lastPolled = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)
    /// Signalled once by every revoke hook when it finishes; waited for once by whoever completes that revoke.
    private let revokeHookDone = DispatchSemaphore(value: 0)
    /// Destroying the handle would abort the process if the consumer never got an assignment: see
    /// ``releaseHandle(flags:)``.
    private let destroyAbortsUnlessAssigned: Bool

    /// Before 2.3.0, librdkafka asserts in `rd_kafka_destroy` when a group member that uses a sticky assignor
    /// (`cooperative-sticky`, Sluice's default, or `sticky`) joined its group but never received an assignment: the
    /// assignor's state is still null (librdkafka issue 4312, fixed by pull request 4381).
    private static let stickyAssignorAbortsOnDestroy = rd_kafka_version() < 0x0203_0000

    /// What a consumer reads: the partitions the group gives it for `topics`, or fixed `partitions`.
    enum Source {
        case topics([String])
        case partitions([TopicPartition])
    }

    init(
        configuration: KafkaConfiguration, source: Source, capacity: Int, rebalanceHandler: RebalanceHandler,
        handler: Handler? = nil, logger: Logger,
        onError: @escaping @Sendable (KafkaError) -> Void
    ) throws {
        let machine = ConsumerStateMachine<Reader>(capacity: capacity)
        if case .topics = source, Self.stickyAssignorAbortsOnDestroy {
            destroyAbortsUnlessAssigned = configuration["partition.assignment.strategy"]?.contains("sticky") ?? false
        } else {
            destroyAbortsUnlessAssigned = false
        }
        self.capacity = machine.capacity
        self.handler = handler
        state = Mutex(machine)
        self.rebalanceHandler = rebalanceHandler
        try super.init(type: RD_KAFKA_CONSUMER, configuration: configuration, logger: logger, onError: onError) {
            try KafkaConfiguration.apply("enable.auto.offset.store", "false", to: $0)
            rd_kafka_conf_set_rebalance_cb($0, rebalanceCallback)
        }
        rd_kafka_poll_set_consumer(handle)
        queue = rd_kafka_queue_get_consumer(handle)
        do {
            switch source {
            case .topics(let topics):
                let subscription = topics.map { (TopicPartition($0, RD_KAFKA_PARTITION_UA), Int64?.none) }
                try TopicPartition.withNativeList(subscription) {
                    try KafkaError.check(rd_kafka_subscribe(handle, $0), "subscribing to \(topics)")
                }
            case .partitions(let partitions):
                // No offsets given: each partition starts at the group's committed offset, else auto.offset.reset.
                try TopicPartition.withNativeList(partitions.map { ($0, nil) }) {
                    try KafkaError.check(rd_kafka_assign(handle, $0), "assigning \(partitions.sorted())")
                }
                state.withLock { $0.assigned(partitions) }
                logger.info("assigned \(partitions.sorted())")
            }
            pollThread = try DedicatedThread.start(name: "sluice-kcons") { [self] in pollLoop() }
        } catch {
            rd_kafka_queue_destroy(queue)
            destroyHandle(flags: Int32(RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE))
            throw error
        }
    }

    // MARK: - Poll thread

    private func pollLoop() {
        var decoder = MessageDecoder()
        var batch = [UnsafeMutablePointer<rd_kafka_message_t>?](repeating: nil, count: 256)
        while state.withLock({ $0.isPolling }) {
            lastPolled.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
            finishRevokeIfHookFinished()
            reconcilePauses()
            if waitForRoom() { continue }
            // Blocks until a record or event; rd_kafka_queue_yield wakes it for a stop or a resume.
            guard let first = rd_kafka_consumer_poll(handle, 1000) else { continue }
            if let handler {
                hand(first, batch: &batch, &decoder, to: handler)
                continue
            }
            accept(first, &decoder)
            // Take what else is ready without waiting, up to the room left in the buffer.
            let room = min(batch.count, state.withLock { $0.roomLeft })
            guard room > 0 else { continue }
            let count = batch.withUnsafeMutableBufferPointer {
                rd_kafka_consume_batch_queue(queue, 0, $0.baseAddress, room)
            }
            for index in 0..<max(0, count) { accept(batch[index]!, &decoder) }
        }
    }

    private func accept(_ native: UnsafeMutablePointer<rd_kafka_message_t>, _ decoder: inout MessageDecoder) {
        guard let message = take(native, &decoder) else { return }
        state.withLock { $0.arrived(message) }?.resume(returning: message)
    }

    /// Hands `first` and the records ready behind it to `handler`, then stores their offsets if it says so: a record
    /// the handler returned from is done.
    private func hand(
        _ first: UnsafeMutablePointer<rd_kafka_message_t>, batch: inout [UnsafeMutablePointer<rd_kafka_message_t>?],
        _ decoder: inout MessageDecoder, to handler: Handler
    ) {
        var messages: [KafkaMessage] = []
        if let message = take(first, &decoder) { messages.append(message) }
        let count = batch.withUnsafeMutableBufferPointer {
            rd_kafka_consume_batch_queue(queue, 0, $0.baseAddress, $0.count)
        }
        for index in 0..<max(0, count) {
            if let message = take(batch[index]!, &decoder) { messages.append(message) }
        }
        guard !messages.isEmpty else { return }
        handler.handle(messages)
        guard handler.storesOffsets else { return }
        var next: [TopicPartition: Int64] = [:]
        for message in messages { next[message.topicPartition] = message.offset + 1 }
        do {
            try storeOffsets(next.map { ($0.key, $0.value) })
        } catch {
            // A partition revoked meanwhile: its next owner reads from the last commit.
            logger.debug("\(error)")
        }
    }

    /// Decodes a record and releases librdkafka's; `nil` (logged, and passed to `onError`) for a consume error.
    private func take(
        _ native: UnsafeMutablePointer<rd_kafka_message_t>, _ decoder: inout MessageDecoder
    ) -> KafkaMessage? {
        defer { rd_kafka_message_destroy(native) }
        let err = native.pointee.err
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            if err != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                let error = KafkaError(err, "consuming")
                logger.warning("\(error)")
                onError(error)
            }
            return nil
        }
        return decoder.decode(native)
    }

    /// While the buffer is full (and the partitions not yet paused for it), waits for the reader to take it down to
    /// half, at most ``pauseAfter``; if it is still full then, asks for the partitions to be paused.
    /// - Returns: whether it waited (the loop then starts over).
    private func waitForRoom() -> Bool {
        guard state.withLock({ $0.startWaitingForRoom() }) else { return false }
        let outcome = drained.wait(timeout: .now() + Self.pauseAfter)
        state.withLock { $0.roomWaitEnded(timedOut: outcome == .timedOut) }
        return true
    }

    /// Brings librdkafka's paused set to what backpressure and the user ask for. Poll thread only (or the closing
    /// thread once the poll thread has ended).
    private func reconcilePauses() {
        guard let change = state.withLock({ $0.reconcilePauses() }) else { return }
        setPaused(change.pause, true)
        setPaused(change.resume, false)
    }

    private func setPaused(_ partitions: [TopicPartition], _ paused: Bool) {
        guard !partitions.isEmpty else { return }
        let err = TopicPartition.withNativeList(partitions.map { ($0, nil) }) {
            paused ? rd_kafka_pause_partitions(handle, $0) : rd_kafka_resume_partitions(handle, $0)
        }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            logger.warning("\(KafkaError(err, "\(paused ? "pausing" : "resuming") \(partitions.sorted())"))")
        }
    }

    private func wakePollThread() {
        rd_kafka_queue_yield(queue)
    }

    // MARK: - Rebalance (poll thread, or the closing thread inside rd_kafka_consumer_close)

    fileprivate func rebalance(
        _ err: rd_kafka_resp_err_t, _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
    ) {
        let partitions = TopicPartition.array(from: list)
        let cooperative = String(cString: rd_kafka_rebalance_protocol(handle)) == "COOPERATIVE"
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            let context = "assigning \(partitions.sorted())"
            var failure: KafkaError?
            if cooperative {
                failure = rd_kafka_incremental_assign(handle, list).map { KafkaError.consuming($0, context) }
            } else {
                let err = rd_kafka_assign(handle, list)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { failure = KafkaError(err, context) }
            }
            if let failure {
                logger.error("\(failure)")
                onError(failure)
            }
            state.withLock { $0.assigned(partitions) }
            reconcilePauses()
            logger.info("assigned \(partitions.sorted())")
            rebalanceHandler.partitionsAssigned(partitions)
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            guard let list else { return }
            let lost = rd_kafka_assignment_lost(handle) != 0
            logger.info("revoking \(partitions.sorted())\(lost ? " (lost)" : "")")
            // On the poll thread the hook runs on the pool while polling goes on; the revoke completes on a later
            // turn of the loop. Inside rd_kafka_consumer_close (the closing thread) it must complete before returning.
            let onPollThread = state.withLock { $0.isPolling }
            // Buffered records of these partitions are not handed out any more: their next owner reads them.
            state.withLock { $0.revoking(Set(partitions), hookOnPool: onPollThread) }
            pendingRevoke = PendingRevoke(
                list: rd_kafka_topic_partition_list_copy(list), partitions: partitions, lost: lost,
                cooperative: cooperative)
            // The partitions are still assigned while the hook runs, so it can store offsets for them.
            Task {
                await rebalanceHandler.partitionsRevoked(partitions, lost)
                if state.withLock({ $0.revokeHookFinished() }) { wakePollThread() }
                revokeHookDone.signal()
            }
            if !onPollThread {
                revokeHookDone.wait()
                finishRevoke(Set(partitions))
            }
        default:
            let error = KafkaError(err, "rebalance")
            logger.error("\(error)")
            onError(error)
            _ = rd_kafka_assign(handle, nil)
            state.withLock { $0.assignmentLost() }
        }
    }

    /// Completes the pending revoke whose hook has finished: resumes its paused partitions, commits the stored offsets
    /// (unless the partitions were lost) and unassigns them. Poll thread, or the closing thread.
    private func finishRevoke(_ revoked: Set<TopicPartition>) {
        guard let revoke = pendingRevoke else { return }
        pendingRevoke = nil
        defer { rd_kafka_topic_partition_list_destroy(revoke.list) }
        let stillPaused = state.withLock { $0.revoked(revoked) }
        // librdkafka keeps a partition's pause across reassignment; clear it so a later assignment starts clean.
        setPaused(stillPaused, false)
        // A refused commit means the partitions' next owner re-reads from the last committed offset.
        if !revoke.lost, let error = commitStoredOffsets(context: "committing on revoke") { onError(error) }
        if revoke.cooperative {
            if let error = rd_kafka_incremental_unassign(handle, revoke.list) {
                logger.error("\(KafkaError.consuming(error, "unassigning \(revoke.partitions.sorted())"))")
            }
        } else {
            let err = rd_kafka_assign(handle, nil)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.error("\(KafkaError(err, "unassigning"))") }
        }
    }

    /// Completes the pending revoke if its hook has finished. Poll thread.
    private func finishRevokeIfHookFinished() {
        guard let revoked = state.withLock({ $0.takeFinishedRevocation() }) else { return }
        revokeHookDone.wait()
        finishRevoke(revoked)
    }

    /// Commits the stored offsets of the current assignment, synchronously. Blocking: poll or closing thread, or a
    /// ``DedicatedThread``.
    @discardableResult
    private func commitStoredOffsets(context: String) -> KafkaError? {
        let err = rd_kafka_commit(handle, nil, 0)
        // Nothing stored since the last commit is not a failure.
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR, err != RD_KAFKA_RESP_ERR__NO_OFFSET else { return nil }
        let error = KafkaError(err, context)
        logger.warning("\(error)")
        return error
    }

    // MARK: - Reading records

    /// The next record, waiting for one if the buffer is empty; `nil` once reading stopped, the consumer is closed or
    /// the calling task is cancelled.
    func next() async -> KafkaMessage? {
        if let ready = takeBuffered() { return ready }
        let id = state.withLock { $0.makeReaderID() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { reader in
                // A task cancelled before it got here would never be woken by the cancellation handler.
                let read = state.withLock { $0.read(reader, id: id, cancelled: Task.isCancelled) }
                if case .now(let message, let wake) = read {
                    perform(wake)
                    reader.resume(returning: message)
                }
            }
        } onCancel: {
            state.withLock { $0.cancel(reader: id) }?.resume(returning: nil)
        }
    }

    /// The next record (waiting for one as ``next()`` does) and up to `limit - 1` more already buffered: empty once
    /// the consumer is closed or reading stopped.
    func nextBatch(limit: Int) async -> [KafkaMessage] {
        guard let first = await next() else { return [] }
        var batch = [first]
        while batch.count < limit, let more = takeBuffered() { batch.append(more) }
        return batch
    }

    /// A buffered record, unless reading stopped.
    private func takeBuffered() -> KafkaMessage? {
        guard let (message, wake) = state.withLock({ $0.readingStopped ? nil : $0.takeBuffered() }) else { return nil }
        perform(wake)
        return message
    }

    private func perform(_ wake: ConsumerStateMachine<Reader>.Wake) {
        if wake.pollThread { wakePollThread() }
        if wake.roomWaiter { drained.signal() }
    }

    /// Ends the record sequence for its readers (waiting ones get `nil` now) while the consumer stays in its group,
    /// so that work in flight can still store and commit its offsets.
    func stopReading() {
        for reader in state.withLock({ $0.stopReading() }) { reader.resume(returning: nil) }
    }

    // MARK: - Offsets, pausing, assignment

    func storeOffsets(_ offsets: [(TopicPartition, Int64)]) throws {
        try TopicPartition.withNativeList(offsets.map { ($0.0, $0.1) }) { list in
            try KafkaError.check(rd_kafka_offsets_store(handle, list), "storing offsets")
            for index in 0..<Int(list.pointee.cnt) where list.pointee.elems[index].err != RD_KAFKA_RESP_ERR_NO_ERROR {
                let element = list.pointee.elems[index]
                throw KafkaError(
                    element.err,
                    "storing offset \(element.offset) for \(String(cString: element.topic))[\(element.partition)]")
            }
        }
    }

    func commit() async throws {
        try await DedicatedThread.run(name: "sluice-kcommit") { [self] in
            guard !state.withLock({ $0.isClosed }) else { throw KafkaError.closed("committing") }
            if let error = commitStoredOffsets(context: "committing") { throw error }
        }
    }

    func committedOffsets(_ partitions: [TopicPartition], timeout: Duration) async throws -> [TopicPartition: Int64] {
        let milliseconds = ProducerClient.milliseconds(timeout)
        return try await DedicatedThread.run(name: "sluice-kcommitted") { [self] in
            guard !state.withLock({ $0.isClosed }) else { throw KafkaError.closed("reading committed offsets") }
            return try TopicPartition.withNativeList(partitions.map { ($0, nil) }) { list in
                try KafkaError.check(rd_kafka_committed(handle, list, milliseconds), "reading committed offsets")
                var offsets: [TopicPartition: Int64] = [:]
                for index in 0..<Int(list.pointee.cnt) {
                    let element = list.pointee.elems[index]
                    offsets[TopicPartition(String(cString: element.topic), element.partition)] = element.offset
                }
                return offsets
            }
        }
    }

    func setPausedByUser(_ partitions: [TopicPartition], _ paused: Bool) {
        state.withLock { $0.setPausedByUser(partitions, paused) }
        wakePollThread()
    }

    var assignment: Set<TopicPartition> { state.withLock { $0.assignment } }

    var hasJoined: Bool { state.withLock { $0.hasJoined } }

    /// Asks librdkafka's group thread, so it runs on a ``DedicatedThread``.
    func memberID() async -> String? {
        try? await DedicatedThread.run(name: "sluice-kmember") { [self] in
            guard !state.withLock({ $0.isClosed }), let id = rd_kafka_memberid(handle) else { return nil }
            defer { rd_kafka_mem_free(handle, id) }
            return id.pointee == 0 ? nil : String(cString: id)
        }
    }

    var timeSinceLastPoll: Duration {
        let nanoseconds = DispatchTime.now().uptimeNanoseconds &- lastPolled.load(ordering: .relaxed)
        return .nanoseconds(Int64(clamping: nanoseconds))
    }

    func highWatermarks(_ partitions: [TopicPartition]) -> [TopicPartition: Int64] {
        // Under the lock: `shutdown` marks the client closed under it before it destroys the handle.
        state.withLock { state in
            guard !state.isClosed else { return [:] }
            var watermarks: [TopicPartition: Int64] = [:]
            for partition in partitions {
                var low: Int64 = -1
                var high: Int64 = -1
                let err = rd_kafka_get_watermark_offsets(handle, partition.topic, partition.partition, &low, &high)
                if err == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 { watermarks[partition] = high }
            }
            return watermarks
        }
    }

    func lag() -> [TopicPartition: Int64] {
        // Under the lock: `shutdown` marks the client closed under it before it destroys the handle.
        state.withLock { state in
            guard !state.isClosed, !state.assignment.isEmpty else { return [:] }
            let assigned = Array(state.assignment)
            return TopicPartition.withNativeList(assigned.map { ($0, nil) }) { list in
                guard rd_kafka_position(handle, list) == RD_KAFKA_RESP_ERR_NO_ERROR else { return [:] }
                var lag: [TopicPartition: Int64] = [:]
                for index in 0..<Int(list.pointee.cnt) {
                    let element = list.pointee.elems[index]
                    // A partition nothing was taken from yet has no position: left out.
                    guard element.offset >= 0 else { continue }
                    var low: Int64 = -1
                    var high: Int64 = -1
                    let err = rd_kafka_get_watermark_offsets(handle, element.topic, element.partition, &low, &high)
                    guard err == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 else { continue }
                    let partition = TopicPartition(String(cString: element.topic), element.partition)
                    lag[partition] = max(0, high - element.offset)
                }
                return lag
            }
        }
    }

    var pausedPartitions: Set<TopicPartition> { state.withLock { $0.pausedNow } }

    // MARK: - Close

    /// Stops the poll thread, leaves the group (running the revoke hook and committing, when `leaveGroup`), ends the
    /// record sequence and destroys the handle. Blocks; idempotent.
    func shutdown(leaveGroup: Bool) {
        guard state.withLock({ $0.beginShutdown() }) else { return }
        wakePollThread()
        drained.signal()
        pollThread?.join()
        if let revoke = pendingRevoke {
            // The poll thread ended while a revoke hook ran: complete that revoke before leaving the group.
            revokeHookDone.wait()
            _ = state.withLock { $0.takeFinishedRevocation() }
            finishRevoke(Set(revoke.partitions))
        }
        if leaveGroup {
            // Serves the final revoke on this thread: the hook runs and stored offsets are committed.
            let err = rd_kafka_consumer_close(handle)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { logger.warning("\(KafkaError(err, "leaving the group"))") }
        }
        for reader in state.withLock({ $0.close() }) { reader.resume(returning: nil) }
        rd_kafka_queue_destroy(queue)
        releaseHandle(flags: leaveGroup ? 0 : Int32(RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE))
    }

    /// Destroys the handle, unless that would abort the process (``stickyAssignorAbortsOnDestroy``): a member that
    /// never received an assignment may have joined, and librdkafka offers no way to tell. Such a handle is left to
    /// the process's exit instead, with this client kept alive for the callbacks librdkafka may still make; it has
    /// left its group already when the consumer was closed.
    private func releaseHandle(flags: Int32) {
        guard destroyAbortsUnlessAssigned, !state.withLock({ $0.hasJoined }) else {
            destroyHandle(flags: flags)
            return
        }
        _ = Unmanaged.passRetained(self)
        logger.notice(
            "the consumer closed before its first assignment: its librdkafka handle is kept until the process exits, as destroying it would abort with librdkafka \(KafkaConfiguration.librdkafkaVersion) (librdkafka issue 4312)"
        )
    }
}

private let rebalanceCallback:
    @convention(c) (
        OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
        UnsafeMutableRawPointer?
    ) -> Void = { _, err, list, opaque in
        guard let opaque else { return }
        let client = unsafeDowncast(
            Unmanaged<RDKafkaClient>.fromOpaque(opaque).takeUnretainedValue(), to: ConsumerClient.self)
        client.rebalance(err, list)
    }
