import CoreMetrics
import Kafka
import Logging
import Pipelines
import ServiceLifecycle
import Synchronization
import SystemSupport

/// Everything a materializer needs to know, with the defaults of docs/configuration.md.
public struct MaterializerConfiguration: Sendable {
    /// librdkafka properties for the consumer (`bootstrap.servers` and the `--kafka` flags).
    public var kafka: KafkaConfiguration
    /// The store's root directory.
    public var store: String
    public var lineageTopic = "sluice.lineage"
    public var group = "sluice.materializer"
    /// Artifact values of at most this many bytes stay in their run's line; larger ones go to `artifacts/`.
    public var storeInlineLimit = 1024
    /// Events of a partition after which a run that saw none of its own is closed as `incomplete`.
    public var incompleteAfter = 100_000
    public var segments = SegmentLimits()
    /// Records folded between two syncs of the store, at most.
    public var batchSize = 32_768
    /// How often the materializer logs its progress (events/s, lag) while it is behind.
    public var catchUpLogInterval: Duration = .seconds(5)
    /// This process's fixed share of the lineage partitions, instead of what the consumer group assigns.
    public var shard: Shard?
    /// Where the materializer's metrics go (``MaterializerMetrics``); `nil`: the factory swift-metrics was
    /// bootstrapped with.
    public var metricsFactory: (any MetricsFactory)?

    public init(kafka: KafkaConfiguration, store: String) {
        self.kafka = kafka
        self.store = store
    }
}

/// When the materializer logs how its catch-up goes: every interval, while it is behind.
struct CatchUpReport {
    let intervalMicros: Int64
    private var last: (micros: Int64, events: Int)?

    init(intervalMicros: Int64) {
        self.intervalMicros = intervalMicros
    }

    /// Whether a report is due at `now` (the first call starts the clock).
    func isDue(at now: Int64) -> Bool {
        last.map { now - $0.micros >= intervalMicros } ?? true
    }

    /// Records the events folded so far at `now`; returns the events per second since the last record when `lag`
    /// records are still waiting (nothing on the first record, or when caught up).
    mutating func record(at now: Int64, events: Int, lag: Int64) -> Int? {
        defer { last = (now, events) }
        guard let last, lag > 0, now > last.micros else { return nil }
        return Int(Int64(events - last.events) * 1_000_000 / (now - last.micros))
    }
}

/// A fixed share of a topic's partitions: those whose number modulo `count` is `index` (`0 ≤ index < count`).
public struct Shard: Sendable, Hashable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// The partitions of `partitions` in the share.
    public func select(_ partitions: [Int32]) -> [Int32] {
        partitions.filter { Int($0) % count == index }.sorted()
    }

    public var description: String { "\(index)/\(count)" }
}

/// `--shard I/N` selects none of the lineage topic's partitions (N is larger than the partition count).
public struct EmptyShardError: Error, Sendable, CustomStringConvertible {
    public let shard: Shard
    public let topic: String
    public let partitions: Int

    public var description: String { "shard \(shard) holds none of the \(partitions) partitions of \(topic)" }
}

/// What `GET /health` and `GET /metrics` of a materializer report.
public struct MaterializerStatus: Sendable {
    public enum Phase: String, Sendable {
        /// The store is being opened and the consumer created.
        case starting
        case running
        /// ``Materializer/stop()`` was called, or the service group is shutting down.
        case stopping
    }

    public var phase: Phase
    public var assignedPartitions: Int
    /// Whether the consumer has received its assignment (the group's, possibly empty, or its shard's).
    public var joinedGroup: Bool
    public var openRuns: Int
    public var counts: FoldCounts
    /// Per partition that has delivered a record: records after the last one folded, up to the high watermark of the
    /// consumer's last fetch.
    public var lag: [TopicPartition: Int64]
}

/// The materializer: folds the lineage topic's events into runs and appends finished runs to the store
/// (docs/store.md, docs/operations.md).
///
/// - Important: A partition's offset is stored only after the lines and artifacts before it are durable, and it is
///   the first offset of the partition's oldest open run: a restart re-reads what it still needs and skips what it
///   wrote (``PartitionStore``). Files are written on a thread of their own, never on the cooperative pool.
///
/// A `Service` of swift-service-lifecycle: in a `ServiceGroup`, a graceful shutdown (or the task's cancellation)
/// stops it as ``stop()`` does.
public final class Materializer: Service, Sendable {
    /// What `/health` and `/metrics` read, and what decides which records are folded: held only for moments, never
    /// across a batch's writing (so `/health` never waits on disk).
    private struct State: Sendable {
        var phase = MaterializerStatus.Phase.starting
        var consumer: KafkaConsumer?
        /// Partitions assigned now; a partition's work is created when its first record is folded.
        var assigned: Set<TopicPartition> = []
        var counts = FoldCounts()
        /// Per partition, the offset after the last record folded.
        var nextOffsets: [TopicPartition: Int64] = [:]
        /// Runs folded in memory after the last batch, over the partitions.
        var openRuns = 0
    }

    /// What a batch works on: held across its fold, write and sync. A revoke takes it too, so that it waits for the
    /// batch in hand.
    private struct Store: @unchecked Sendable {
        // @unchecked Sendable: the partitions' work and the index are used under the lock only.
        var work: [TopicPartition: PartitionMaterializer] = [:]
        /// Indexes each batch's lines while the next one folds, while the materializer runs.
        var index: IndexWriter?
        /// The threads that fold and sync a batch's partitions at once, while the materializer runs.
        var threads: FoldThreads?
    }

    public let configuration: MaterializerConfiguration
    private let logger: Logger
    private let state = Mutex(State())
    private let store = Mutex(Store())
    private let metrics: MaterializerMetrics
    private let openLineage: OpenLineageFollower?

    /// A materializer as `configuration` says; `openLineage`, when given, is told of each partition it opens and of
    /// each batch's lines once they are durable (run it in the same service group).
    public init(configuration: MaterializerConfiguration, openLineage: OpenLineageFollower? = nil, logger: Logger) {
        self.configuration = configuration
        self.openLineage = openLineage
        self.logger = logger
        metrics = MaterializerMetrics(factory: configuration.metricsFactory ?? MetricsSystem.factory)
    }

    /// Brings the gauges (open runs, partitions, lag) up to date: call it before reading the metrics factory's
    /// registry.
    public func refreshMetrics() {
        metrics.refresh(status)
    }

    public var status: MaterializerStatus {
        let (snapshot, nextOffsets, consumer) = state.withLock { state in
            (
                MaterializerStatus(
                    phase: state.phase, assignedPartitions: state.assigned.count, joinedGroup: false,
                    openRuns: state.openRuns, counts: state.counts, lag: [:]),
                state.nextOffsets, state.consumer
            )
        }
        var status = snapshot
        // Outside the state lock: the consumer takes its own.
        status.joinedGroup = consumer?.hasJoinedGroup ?? false
        let watermarks = consumer?.highWatermarks(Array(nextOffsets.keys)) ?? [:]
        for (partition, next) in nextOffsets {
            if let high = watermarks[partition] { status.lag[partition] = max(0, high - next) }
        }
        return status
    }

    /// Consumes and folds until ``stop()``, a graceful shutdown or cancellation, then makes the store durable, commits
    /// and leaves the group.
    /// - Throws: ``KafkaError`` when the consumer cannot be created, ``StoreError`` when the store cannot be written
    ///   (the partition's offsets are then left where the store is durable).
    public func run() async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await materialize()
        } onCancelOrGracefulShutdown: { [self] in
            stop()
        }
    }

    private func materialize() async throws {
        try await DedicatedThread.run(name: "sluice-store") { [self] in
            try FileSystem.makeDirectories("\(configuration.store)/runs")
            // What the last process wrote but did not index (it stopped between the two) is indexed now.
            let index = try StoreIndex(root: configuration.store)
            let caughtUp = try index.catchUp()
            if caughtUp > 0 { logger.info("indexed \(caughtUp) run(s) the index did not have") }
            let writer = try IndexWriter(index: index, logger: logger) { [metrics] micros in
                metrics.index.recordMicroseconds(micros)
            }
            store.withLock { store in
                store.index = writer
                store.threads = FoldThreads(helpers: Self.foldThreads - 1)
            }
        }
        do {
            try await consume()
        } catch {
            await closeStore()
            throw error
        }
        await closeStore()
    }

    /// Ends the fold threads and the index's thread once what is queued is indexed.
    private func closeStore() async {
        let (threads, index) = store.withLock { store in
            defer { (store.threads, store.index) = (nil, nil) }
            return (store.threads, store.index)
        }
        _ = try? await DedicatedThread.run(name: "sluice-store") {
            threads?.close()
            index?.close()
        }
    }

    /// Reads and folds the lineage topic until stopped; then commits and leaves the group.
    private func consume() async throws {
        var settings = configuration.kafka
        try settings.set("group.id", configuration.group)
        if settings["auto.offset.reset"] == nil { try settings.set("auto.offset.reset", "earliest") }
        let consumer: KafkaConsumer
        if let shard = configuration.shard {
            let partitions = try await partitions(of: shard, settings: settings)
            logger.info("shard \(shard): lineage partitions \(partitions.map(\.partition))")
            state.withLock { $0.assigned = Set(partitions) }
            consumer = try KafkaConsumer(
                configuration: settings, partitions: partitions, bufferCapacity: max(1024, 2 * configuration.batchSize),
                logger: logger)
        } else {
            consumer = try KafkaConsumer(
                configuration: settings, topics: [configuration.lineageTopic],
                bufferCapacity: max(1024, 2 * configuration.batchSize),
                rebalanceHandler: RebalanceHandler(
                    partitionsAssigned: { [self] partitions in
                        state.withLock { $0.assigned.formUnion(partitions) }
                    },
                    partitionsRevoked: { [self] partitions, lost in
                        await release(partitions, lost: lost)
                    }),
                logger: logger)
        }
        let stopped = state.withLock { state -> Bool in
            state.consumer = consumer
            if state.phase != .stopping { state.phase = .running }
            return state.phase == .stopping
        }
        if stopped { consumer.stopReading() }
        logger.info(
            "materializing \(configuration.lineageTopic) into \(configuration.store) (group \(configuration.group))")
        let interval = configuration.catchUpLogInterval.components
        var report = CatchUpReport(
            intervalMicros: interval.seconds * 1_000_000 + interval.attoseconds / 1_000_000_000_000)
        do {
            while true {
                let batch = await consumer.nextBatch(limit: configuration.batchSize)
                if batch.isEmpty { break }
                try await DedicatedThread.run(name: "sluice-store") { [self] in try fold(batch, consumer: consumer) }
                let now = Timestamps.monotonicMicros()
                if report.isDue(at: now) {
                    let status = status
                    let lag = status.lag.values.reduce(0, +)
                    if let rate = report.record(at: now, events: status.counts.events, lag: lag) {
                        logger.info(
                            "catching up: \(rate) events/s, \(lag) records behind on \(status.lag.values.filter { $0 > 0 }.count) partition(s)"
                        )
                    }
                }
            }
        } catch {
            logger.error("stopping: \(error)")
            await consumer.close()
            throw error
        }
        do {
            try await consumer.commit()
        } catch {
            logger.warning("final commit: \(error)")
        }
        await consumer.close()
        logger.info("stopped")
    }

    /// The lineage partitions in `shard`.
    /// - Throws: ``KafkaError`` when the topic cannot be listed, ``EmptyShardError`` when the shard holds none of its
    ///   partitions.
    private func partitions(of shard: Shard, settings: KafkaConfiguration) async throws -> [TopicPartition] {
        let topics = try await KafkaAdmin(configuration: settings, logger: logger).listTopics()
        let all = topics.first { $0.name == configuration.lineageTopic }?.partitions ?? []
        let selected = shard.select(all)
        guard !selected.isEmpty else {
            throw EmptyShardError(shard: shard, topic: configuration.lineageTopic, partitions: all.count)
        }
        return selected.map { TopicPartition(configuration.lineageTopic, $0) }
    }

    /// Stops reading; ``run()`` then commits what is durable and returns.
    public func stop() {
        let consumer = state.withLock { state -> KafkaConsumer? in
            state.phase = .stopping
            return state.consumer
        }
        consumer?.stopReading()
    }

    // MARK: - Folding

    /// Folds `batch`, writes the runs it closes, makes them durable, then stores each partition's resume offset.
    /// Partitions are independent: each one's records are folded, written and synced on one of the fold threads.
    /// Holds the store lock, so a revoke waits for the batch in hand. Blocking: a dedicated thread's work.
    private func fold(_ batch: [KafkaMessage], consumer: KafkaConsumer) throws {
        try store.withLock { store in
            // Read under the store lock: a revoke that ended before this batch has removed its partitions.
            let assigned = state.withLock { $0.assigned }
            var records: [TopicPartition: [KafkaMessage]] = [:]
            // A record read before its partition was revoked is not ours any more.
            for message in batch where assigned.contains(message.topicPartition) {
                records[message.topicPartition, default: []].append(message)
            }
            var touched: [TopicPartition: PartitionMaterializer] = [:]
            var shares: [(work: PartitionMaterializer, records: [KafkaMessage])] = []
            for (partition, messages) in records {
                let work = try store.work[partition] ?? open(partition)
                store.work[partition] = work
                touched[partition] = work
                shares.append((work, messages))
            }
            let foldShare = {
                (share: (work: PartitionMaterializer, records: [KafkaMessage])) throws -> (FoldCounts, [WrittenLine]) in
                var counts = FoldCounts()
                let started = Timestamps.monotonicMicros()
                for message in share.records {
                    try share.work.take(message.value, at: message.offset, counts: &counts)
                }
                let folded = Timestamps.monotonicMicros()
                let lines = try share.work.sync()
                self.metrics.fold.recordMicroseconds(folded - started)
                self.metrics.sync.recordMicroseconds(Timestamps.monotonicMicros() - folded)
                return (counts, lines)
            }
            let folded = try store.threads?.map(shares, foldShare) ?? shares.map(foldShare)
            let openRuns = store.work.values.reduce(0) { $0 + $1.openRuns }
            state.withLock { state in
                for (partition, messages) in records {
                    state.nextOffsets[partition] = messages.last.map { $0.offset + 1 }
                }
                for (counts, _) in folded { state.counts.add(counts) }
                state.openRuns = openRuns
            }
            for (counts, _) in folded { metrics.record(counts) }
            let lines = folded.flatMap(\.1)
            store.index?.submit(lines)
            openLineage?.written(lines)
            var offsets: [TopicPartition: Int64] = [:]
            for (partition, work) in touched {
                if let offset = work.resumeOffset { offsets[partition] = offset }
            }
            if !offsets.isEmpty { try consumer.storeOffsets(offsets) }
        }
    }

    /// Threads that fold and sync partitions at once, the batch's own included.
    private static let foldThreads = 8

    private func open(_ partition: TopicPartition) throws -> PartitionMaterializer {
        let work = try PartitionMaterializer(
            root: configuration.store, partition: partition.partition,
            storeInlineLimit: configuration.storeInlineLimit, incompleteAfter: configuration.incompleteAfter,
            segments: configuration.segments, logger: logger)
        try openLineage?.follow(partition: partition.partition)
        logger.info(
            "\(partition): store opened, last line written at \(work.lastWrittenOffset.map { "offset \($0)" } ?? "none")"
        )
        return work
    }

    // MARK: - Rebalance

    /// Before partitions leave: their files are durable already (every batch ends with a sync) and their offsets
    /// stored; forget them, so that a record of theirs still in hand is not folded.
    private func release(_ partitions: [TopicPartition], lost: Bool) async {
        _ = try? await DedicatedThread.run(name: "sluice-store") { [self] in
            store.withLock { store in
                for partition in partitions { store.work[partition] = nil }
                openLineage?.release(partitions.map(\.partition))
                let openRuns = store.work.values.reduce(0) { $0 + $1.openRuns }
                state.withLock { state in
                    state.assigned.subtract(partitions)
                    for partition in partitions { state.nextOffsets[partition] = nil }
                    state.openRuns = openRuns
                }
            }
        }
        logger.info("released \(partitions.sorted())\(lost ? " (lost)" : "")")
    }
}
