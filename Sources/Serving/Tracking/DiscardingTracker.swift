import Pipelines

/// The tracker of memory-only workers: nothing is recorded, since memory-only runs report nothing.
struct DiscardingTracker: Tracker {
    func record(_ event: PendingEvent) {}
    func flush(runID: String) async throws {}
}
