import Synchronization

/// Memoised step outputs, keyed by step name, version and the hash of the inputs' canonical JSON; shared by the runs
/// of one process and bounded: past `capacity` entries the least recently used one is dropped.
///
/// Used only where the capture configuration caches (BATCH, REALTIME and CUSTOM with `caching: true`) and the step
/// asks for it (`Step(..., cache: true)`).
public final class StepCache: Sendable {
    /// A cached output and the step run that produced it.
    struct Entry: Sendable {
        let output: any Sendable
        let source: CachedStepRun
    }

    private struct State {
        /// Entries by key; `order` holds keys from least to most recently used, with stale duplicates skipped lazily.
        var entries: [String: (entry: Entry, stamp: UInt64)] = [:]
        var order: [(key: String, stamp: UInt64)] = []
        var head = 0
        var clock: UInt64 = 0
    }

    public let capacity: Int
    private let state = Mutex(State())

    /// - Parameter capacity: the most entries kept, at least 1.
    public init(capacity: Int = 1024) {
        self.capacity = max(1, capacity)
    }

    /// How many entries are held.
    public var count: Int { state.withLock { $0.entries.count } }

    func lookup(_ key: String) -> Entry? {
        state.withLock { state in
            guard let found = state.entries[key] else { return nil }
            state.clock += 1
            state.entries[key] = (found.entry, state.clock)
            state.order.append((key, state.clock))
            Self.compact(&state)
            return found.entry
        }
    }

    func store(_ key: String, _ entry: Entry) {
        let capacity = capacity
        state.withLock { state in
            state.clock += 1
            state.entries[key] = (entry, state.clock)
            state.order.append((key, state.clock))
            // Evict least recently used entries: an order slot is live only if its stamp is the entry's current one.
            while state.entries.count > capacity, state.head < state.order.count {
                let oldest = state.order[state.head]
                state.head += 1
                if state.entries[oldest.key]?.stamp == oldest.stamp { state.entries[oldest.key] = nil }
            }
            Self.compact(&state)
        }
    }

    /// Drops the consumed and stale part of `order` once it outgrows the entries, so memory stays bounded.
    private static func compact(_ state: inout State) {
        guard state.order.count > 2 * state.entries.count + 64 else { return }
        let entries = state.entries
        state.order = state.order[state.head...].filter { entries[$0.key]?.stamp == $0.stamp }
        state.head = 0
    }
}
