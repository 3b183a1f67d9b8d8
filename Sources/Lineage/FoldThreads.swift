import Dispatch
import Synchronization
import SystemSupport

/// The threads that fold and sync a batch's partitions at once: started once with the materializer and reused by
/// every batch. Partitions' CPU work spreads over the cores and their `fsync`s overlap, so the file system commits
/// their journal entries together (a 1M backlog over 128 partitions: 51k -> 61k events/s when only the syncs ran at
/// once, docs/benchmarks.md). The calling thread works too: a helper the system refuses only makes it slower.
final class FoldThreads: Sendable {
    /// One call of ``map(_:_:)``: items `0..<count`, each taken by exactly one thread.
    private struct Job {
        let count: Int
        let body: @Sendable (Int) -> Void
    }

    private struct State {
        var job: Job?
        var nextItem = 0
        var closed = false

        /// The next item of the job for a thread to take, if any is left.
        mutating func take() -> (Job, Int)? {
            guard let job, nextItem < job.count else { return nil }
            defer { nextItem += 1 }
            return (job, nextItem)
        }
    }

    private let state = Mutex(State())
    /// Signalled once per helper asked to work on the job (or to end, when closed).
    private let wake = DispatchSemaphore(value: 0)
    /// Signalled by each helper that was woken once it finds no item left.
    private let finished = DispatchSemaphore(value: 0)
    private let helpers = Mutex<[DedicatedThread]>([])

    /// Starts `helpers` threads that wait for work.
    init(helpers count: Int) {
        let started = (0..<count).compactMap { _ in
            try? DedicatedThread.start(name: "sluice-fold") { [self] in helperLoop() }
        }
        helpers.withLock { $0 = started }
    }

    private func helperLoop() {
        while true {
            wake.wait()
            if state.withLock({ $0.closed }) { return }
            work()
            finished.signal()
        }
    }

    /// Takes items of the current job until none is left.
    private func work() {
        while let (job, item) = state.withLock({ $0.take() }) { job.body(item) }
    }

    /// `body` of each of `items`, each on exactly one of the threads (the calling one included); returns when all are
    /// done. One call at a time.
    /// - Throws: the first error of an item, once every item is done.
    func map<Item, Result>(_ items: [Item], _ body: @escaping (Item) throws -> Result) throws -> [Result] {
        guard items.count > 1 else { return try items.map(body) }
        // Each item and outcome is touched by one thread, and this one waits for all of them.
        nonisolated(unsafe) let items = items
        nonisolated(unsafe) let body = body
        nonisolated(unsafe) var outcomes = [Swift.Result<Result, any Error>?](repeating: nil, count: items.count)
        let written = Mutex(())
        let job = Job(count: items.count) { index in
            let outcome = Swift.Result { try body(items[index]) }
            written.withLock { _ in outcomes[index] = outcome }
        }
        state.withLock { state in
            state.job = job
            state.nextItem = 0
        }
        let woken = min(helpers.withLock { $0.count }, items.count - 1)
        for _ in 0..<woken { wake.signal() }
        work()
        for _ in 0..<woken { finished.wait() }
        state.withLock { $0.job = nil }
        return try written.withLock { _ in outcomes }.map { try $0!.get() }
    }

    /// Ends the helpers and waits for them.
    func close() {
        let threads = helpers.withLock { threads in
            defer { threads.removeAll() }
            return threads
        }
        state.withLock { $0.closed = true }
        for _ in threads { wake.signal() }
        for thread in threads { thread.join() }
    }
}
