import Logging
import SystemSupport

/// A member of a consumer group: subscribes to topics and reads their records through ``messages``; or, created with
/// fixed partitions, a reader of just those, committing to its group without joining it.
///
/// Offsets are stored by hand (`enable.auto.offset.store=false` is forced): a record counts as done only once
/// ``storeOffset(_:nextOffset:)`` says so, and librdkafka's auto-commit (or ``commit()``) commits what is stored.
/// Tombstones (`nil` value) and records without a key are ordinary records.
///
/// Rebalancing is cooperative (`partition.assignment.strategy=cooperative-sticky`) unless the configuration names
/// another strategy: a member keeps the partitions it is not asked to give up, and the revoke hook runs while the
/// group is stable, so the offsets it stores can be committed (with the eager protocol a coordinator may refuse that
/// commit with `REBALANCE_IN_PROGRESS`; the mock broker always does).
///
/// Records pass through a buffer of `bufferCapacity` records; when the reader falls behind, the consumer pauses its
/// partitions instead of buffering more (see ``ConsumerClient``). Call ``close()`` to leave the group cleanly.
public final class KafkaConsumer: Sendable {
    private let client: ConsumerClient

    /// Creates a consumer and subscribes it to `topics`.
    /// - Parameters:
    ///   - configuration: librdkafka properties; `bootstrap.servers` and `group.id` at least.
    ///   - topics: the topics to subscribe to.
    ///   - bufferCapacity: records held for the reader before partitions are paused.
    ///   - rebalanceHandler: hooks run when the group moves partitions (see ``RebalanceHandler``).
    ///   - onMessages: when given, each poll round's records go to it on the poll thread, in order per partition,
    ///     instead of to ``messages`` and ``nextBatch(limit:)`` (which then get none). For a reader that only hands
    ///     records on, without the hop to a task: it must be short and never block, as the poll thread also serves
    ///     rebalances.
    ///   - storesHandledOffsets: with `onMessages`, whether the records' offsets are stored when it returns.
    ///   - logger: receives librdkafka's log lines.
    ///   - onError: called with client-level and consume errors, and with a commit the coordinator refused when
    ///     partitions were revoked (their next owner then re-reads what was stored since the last commit), on
    ///     librdkafka's or the poll thread.
    /// - Throws: ``KafkaError`` naming a property librdkafka refuses, or when subscribing fails; `ThreadStartError` when
    ///   the system refuses its poll thread.
    public init(
        configuration: KafkaConfiguration,
        topics: [String],
        bufferCapacity: Int = 1024,
        rebalanceHandler: RebalanceHandler = RebalanceHandler(),
        onMessages: (@Sendable ([KafkaMessage]) -> Void)? = nil,
        storesHandledOffsets: Bool = true,
        logger: Logger = Logger(label: "sluice.kafka.consumer"),
        onError: @escaping @Sendable (KafkaError) -> Void = { _ in }
    ) throws {
        try Self.check(configuration)
        var configuration = configuration
        if configuration["partition.assignment.strategy"] == nil {
            try configuration.set("partition.assignment.strategy", "cooperative-sticky")
        }
        client = try ConsumerClient(
            configuration: configuration, source: .topics(topics), capacity: bufferCapacity,
            rebalanceHandler: rebalanceHandler,
            handler: onMessages.map { .init(storesOffsets: storesHandledOffsets, handle: $0) },
            logger: logger, onError: onError)
    }

    /// Creates a consumer of fixed `partitions`: no group membership and no rebalancing; each partition starts at the
    /// committed offset of `group.id` (else at `auto.offset.reset`), and stored offsets are committed to that group.
    /// For readers that split a topic's partitions among themselves by configuration.
    /// - Throws: ``KafkaError`` as the subscribing initializer does, or when the partitions cannot be assigned.
    public init(
        configuration: KafkaConfiguration,
        partitions: [TopicPartition],
        bufferCapacity: Int = 1024,
        logger: Logger = Logger(label: "sluice.kafka.consumer"),
        onError: @escaping @Sendable (KafkaError) -> Void = { _ in }
    ) throws {
        try Self.check(configuration)
        client = try ConsumerClient(
            configuration: configuration, source: .partitions(partitions), capacity: bufferCapacity,
            rebalanceHandler: RebalanceHandler(), logger: logger, onError: onError)
    }

    /// Refuses what both initializers cannot work with.
    private static func check(_ configuration: KafkaConfiguration) throws {
        if let stored = configuration["enable.auto.offset.store"], stored != "false" {
            throw KafkaError(
                code: .invalidArgument,
                message: "enable.auto.offset.store=\(stored) is not supported: the consumer stores offsets by hand")
        }
        guard configuration["group.id"] != nil else {
            throw KafkaError(code: .invalidArgument, message: "a group consumer needs the property group.id")
        }
    }

    deinit { client.shutdown(leaveGroup: false) }

    /// The records, in order per partition. Ends when the consumer is closed. Iterate it from one task.
    public var messages: Messages { Messages(client: client) }

    /// The next record, waiting for one, with up to `limit - 1` more that are already buffered: for readers that
    /// work in batches. Empty once the consumer is closed or ``stopReading()`` was called. Read from one task.
    public func nextBatch(limit: Int) async -> [KafkaMessage] {
        await client.nextBatch(limit: limit)
    }

    /// Marks every record of `partition` before `nextOffset` as done; the next commit commits `nextOffset`.
    /// - Throws: ``KafkaError`` if the partition is not assigned to this consumer.
    public func storeOffset(_ partition: TopicPartition, nextOffset: Int64) throws {
        try client.storeOffsets([(partition, nextOffset)])
    }

    /// ``storeOffset(_:nextOffset:)`` for several partitions at once.
    public func storeOffsets(_ offsets: [TopicPartition: Int64]) throws {
        try client.storeOffsets(offsets.map { ($0.key, $0.value) })
    }

    /// Commits the stored offsets now and waits for the group coordinator's answer.
    /// - Throws: ``KafkaError`` if the commit fails.
    public func commit() async throws {
        try await client.commit()
    }

    /// The group's committed offsets for `partitions` (`-1001`, librdkafka's `RD_KAFKA_OFFSET_INVALID`, where none).
    public func committedOffsets(
        _ partitions: [TopicPartition], timeout: Duration = .seconds(10)
    ) async throws -> [TopicPartition: Int64] {
        try await client.committedOffsets(partitions, timeout: timeout)
    }

    /// Stops fetching `partitions` until ``resume(_:)``; records already buffered are still delivered.
    public func pause(_ partitions: [TopicPartition]) {
        client.setPausedByUser(partitions, true)
    }

    /// Undoes ``pause(_:)``.
    public func resume(_ partitions: [TopicPartition]) {
        client.setPausedByUser(partitions, false)
    }

    /// The high watermark (the offset the partition's next record will get) of each of `partitions`, as the last fetch
    /// response told it; a partition nothing was fetched from yet is missing. Does not wait for the broker: for
    /// gauges such as lag, which may trail by one fetch.
    public func highWatermarks(_ partitions: [TopicPartition]) -> [TopicPartition: Int64] {
        client.highWatermarks(partitions)
    }

    /// For each assigned partition with a position and a known high watermark, the watermark minus the position (the offset after
    /// the last record the consumer took from librdkafka): the records waiting in the broker. Does not wait for the
    /// broker; may trail by one fetch.
    public func lag() -> [TopicPartition: Int64] {
        client.lag()
    }

    /// The partitions assigned to this consumer now.
    public var assignment: Set<TopicPartition> { client.assignment }

    /// Whether the consumer has received an assignment (its group's, even an empty one, or the fixed partitions it
    /// was made with): it is a member of its group.
    public var hasJoinedGroup: Bool { client.hasJoined }

    /// The member id the group coordinator gave this consumer when it joined; `nil` before that, once closed, and for
    /// a consumer of fixed partitions.
    public func memberID() async -> String? { await client.memberID() }

    /// How long since the poll thread last went round its loop: it does so at least every second or so while it runs
    /// (a poll waits at most 1 s; a full buffer at most ``ConsumerClient/pauseAfter``), so a large value means it is
    /// stuck.
    public var timeSinceLastPoll: Duration { client.timeSinceLastPoll }

    /// The partitions librdkafka has paused now, by ``pause(_:)`` or because the buffer is full.
    public var pausedPartitions: Set<TopicPartition> { client.pausedPartitions }

    /// Ends ``messages`` for every reader (one waiting for a record gets `nil` at once) but stays in the group: what is
    /// in flight can still store offsets and ``commit()`` before ``close()``. Records not yet handed out go to the
    /// partitions' next reader.
    public func stopReading() {
        client.stopReading()
    }

    /// Leaves the group: the revoke hook runs, stored offsets are committed, ``messages`` ends.
    public func close() async {
        _ = try? await DedicatedThread.run(name: "sluice-kclose") { [client] in client.shutdown(leaveGroup: true) }
    }

    /// The consumer's records as an `AsyncSequence`.
    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = KafkaMessage
        fileprivate let client: ConsumerClient

        public struct AsyncIterator: AsyncIteratorProtocol {
            fileprivate let client: ConsumerClient
            public mutating func next() async -> KafkaMessage? { await client.next() }
        }

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(client: client) }
    }
}
