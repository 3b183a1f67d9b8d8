/// What a group consumer does when the group moves partitions to or from it.
///
/// - Important: ``partitionsAssigned`` runs on the consumer's poll thread; ``partitionsRevoked`` on the pool while
///   the poll thread polls on and librdkafka waits for it (docs/kafka-layer.md, "Rebalances"). It runs *before*
///   the partitions are given up: offsets stored by then (``KafkaConsumer/storeOffset(_:nextOffset:)``) are
///   committed synchronously right after it returns, so a worker drains its in-flight work there and stores what it
///   finished. Do not await ``KafkaConsumer/commit()`` inside it: the consumer commits for you.
public struct RebalanceHandler: Sendable {
    /// Called after partitions are added to the assignment.
    public var partitionsAssigned: @Sendable ([TopicPartition]) -> Void
    /// Called before partitions leave the assignment. `lost` is true when the group already gave them to another
    /// member (session expired): committing is then refused, so the consumer does not commit.
    public var partitionsRevoked: @Sendable (_ partitions: [TopicPartition], _ lost: Bool) async -> Void

    public init(
        partitionsAssigned: @escaping @Sendable ([TopicPartition]) -> Void = { _ in },
        partitionsRevoked: @escaping @Sendable (_ partitions: [TopicPartition], _ lost: Bool) async -> Void = { _, _ in
        }
    ) {
        self.partitionsAssigned = partitionsAssigned
        self.partitionsRevoked = partitionsRevoked
    }
}
