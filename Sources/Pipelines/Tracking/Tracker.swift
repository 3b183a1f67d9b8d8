/// Where a run's lineage events go: the runner reports every event of a tracked run to a tracker.
///
/// The Kafka tracker (`Serving`) publishes them to the lineage topic; ``RecordingTracker`` keeps them in memory.
/// Memory-only runs report nothing.
public protocol Tracker: Sendable {
    /// Takes one event of a run that nobody flushes (REALTIME without `flush_on_step_end`).
    ///
    /// - Important: Called on the run's critical path, under the run's lock, in `seq` order per run: it must not
    ///   block, wait or serialise anything that could be done later. Resolve each run's events in the order they
    ///   arrive (``PendingArtifact/resolve()``).
    func record(_ event: PendingEvent)

    /// Takes events of one run, in `seq` order, that are ready together: a tracker that publishes records puts them
    /// in one. The events of a run that is flushed (BATCH, `flush_on_step_end`) come this way, and those of a failed
    /// run where only failed runs are kept (`runs: errors`). The same rules as ``record(_:)``.
    func record(contentsOf events: [PendingEvent])

    /// Returns when every event recorded with ``record(contentsOf:)`` so far for `runID` is durable (acknowledged by
    /// Kafka, for example).
    /// BATCH calls it before the run returns; REALTIME with `flush_on_step_end` after each step.
    /// - Throws: when one of those events could not be made durable.
    func flush(runID: String) async throws
}

extension Tracker {
    /// Records the events one by one.
    public func record(contentsOf events: [PendingEvent]) {
        for event in events { record(event) }
    }
}

/// Why a tracker could not make events durable: what ``Tracker/flush(runID:)`` throws.
public struct TrackingError: Error, Sendable, Hashable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
