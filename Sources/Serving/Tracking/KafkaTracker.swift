import Dispatch
import Kafka
import Logging
import Pipelines
import Synchronization
import SystemSupport

/// Publishes runs' lineage to the lineage topic as records of the lineage format v2 (docs/lineage-events.md), keyed by
/// run id so that a run's records stay in order on one partition.
///
/// ``record(_:)`` only queues the event (the runner's critical path). A thread of the tracker's own takes whatever is
/// queued, resolves it in order (serialises and hashes artifacts) and publishes the queued events of each run as one
/// record: a run that holds its events until it waits (BATCH) goes out as one record, and under load a REALTIME run's
/// events share records too, while a lone event still goes out at once. ``flush(runID:)`` waits until every event of
/// the run recorded with ``record(contentsOf:)`` so far is acknowledged, or throws the first delivery failure: what
/// BATCH and `flush_on_step_end` wait for. Events recorded one by one are counted, not accounted per run.
public final class KafkaTracker: Tracker {
    private struct RunState {
        /// Events recorded and not yet acknowledged (or failed).
        var outstanding = 0
        var failure: KafkaError?
        var waiters: [CheckedContinuation<Void, any Error>] = []
    }

    /// What the publishing thread is doing.
    private enum Publisher {
        /// Taking or publishing events: recording needs no wake-up.
        case working
        /// Waiting on ``KafkaTracker/wakeUp`` for events: the next record wakes it.
        case sleeping
        /// Ended, after ``KafkaTracker/close(timeout:)``.
        case stopped
    }

    /// What the publishing thread does next.
    private enum Step {
        /// Publish the events just taken.
        case publish
        case sleep
        case stop
    }

    private struct State {
        var queue: [PendingEvent] = []
        var runs: [String: RunState] = [:]
        /// Runs whose events failed and that nobody flushed: kept for a later flush, oldest dropped first.
        var failedRuns: [String] = []
        var publisher = Publisher.working
        var closing = false
        var published = 0
        var failed = 0
        /// Callers of ``KafkaTracker/waitForRoom(backlog:)``, resumed when the publisher takes the queue.
        var roomWaiters: [CheckedContinuation<Void, Never>] = []
        /// Set by ``KafkaTracker/releaseRoomWaits()``: nobody waits for room any more.
        var roomWaitsReleased = false

        /// Takes the queued events into `batch`, which must be empty, leaving its storage as the new queue (the two
        /// buffers swap, so neither is copied nor allocated again), with the waiters for room to resume; or says to
        /// sleep (marking the publisher asleep) or to stop.
        mutating func nextStep(taking batch: inout [PendingEvent]) -> (Step, [CheckedContinuation<Void, Never>]) {
            assert(batch.isEmpty, "the publisher empties its batch before it takes the next")
            defer { roomWaiters.removeAll() }
            if !queue.isEmpty {
                swap(&batch, &queue)
                return (.publish, roomWaiters)
            }
            return (idleStep(), roomWaiters)
        }

        private mutating func idleStep() -> Step {
            if closing {
                publisher = .stopped
                return .stop
            }
            publisher = .sleeping
            return .sleep
        }

        /// Marks a sleeping publisher awake. Returns whether to wake it.
        mutating func wakePublisher() -> Bool {
            guard publisher == .sleeping else { return false }
            publisher = .working
            return true
        }
    }

    private let producer: KafkaProducer
    private let topic: String
    /// Records larger than this are split: the producer's `message.max.bytes`.
    private let recordLimit: Int
    private let logger: Logger
    private let state = Mutex(State())
    private let wakeUp = DispatchSemaphore(value: 0)
    /// The publishing thread, set once `init` started it.
    private let publishingThread = Mutex<DedicatedThread?>(nil)

    /// Starts the publishing thread, which holds the tracker until ``close(timeout:)``.
    /// - Parameters:
    ///   - producer: the producer the records go through (its delivery reports complete the runs' flushes).
    ///   - topic: the lineage topic.
    ///   - recordLimit: the producer's `message.max.bytes`: the events of a run that do not fit in one record are
    ///     split over several.
    /// - Throws: ``KafkaError`` if the system refuses a thread.
    public init(producer: KafkaProducer, topic: String, recordLimit: Int, logger: Logger) throws {
        self.producer = producer
        self.topic = topic
        self.recordLimit = recordLimit
        self.logger = logger
        let thread = try DedicatedThread.start(name: "sluice-lineage") { [self] in publishUntilClosed() }
        publishingThread.withLock { $0 = thread }
    }

    /// Returns once at most `limit` events are waiting for the publishing thread (at once if so now), or once
    /// ``releaseRoomWaits()`` is called: the worker takes no request while Kafka is slower than the pipeline, so
    /// memory stays bounded.
    public func waitForRoom(backlog limit: Int) async {
        guard state.withLock({ $0.queue.count > limit && !$0.roomWaitsReleased }) else { return }
        await withCheckedContinuation { continuation in
            let waits = state.withLock { state in
                guard state.queue.count > limit, !state.roomWaitsReleased else { return false }
                state.roomWaiters.append(continuation)
                return true
            }
            if !waits { continuation.resume() }
        }
    }

    /// Ends every wait for room, now and later: for a worker that stops taking requests.
    public func releaseRoomWaits() {
        let waiters = state.withLock { state in
            state.roomWaitsReleased = true
            defer { state.roomWaiters.removeAll() }
            return state.roomWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Events acknowledged by Kafka, and events whose delivery failed, since start.
    public var counts: (published: Int, failed: Int) { state.withLock { ($0.published, $0.failed) } }

    public func record(_ event: PendingEvent) {
        // Nobody flushes the run: its events need no accounting.
        let wake = state.withLock { state in
            state.queue.append(event)
            return state.wakePublisher()
        }
        if wake { wakeUp.signal() }
    }

    public func record(contentsOf events: [PendingEvent]) {
        guard let runID = events.first?.runID else { return }
        let wake = state.withLock { state in
            state.queue.append(contentsOf: events)
            state.runs[runID, default: RunState()].outstanding += events.count
            return state.wakePublisher()
        }
        if wake { wakeUp.signal() }
    }

    public func flush(runID: String) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = state.withLock { state -> Result<Void, KafkaError>? in
                guard var run = state.runs[runID] else { return .success(()) }
                if run.outstanding == 0 {
                    state.runs[runID] = nil
                    state.failedRuns.removeAll { $0 == runID }
                    return run.failure.map { .failure($0) } ?? .success(())
                }
                run.waiters.append(continuation)
                state.runs[runID] = run
                return nil
            }
            if let outcome { continuation.resume(with: outcome.mapError { $0 as any Error }) }
        }
    }

    /// Publishes everything recorded so far, stops the publishing thread and waits for the acknowledgements (at most
    /// `timeout`). Record nothing after this.
    public func close(timeout: Duration) async {
        let wake = state.withLock { state in
            state.closing = true
            return state.wakePublisher()
        }
        if wake { wakeUp.signal() }
        if let thread = publishingThread.withLock({ $0 }) {
            _ = try? await DedicatedThread.run(name: "sluice-ljoin") { thread.join() }
        }
        do {
            try await producer.flush(timeout: timeout)
        } catch {
            logger.error("lineage events not acknowledged when closing: \(error)")
        }
    }

    // MARK: - Publishing (on the tracker's thread)

    private func publishUntilClosed() {
        var batch: [PendingEvent] = []
        while true {
            let (step, roomWaiters) = state.withLock { $0.nextStep(taking: &batch) }
            for waiter in roomWaiters { waiter.resume() }
            switch step {
            case .publish:
                publish(batch)
                // Kept for the next swap with the queue: its storage is reused, not allocated again.
                batch.removeAll(keepingCapacity: true)
            case .sleep: wakeUp.wait()
            case .stop: return
            }
        }
    }

    /// Publishes the events of each run in `events` as one record (or several, when they exceed the record limit),
    /// runs in the order of their first event.
    private func publish(_ events: [PendingEvent]) {
        guard !events.isEmpty else { return }
        // Each event's run, numbered in the order of first appearance, reading events in place (copying one retains
        // all its members). Most batches are one run's or a few runs': the previous event's run is tried first, and
        // run ids are indexed only once a second run appears.
        var runOf = [Int](repeating: 0, count: events.count)
        var firstPositions: [Int] = [0]
        var runIndex: [String: Int] = [:]
        var last = 0
        for position in events.indices.dropFirst() {
            let runID = events[position].runID
            if events[firstPositions[last]].runID != runID {
                if runIndex.isEmpty { runIndex[events[0].runID] = 0 }
                if let known = runIndex[runID] {
                    last = known
                } else {
                    last = firstPositions.count
                    runIndex[runID] = last
                    firstPositions.append(position)
                }
            }
            runOf[position] = last
        }
        guard firstPositions.count > 1 else { return publish(events, Array(events.indices)[...]) }
        // The positions grouped by run, each run's in order (a counting sort).
        var starts = [Int](repeating: 0, count: firstPositions.count + 1)
        for run in runOf { starts[run + 1] += 1 }
        for run in firstPositions.indices { starts[run + 1] += starts[run] }
        var grouped = [Int](repeating: 0, count: events.count)
        var next = starts
        for position in events.indices {
            grouped[next[runOf[position]]] = position
            next[runOf[position]] += 1
        }
        for run in firstPositions.indices { publish(events, grouped[starts[run]..<starts[run + 1]]) }
    }

    /// Publishes the events at `positions` (one run's, in order), resolving their artifacts as the record is written.
    private func publish(_ events: [PendingEvent], _ positions: ArraySlice<Int>) {
        let value = LineageRecord.encode(events, at: positions)
        if value.count > recordLimit, positions.count > 1 {
            let middle = positions.startIndex + positions.count / 2
            publish(events, positions[..<middle])
            publish(events, positions[middle...])
            return
        }
        let runID = events[positions[positions.startIndex]].runID
        let count = positions.count
        do {
            try producer.sendBlocking(OutgoingMessage(topic: topic, key: Array(runID.utf8), value: value)) {
                [self] result in
                switch result {
                case .success: complete(runID, count, failure: nil)
                case .failure(let error): complete(runID, count, failure: error)
                }
            }
        } catch {
            complete(
                runID, count, failure: error as? KafkaError ?? KafkaError(code: .invalidArgument, message: "\(error)"))
        }
    }

    /// `count` events of `runID` are acknowledged or failed; wakes the run's flushes when they were the last ones.
    private func complete(_ runID: String, _ count: Int, failure: KafkaError?) {
        if let failure { logger.error("lineage record of run \(runID) not delivered: \(failure)") }
        let (waiters, result) = state.withLock {
            state -> ([CheckedContinuation<Void, any Error>], Result<Void, KafkaError>) in
            if failure == nil { state.published += count } else { state.failed += count }
            guard !state.runs.isEmpty, var run = state.runs[runID] else { return ([], .success(())) }
            run.outstanding -= count
            if run.failure == nil, let failure { run.failure = failure }
            guard run.outstanding == 0 else {
                state.runs[runID] = run
                return ([], .success(()))
            }
            let result: Result<Void, KafkaError> = run.failure.map { .failure($0) } ?? .success(())
            if run.waiters.isEmpty, run.failure != nil {
                // Kept for a flush that may still come, within a bound.
                run.outstanding = 0
                state.runs[runID] = run
                state.failedRuns.append(runID)
                if state.failedRuns.count > 10_000 { state.runs[state.failedRuns.removeFirst()] = nil }
                return ([], result)
            }
            state.runs[runID] = nil
            return (run.waiters, result)
        }
        for waiter in waiters { waiter.resume(with: result.mapError { $0 as any Error }) }
    }
}
