import Dispatch
import Logging
import Pipelines
import Synchronization
import SystemSupport

/// Keeps the store's index up to date on a thread of its own: a batch's lines are handed over once they are durable
/// and indexed while the next batch folds, several batches in one transaction when the index is behind.
///
/// The index is derived (``StoreIndex``): what a crash leaves unindexed, the next start catches up from the segments.
/// At most `maxPending` lines wait; a batch that would exceed it waits for room, so memory stays bounded when indexing
/// is slower than folding.
final class IndexWriter: Sendable {
    private struct State {
        var pending: [WrittenLine] = []
        var closed = false
        /// Submitters waiting for room.
        var waiting = 0

        enum Submission {
            case queued
            case wait
        }

        mutating func submit(_ lines: [WrittenLine], maxPending: Int) -> Submission {
            // An empty queue always takes a batch, however large: one batch never waits for itself.
            guard pending.isEmpty || pending.count + lines.count <= maxPending else {
                waiting += 1
                return .wait
            }
            pending += lines
            return .queued
        }

        /// What the writer does next: index `lines` (maybe none), wake `waiting` submitters, and end when closed (no
        /// batch is queued after ``IndexWriter/close()``).
        mutating func take() -> (lines: [WrittenLine], waiting: Int, end: Bool) {
            defer {
                pending = []
                waiting = 0
            }
            return (pending, waiting, closed)
        }
    }

    private let state = Mutex(State())
    /// Signalled once per batch queued, and by ``close()``.
    private let wake = DispatchSemaphore(value: 0)
    /// Signalled once per submitter waiting, when the writer has taken what was queued.
    private let room = DispatchSemaphore(value: 0)
    private let thread: Mutex<DedicatedThread?> = Mutex(nil)
    private let maxPending: Int

    /// Starts the thread that adds the lines handed to ``submit(_:)`` to `index`; `indexed` is called with the time
    /// each transaction took, in microseconds.
    /// - Throws: when the thread cannot be started.
    init(
        index: StoreIndex, maxPending: Int = 1 << 18, logger: Logger,
        indexed: @escaping @Sendable (_ micros: Int64) -> Void
    ) throws {
        self.maxPending = maxPending
        // The index is used by this thread alone from now on.
        nonisolated(unsafe) let index = index
        let started = try DedicatedThread.start(name: "sluice-index") { [self] in
            while true {
                wake.wait()
                let (lines, waiting, end) = state.withLock { $0.take() }
                for _ in 0..<waiting { room.signal() }
                if !lines.isEmpty {
                    let started = Timestamps.monotonicMicros()
                    do {
                        try index.add(lines)
                    } catch {
                        // What it misses now, the next add to the segment (or a restart) reads from the file.
                        logger.warning("indexing: \(error)")
                    }
                    indexed(Timestamps.monotonicMicros() - started)
                }
                if end { return }
            }
        }
        thread.withLock { $0 = started }
    }

    /// Queues a batch's lines, once they are durable; waits while `maxPending` lines are queued already.
    func submit(_ lines: [WrittenLine]) {
        guard !lines.isEmpty else { return }
        while state.withLock({ $0.submit(lines, maxPending: maxPending) }) == .wait {
            room.wait()
        }
        wake.signal()
    }

    /// Indexes what is queued, then ends the thread and waits for it.
    func close() {
        state.withLock { $0.closed = true }
        wake.signal()
        let ended = thread.withLock { thread in
            defer { thread = nil }
            return thread
        }
        ended?.join()
    }
}
