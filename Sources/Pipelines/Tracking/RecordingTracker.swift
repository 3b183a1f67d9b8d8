import Synchronization

/// Keeps every event in memory, resolved in the order they were recorded: for tests, and for running pipelines in
/// process with their lineage at hand.
///
/// Resolution (serialising and hashing artifacts) happens in ``flush(runID:)`` and when ``events`` is read, never in
/// ``record(_:)``, as a real tracker does it off the critical path.
public final class RecordingTracker: Tracker {
    private struct State {
        var pending: [PendingEvent] = []
        var resolved: [LineageEvent] = []
    }

    private let state = Mutex(State())

    public init() {}

    public func record(_ event: PendingEvent) {
        state.withLock { $0.pending.append(event) }
    }

    public func flush(runID: String) async throws {
        resolvePending()
    }

    /// Every event recorded so far, resolved, in the order recorded.
    public var events: [LineageEvent] {
        resolvePending()
        return state.withLock { $0.resolved }
    }

    /// The events of one run, in order.
    public func events(ofRun runID: String) -> [LineageEvent] {
        events.filter { $0.runID == runID }
    }

    /// How many events were recorded, resolved or not.
    public var count: Int {
        state.withLock { $0.pending.count + $0.resolved.count }
    }

    private func resolvePending() {
        state.withLock { state in
            state.resolved.append(contentsOf: state.pending.map { $0.resolve() })
            state.pending.removeAll()
        }
    }
}
