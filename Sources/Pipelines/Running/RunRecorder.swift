import Logging
import Synchronization
import Tracing

/// The state of one tracked run: numbers its events and step runs and reports the events to the tracker in order.
///
/// A run whose capture waits for its lineage (BATCH, `flush_on_step_end`) holds its events until it waits, and then
/// hands them over together, so that a tracker can publish them as one record; a run that keeps its lineage only if
/// it fails (`runs: errors`) holds them until its end and hands them over only then; other runs hand each event over
/// at once.
@usableFromInline final class RunRecorder: Sendable {
    let runID: String
    let pipeline: String
    let requestID: String?
    let attempt: Int
    let configuration: CaptureConfiguration
    let tracker: any Tracker
    let cache: StepCache
    let logger: Logger
    let stepMetrics: StepMetrics
    let tracer: (any Tracer)?
    let ledger: ArtifactLedger
    private let label: String

    private struct Counters {
        var seq = 0
        var invocations: [String: Int] = [:]
        /// Set by the run's terminal event: what a leftover task reports after it is dropped, so that the run's
        /// last event stays its terminal one.
        var finished = false
        /// Events not yet handed to the tracker, when the run holds them until it flushes.
        var held: [PendingEvent] = []
        /// Events a run that keeps only its failure dropped from `held` at its limit.
        var dropped = 0
        /// Set when a run that keeps only its failure completes: its events are gone and nothing waits for them.
        var discarded = false
    }

    /// Whether events wait in ``Counters/held`` for ``flush()`` or for the run's end.
    private let holdsEvents: Bool

    private let counters: Mutex<Counters>

    init(
        runID: String, pipeline: String, options: RunOptions, configuration: CaptureConfiguration,
        tracker: any Tracker, cache: StepCache, logger: Logger, stepMetrics: StepMetrics, tracer: (any Tracer)?
    ) {
        self.runID = runID
        self.pipeline = pipeline
        self.requestID = options.requestID
        self.attempt = options.attempt
        self.configuration = configuration
        self.tracker = tracker
        self.cache = cache
        self.logger = logger
        self.stepMetrics = stepMetrics
        self.tracer = tracer
        self.ledger = ArtifactLedger(inlineLimit: configuration.inlineLimit)
        self.label = configuration.label
        holdsEvents =
            configuration.waitForTracking || configuration.flushesEachStep || configuration.keepsFailedRunsOnly
        // Room for a typical run's steps and events at once, rather than growing from one by doubling.
        var counters = Counters()
        counters.invocations.reserveCapacity(8)
        if holdsEvents { counters.held.reserveCapacity(16) }
        self.counters = Mutex(counters)
    }

    /// Numbers the event and hands it to the tracker; the lock keeps `seq` order and tracker order the same.
    /// Events after the run's terminal event (from a task the pipeline left running) are dropped.
    func emit(_ body: LineageEventBody<PendingArtifact>) {
        let timestamp = Timestamps.wallMicros()
        counters.withLock { counters in
            guard !counters.finished else { return }
            let event = PendingEvent(
                seq: counters.seq, timestamp: timestamp, runID: runID, pipeline: pipeline, requestID: requestID,
                capture: label, attempt: attempt, body: body)
            counters.finished = event.type.isTerminal
            counters.seq += 1
            guard holdsEvents else { return tracker.record(event) }
            if configuration.keepsFailedRunsOnly {
                holdForFailure(event, in: &counters)
            } else {
                counters.held.append(event)
            }
            // A run that does not wait at its end (REALTIME with `flush_on_step_end`, or keeping only its failure)
            // hands its last events over at once.
            if counters.finished && !configuration.waitForTracking && !counters.held.isEmpty {
                tracker.record(contentsOf: counters.held)
                counters.held.removeAll()
            }
        }
    }

    /// Holds an event of a run that keeps only its failure: its completion discards the run's events; its failure
    /// keeps them, numbered anew from 0 when the limit dropped some, after a warning that says how many.
    private func holdForFailure(_ event: PendingEvent, in counters: inout Counters) {
        switch event.type {
        case .runCompleted:
            counters.held.removeAll()
            counters.discarded = true
        case .runFailed:
            counters.held.append(event)
            guard counters.dropped > 0 else { return }
            let limit = CaptureConfiguration.errorsOnlyEventLimit
            // Dated as the oldest event kept after `run_started`, before which it stands.
            var warning = counters.held[1]
            warning.body = .log(
                stepRun: nil, level: .warning,
                message: "errors-only capture dropped \(counters.dropped) earlier events of this run: a run holds at "
                    + "most \(limit)")
            counters.held.insert(warning, at: 1)
            for index in counters.held.indices { counters.held[index].seq = index }
        default:
            // At the limit (less room for `run_failed` and the warning) the oldest quarter goes, all but
            // `run_started`: each event is moved a bounded number of times on average.
            let limit = CaptureConfiguration.errorsOnlyEventLimit
            if counters.held.count == limit - 2 {
                let oldest = 1..<(1 + limit / 4)
                counters.held.removeSubrange(oldest)
                counters.dropped += oldest.count
            }
            counters.held.append(event)
        }
    }

    /// Hands the held events to the tracker and waits until every event of the run so far is durable; returns at
    /// once for a run whose events were discarded (`runs: errors` and the run completed).
    /// - Throws: what the tracker's flush throws.
    func flush() async throws {
        let discarded = counters.withLock { counters in
            if !counters.held.isEmpty {
                tracker.record(contentsOf: counters.held)
                counters.held.removeAll()
            }
            return counters.discarded
        }
        guard !discarded else { return }
        try await tracker.flush(runID: runID)
    }

    /// Whether the run's events were discarded: `runs: errors` and the run completed.
    var isDiscarded: Bool { counters.withLock { $0.discarded } }

    /// The id of the next invocation of `step` in this run: `<step>#<n>`, from 1.
    func nextStepRun(of step: String) -> String {
        let number = counters.withLock { counters in
            let next = counters.invocations[step, default: 0] + 1
            counters.invocations[step] = next
            return next
        }
        return "\(step)#\(number)"
    }

    /// A value as an artifact of this run, or `nil` when the configuration does not capture artifacts.
    func artifact(_ id: String, _ role: PendingArtifact.Role, _ value: any Encodable & Sendable) -> PendingArtifact? {
        configuration.artifacts ? PendingArtifact(id: id, role: role, value: value, ledger: ledger) : nil
    }

    func keepsLog(_ level: LogLevel) -> Bool {
        switch configuration.logs {
        case .all: true
        case .errors: level >= .warning
        case .off: false
        }
    }

    /// Waits for the tracker when the configuration makes each step wait for its events.
    func flushStepIfAsked(_ step: String) async throws {
        guard configuration.flushesEachStep else { return }
        do {
            try await flush()
        } catch {
            throw LineageNotDurable(
                detail: ErrorDetail(
                    code: "internal", message: "lineage of step '\(step)' is not durable: \(error)", step: step))
        }
    }
}

/// A step's lineage could not be made durable where the capture mode waits for it (`flush_on_step_end`): the run
/// fails with `internal`, naming the step; the step is not tried again, and steps that called it do not wrap it.
struct LineageNotDurable: Error {
    let detail: ErrorDetail
}
