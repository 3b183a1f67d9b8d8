import Pipelines

/// One run being folded from its events, in the order its lineage partition holds them; when its terminal event
/// (or the rule for `incomplete` runs) closes it, ``stored(partition:rank:storeInlineLimit:)`` is its line in a segment.
///
/// Everything in the line comes from the events and their offsets, never from the clock or the materializer's
/// settings other than the store's inline limit: replaying the same log gives the same bytes.
///
/// A class: a run moves between the open runs, the record in hand and the closed runs as one reference, where a
/// struct of this size was copied, and each of its strings retained, at every move.
final class RunFold {
    let runID: String
    let attempt: Int
    let firstOffset: Int64
    private(set) var pipeline: String
    private(set) var requestID: String?
    private(set) var capture: String
    /// Whether the fold saw the run's `run_started`: a fold without it began in the middle of the run.
    private(set) var sawStart = false
    private(set) var startedMicros: Int64?
    private(set) var lastSeq = -1
    private(set) var lastOffset: Int64
    private(set) var events = 0
    private var configuration: JSONValue?
    private var traceparent: String?
    private var span: SpanIDs?
    private var worker: String?
    private var input: ArtifactRef?
    private var output: ArtifactRef?
    private var error: ErrorDetail?
    private var metadata: [String: JSONValue] = [:]
    private var steps: [StepFold] = []
    private var stepIndex: [String: Int] = [:]
    private var logs: [(micros: Int64, stepRun: String?, level: String, message: String)] = []
    /// How the fold ended; `nil` while open.
    private(set) var status: RunStatus?
    private(set) var terminalOffset: Int64?
    private var endedMicros: Int64?
    private var durationMicros: Int64?

    init(first event: TrackingEvent<ArtifactRef>, offset: Int64, attempt: Int) {
        runID = event.runID
        self.attempt = attempt
        firstOffset = offset
        lastOffset = offset
        pipeline = event.pipeline
        requestID = event.requestID
        capture = event.capture
    }

    /// The `ts` of the run's `run_started`, if the fold saw it.
    var startTimestamp: Int64? { startedMicros }

    /// Whether `event` is one the fold has already taken (a record the producer sent twice): events of a run come
    /// in `seq` order.
    func isRepeat(_ event: TrackingEvent<ArtifactRef>) -> Bool {
        event.seq <= lastSeq
    }

    func add(_ event: TrackingEvent<ArtifactRef>, offset: Int64) {
        lastSeq = event.seq
        lastOffset = offset
        events += 1
        switch event.body {
        case .runStarted(let configuration, let input, let traceparent, _, let span, let worker):
            sawStart = true
            startedMicros = event.timestamp
            self.configuration = configuration
            self.input = input
            self.traceparent = traceparent
            self.span = span
            self.worker = worker
            pipeline = event.pipeline
            requestID = event.requestID
            capture = event.capture
        case .stepStarted(let step, let attempt, let inputs):
            update(step) { fold in
                fold.attempts = max(fold.attempts, attempt)
                if fold.startedMicros == nil { fold.startedMicros = event.timestamp }
                fold.status = .running
                fold.inputs = inputs
            }
        case .stepCompleted(let step, let attempt, let duration, let output):
            update(step) { fold in
                fold.attempts = max(fold.attempts, attempt)
                fold.status = .completed
                fold.endedMicros = event.timestamp
                fold.durationMicros = duration
                fold.output = output
                fold.error = nil
            }
        case .stepCached(let step, let inputs, let output, let cachedFrom):
            update(step) { fold in
                fold.status = .cached
                fold.startedMicros = fold.startedMicros ?? event.timestamp
                fold.endedMicros = event.timestamp
                fold.inputs = inputs
                fold.output = output
                fold.cachedFrom = cachedFrom
            }
        case .stepFailed(let step, let attempt, let duration, let error, let retrying):
            update(step) { fold in
                fold.attempts = max(fold.attempts, attempt)
                fold.status = retrying ? .retrying : .failed
                fold.endedMicros = event.timestamp
                fold.durationMicros = duration
                fold.error = error
            }
        case .log(let stepRun, let level, let message):
            logs.append((event.timestamp, stepRun, level.rawValue, message))
        case .metadata(let stepRun, let values):
            if let stepRun {
                let index = stepIndex[stepRun] ?? addStep(StepRunID(step: "", id: stepRun, version: 0))
                steps[index].metadata.merge(values) { _, new in new }
            } else {
                metadata.merge(values) { _, new in new }
            }
        case .runCompleted(let duration, let output):
            close(.completed, at: offset, micros: event.timestamp)
            durationMicros = duration
            self.output = output
        case .runFailed(let duration, let error):
            close(.failed, at: offset, micros: event.timestamp)
            durationMicros = duration
            self.error = error
        }
    }

    /// Closes the fold without a terminal event, at `offset`: the event that made it `incomplete`.
    func closeIncomplete(at offset: Int64) {
        close(.incomplete, at: offset, micros: nil)
    }

    private func close(_ status: RunStatus, at offset: Int64, micros: Int64?) {
        self.status = status
        terminalOffset = offset
        endedMicros = micros
    }

    private func update(_ step: StepRunID, _ change: (inout StepFold) -> Void) {
        let index = stepIndex[step.id] ?? addStep(step)
        if steps[index].step.isEmpty {
            steps[index].step = step.step
            steps[index].version = step.version
        }
        if let spanID = step.spanID { steps[index].spanID = spanID }
        change(&steps[index])
    }

    private func addStep(_ step: StepRunID) -> Int {
        steps.append(StepFold(step: step.step, stepRun: step.id, version: step.version))
        stepIndex[step.id] = steps.count - 1
        return steps.count - 1
    }

    // MARK: - The line

    /// The run as its line holds it, and the artifact values too large to stay in the line, by SHA-256.
    ///
    /// - Parameters:
    ///   - rank: the line's place among the lines closed at its terminal offset (``ClosedRun/rank``).
    ///   - storeInlineLimit: values of at most this many bytes stay in the line; larger ones are written to
    ///     `artifacts/` and the line names the file.
    func stored(
        partition: Int32, rank: Int, storeInlineLimit: Int
    ) -> (run: StoredRun, artifacts: [(sha256: String, value: [UInt8])]) {
        var files: [(sha256: String, value: [UInt8])] = []
        func stored(_ ref: ArtifactRef?) -> StoredRun.Artifact? {
            guard let ref else { return nil }
            var artifact = StoredRun.Artifact(
                id: ref.id, type: ref.type, sha256: ref.sha256, size: ref.size, producedBy: ref.producedBy,
                error: ref.error)
            if let value = ref.inlineJSON {
                if value.count <= storeInlineLimit {
                    artifact.value = value
                } else if let sha256 = ref.sha256, StoreNames.isSHA256(sha256), ContentHash.sha256(value) == sha256 {
                    files.append((sha256, value))
                    artifact.file = ArtifactFiles.relativePath(of: sha256)
                } else {
                    // A value whose hash does not match is kept in the line, never under another value's name.
                    artifact.value = value
                    let mismatch = "the value's SHA-256 is not the sha256 its event gives"
                    artifact.error = ref.error.map { "\(mismatch); \($0)" } ?? mismatch
                }
            }
            return artifact
        }
        let run = StoredRun(
            runID: runID, attempt: attempt, pipeline: pipeline, status: status ?? .incomplete, capture: capture,
            requestID: requestID, worker: worker, trace: traceparent, span: span, startedMicros: startedMicros,
            endedMicros: endedMicros, durationMicros: durationMicros, configuration: configuration,
            input: stored(input), output: stored(output), error: error, metadata: metadata,
            steps: steps.map { step in
                StoredRun.Step(
                    stepRun: step.stepRun, step: step.step, version: step.version, status: step.status,
                    attempts: step.attempts, startedMicros: step.startedMicros, endedMicros: step.endedMicros,
                    durationMicros: step.durationMicros, inputs: step.inputs.compactMap(stored),
                    output: stored(step.output), cachedFrom: step.cachedFrom, error: step.error,
                    metadata: step.metadata, spanID: step.spanID)
            },
            logs: logs.map {
                StoredRun.Log(micros: $0.micros, stepRun: $0.stepRun, level: $0.level, message: $0.message)
            },
            position: StoredRun.Position(
                partition: partition, firstOffset: firstOffset, terminalOffset: terminalOffset, terminalRank: rank,
                events: events))
        return (run, files)
    }
}

/// One step run inside a ``RunFold``.
struct StepFold {
    var step: String
    let stepRun: String
    var version: Int
    var status = StepRunStatus.running
    var attempts = 0
    var startedMicros: Int64?
    var endedMicros: Int64?
    var durationMicros: Int64?
    var inputs: [ArtifactRef] = []
    var output: ArtifactRef?
    var cachedFrom: CachedStepRun?
    var error: ErrorDetail?
    var metadata: [String: JSONValue] = [:]
    var spanID: String?

    init(step: String, stepRun: String, version: Int) {
        self.step = step
        self.stepRun = stepRun
        self.version = version
    }
}
