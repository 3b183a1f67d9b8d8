import Logging
import Pipelines

/// What folding records did, for the materializer's counters.
public struct FoldCounts: Sendable, Hashable {
    /// Lineage records read, readable or not.
    public var records = 0
    /// Lineage events read: a record of the format v2 carries several.
    public var events = 0
    public var runsWritten = 0
    /// Records that were not lineage records.
    public var malformed = 0
    /// Runs closed without a terminal event.
    public var incomplete = 0
    /// Runs not stored because their beginning was never read.
    public var partial = 0

    public init() {}

    /// Adds the counts of `other`.
    public mutating func add(_ other: FoldCounts) {
        records += other.records
        events += other.events
        runsWritten += other.runsWritten
        malformed += other.malformed
        incomplete += other.incomplete
        partial += other.partial
    }
}

/// One lineage partition's fold and files: records go in in offset order, finished runs come out as lines in the
/// store. What `sluice materialize` does per partition it owns, without Kafka.
///
/// Blocking (file writes): use it from a thread of your own.
public final class PartitionMaterializer {
    public let partition: Int32
    private var fold: PartitionFold
    private let store: PartitionStore
    private let storeInlineLimit: Int
    private let logger: Logger
    /// The configuration read last: the runs of a pipeline share one.
    private let configurations = RepeatedJSON()

    /// Opens the partition's part of the store at `root` (repairing a torn last line).
    /// - Throws: ``StoreError`` when the store cannot be read or repaired.
    public init(
        root: String, partition: Int32, storeInlineLimit: Int = 1024, incompleteAfter: Int = 100_000,
        segments: SegmentLimits = SegmentLimits(), logger: Logger
    ) throws {
        self.partition = partition
        self.storeInlineLimit = storeInlineLimit
        self.logger = logger
        store = try PartitionStore(root: root, partition: partition, limits: segments)
        fold = PartitionFold(partition: partition, incompleteAfter: incompleteAfter)
    }

    /// The terminal offset of the last line this partition has in the store, if any.
    public var lastWrittenOffset: Int64? { store.lastWritten?.offset }

    /// Runs folded in memory, waiting for their terminal event.
    public var openRuns: Int { fold.openRuns }

    /// The offset to commit once the store is synced: the first offset of the oldest open run, or the next one.
    public var resumeOffset: Int64? { fold.resumeOffset }

    /// Folds the record at `offset` (its value: a lineage record, or anything else, which is counted and skipped)
    /// and appends the runs it closes. Durable only after ``sync()``.
    /// - Throws: ``StoreError`` when the store cannot be written.
    public func take(_ value: [UInt8]?, at offset: Int64, counts: inout FoldCounts) throws {
        counts.records += 1
        let events = decode(value, at: offset)
        if events.isEmpty { counts.malformed += 1 }
        counts.events += events.count
        for run in fold.take(events, at: offset) {
            if run.fold.status == .incomplete { counts.incomplete += 1 }
            guard run.fold.sawStart else {
                if let written = store.lastWritten, run.position <= written { continue }
                counts.partial += 1
                logger.warning(
                    "run \(run.fold.runID) on lineage partition \(partition) ends at offset \(run.position.offset) but its beginning was never read: not stored"
                )
                continue
            }
            if try store.append(run, storeInlineLimit: storeInlineLimit) { counts.runsWritten += 1 }
        }
    }

    /// Makes every line and artifact appended so far durable.
    /// - Returns: the lines written since the previous sync, for ``StoreIndex/add(_:)``.
    @discardableResult
    public func sync() throws -> [WrittenLine] {
        try store.sync()
    }

    /// The record's events; none when it is not a lineage record.
    private func decode(_ value: [UInt8]?, at offset: Int64) -> [LineageEvent] {
        guard let value else {
            logger.warning("lineage partition \(partition) offset \(offset): a record without a value, skipped")
            return []
        }
        do {
            return try LineageRecord.decode(value, configurations: configurations)
        } catch {
            logger.warning("lineage partition \(partition) offset \(offset): not a lineage record (\(error)), skipped")
            return []
        }
    }
}
