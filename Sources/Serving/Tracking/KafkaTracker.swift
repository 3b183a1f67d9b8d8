import Kafka
import Logging
import Pipelines
import Synchronization

/// Publishes runs' lineage events to the lineage topic, keyed by run id so that a run's events stay in order on one
/// partition.
///
/// ``record(_:)`` only queues the event (the runner's critical path). A drain task resolves queued events in order
/// (serialises and hashes artifacts), writes their JSON and hands them to the producer, whose batching is
/// librdkafka's. ``flush(runID:)`` waits until every event of the run recorded so far is acknowledged, or throws
/// the first delivery failure: what BATCH and `flush_on_step_end` wait for.
public final class KafkaTracker: Tracker {
    private struct RunState {
        /// Events recorded and not yet acknowledged (or failed).
        var outstanding = 0
        var failure: KafkaError?
        var waiters: [CheckedContinuation<Void, any Error>] = []
    }

    private struct State {
        var queue: [PendingEvent] = []
        var runs: [String: RunState] = [:]
        /// Runs whose events failed and that nobody flushed: kept for a later flush, oldest dropped first.
        var failedRuns: [String] = []
        var doorbell: CheckedContinuation<Void, Never>?
        var closing = false
        var published = 0
        var failed = 0
    }

    private let producer: KafkaProducer
    private let topic: String
    private let logger: Logger
    private let state = Mutex(State())
    private let drainer = Mutex<Task<Void, Never>?>(nil)

    /// - Parameters:
    ///   - producer: the producer the events go through (its delivery reports complete the runs' flushes).
    ///   - topic: the lineage topic.
    public init(producer: KafkaProducer, topic: String, logger: Logger) {
        self.producer = producer
        self.topic = topic
        self.logger = logger
        let task = Task { [self] in await drain() }
        drainer.withLock { $0 = task }
    }

    /// Events recorded and not yet handed to the producer: the worker stops taking requests while this is large.
    public var backlog: Int { state.withLock { $0.queue.count } }

    /// Events acknowledged by Kafka, and events whose delivery failed, since start.
    public var counts: (published: Int, failed: Int) { state.withLock { ($0.published, $0.failed) } }

    public func record(_ event: PendingEvent) {
        let bell = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.queue.append(event)
            state.runs[event.runID, default: RunState()].outstanding += 1
            defer { state.doorbell = nil }
            return state.doorbell
        }
        bell?.resume()
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

    /// Publishes everything recorded so far and waits for its acknowledgements (at most `timeout`), then stops the
    /// drain task. Record nothing after this.
    public func close(timeout: Duration) async {
        let bell = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.closing = true
            defer { state.doorbell = nil }
            return state.doorbell
        }
        bell?.resume()
        await drainer.withLock { $0 }?.value
        do {
            try await producer.flush(timeout: timeout)
        } catch {
            logger.error("lineage events not acknowledged when closing: \(error)")
        }
    }

    // MARK: - Draining

    private func drain() async {
        while true {
            let batch = await nextBatch()
            if batch.isEmpty { return }
            for event in batch { await publish(event) }
        }
    }

    /// Waits for queued events; an empty batch means closing with nothing left.
    private func nextBatch() async -> [PendingEvent] {
        while true {
            let batch = state.withLock { state -> [PendingEvent]? in
                if !state.queue.isEmpty {
                    defer { state.queue.removeAll(keepingCapacity: true) }
                    return state.queue
                }
                return state.closing ? [] : nil
            }
            if let batch { return batch }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if !state.queue.isEmpty || state.closing { return true }
                    state.doorbell = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    private func publish(_ pending: PendingEvent) async {
        let event = pending.resolve()
        let runID = event.runID
        let message = OutgoingMessage(topic: topic, key: Array(runID.utf8), value: event.json())
        do {
            try await producer.send(message) { [self] result in
                switch result {
                case .success: complete(runID, failure: nil)
                case .failure(let error): complete(runID, failure: error)
                }
            }
        } catch {
            complete(runID, failure: error as? KafkaError ?? KafkaError(code: .invalidArgument, message: "\(error)"))
        }
    }

    /// One event of `runID` is acknowledged or failed; wakes the run's flushes when it was the last one.
    private func complete(_ runID: String, failure: KafkaError?) {
        if let failure { logger.error("lineage event of run \(runID) not delivered: \(failure)") }
        let (waiters, result) = state.withLock {
            state -> ([CheckedContinuation<Void, any Error>], Result<Void, KafkaError>) in
            if failure == nil { state.published += 1 } else { state.failed += 1 }
            guard var run = state.runs[runID] else { return ([], .success(())) }
            run.outstanding -= 1
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
