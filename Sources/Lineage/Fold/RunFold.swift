import Pipelines

/// One run being folded from its events, in the order its lineage partition holds them; when its terminal event
/// (or the rule for `incomplete` runs) closes it, ``takeStored(partition:rank:storeInlineLimit:)`` is its line in a
/// segment.
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
    /// Whether the fold saw the run's `run_started`: a fold without it began in the middle of the run.
    private(set) var sawStart = false
    private(set) var lastSeq = -1
    private(set) var lastOffset: Int64
    private(set) var events = 0
    /// The run's line as the events so far make it, built in place: closing the fold converts nothing. (No dynamic
    /// exclusivity checks on it and on `stepIndex`: a fold is changed by one thread, one call at a time; the checks
    /// were a fifth of adding an event.)
    @exclusivity(unchecked) private var run: StoredRun
    @exclusivity(unchecked) private var stepIndex: [String: Int] = [:]
    /// How the fold ended; `nil` while open.
    private(set) var status: RunStatus?
    private(set) var terminalOffset: Int64?

    init(first event: borrowing TrackingEvent<ArtifactRef>, offset: Int64, attempt: Int) {
        runID = event.runID
        self.attempt = attempt
        firstOffset = offset
        lastOffset = offset
        run = StoredRun(
            runID: event.runID, attempt: attempt, pipeline: event.pipeline, status: .incomplete,
            capture: event.capture, requestID: event.requestID, worker: nil, trace: nil, startedMicros: nil,
            endedMicros: nil, durationMicros: nil, configuration: nil, input: nil, output: nil, error: nil,
            metadata: [:], steps: [], logs: [],
            position: StoredRun.Position(
                partition: 0, firstOffset: offset, terminalOffset: nil, terminalRank: 0, events: 0))
    }

    /// The `ts` of the run's `run_started`, if the fold saw it.
    var startTimestamp: Int64? { run.startedMicros }

    /// Whether `event` is one the fold has already taken (a record the producer sent twice): events of a run come
    /// in `seq` order.
    func isRepeat(_ event: TrackingEvent<ArtifactRef>) -> Bool {
        event.seq <= lastSeq
    }

    func add(_ event: borrowing TrackingEvent<ArtifactRef>, offset: Int64) {
        lastSeq = event.seq
        lastOffset = offset
        events += 1
        // Taken out first: switching over `event.body`, and closures reading `event.timestamp`, copied the whole event.
        let body = event.body
        let timestamp = event.timestamp
        switch body {
        case .runStarted(let configuration, let input, let traceparent, _, let span, let worker):
            sawStart = true
            run.startedMicros = timestamp
            run.configuration = configuration
            run.input = input.map(StoredRun.Artifact.init)
            run.trace = traceparent
            run.span = span
            run.worker = worker
            run.pipeline = event.pipeline
            run.requestID = event.requestID
            run.capture = event.capture
        case .stepStarted(let step, let attempt, let inputs):
            update(step) { fold in
                fold.attempts = max(fold.attempts, attempt)
                if fold.startedMicros == nil { fold.startedMicros = timestamp }
                fold.status = .running
                fold.inputs = inputs.map(StoredRun.Artifact.init)
            }
        case .stepCompleted(let step, let attempt, let duration, let output):
            update(step) { fold in
                fold.attempts = max(fold.attempts, attempt)
                fold.status = .completed
                fold.endedMicros = timestamp
                fold.durationMicros = duration
                fold.output = output.map(StoredRun.Artifact.init)
                fold.error = nil
            }
        case .stepCached(let step, let inputs, let output, let cachedFrom):
            update(step) { fold in
                fold.status = .cached
                fold.startedMicros = fold.startedMicros ?? timestamp
                fold.endedMicros = timestamp
                fold.inputs = inputs.map(StoredRun.Artifact.init)
                fold.output = output.map(StoredRun.Artifact.init)
                fold.cachedFrom = cachedFrom
            }
        case .stepFailed(let step, let attempt, let duration, let error, let retrying):
            update(step) { fold in
                fold.attempts = max(fold.attempts, attempt)
                fold.status = retrying ? .retrying : .failed
                fold.endedMicros = timestamp
                fold.durationMicros = duration
                fold.error = error
            }
        case .log(let stepRun, let level, let message):
            run.logs.append(
                StoredRun.Log(micros: timestamp, stepRun: stepRun, level: level.rawValue, message: message))
        case .metadata(let stepRun, let values):
            if let stepRun {
                let index = stepIndex[stepRun] ?? addStep(StepRunID(step: "", id: stepRun, version: 0))
                run.steps[index].metadata.merge(values) { _, new in new }
            } else {
                run.metadata.merge(values) { _, new in new }
            }
        case .runCompleted(let duration, let output):
            close(.completed, at: offset, micros: timestamp)
            run.durationMicros = duration
            run.output = output.map(StoredRun.Artifact.init)
        case .runFailed(let duration, let error):
            close(.failed, at: offset, micros: timestamp)
            run.durationMicros = duration
            run.error = error
        }
    }

    /// Closes the fold without a terminal event, at `offset`: the event that made it `incomplete`.
    func closeIncomplete(at offset: Int64) {
        close(.incomplete, at: offset, micros: nil)
    }

    private func close(_ status: RunStatus, at offset: Int64, micros: Int64?) {
        self.status = status
        terminalOffset = offset
        run.endedMicros = micros
    }

    private func update(_ step: StepRunID, _ change: (inout StoredRun.Step) -> Void) {
        let index = stepIndex[step.id] ?? addStep(step)
        if run.steps[index].step.isEmpty {
            run.steps[index].step = step.step
            run.steps[index].version = step.version
        }
        if let spanID = step.spanID { run.steps[index].spanID = spanID }
        change(&run.steps[index])
    }

    private func addStep(_ step: StepRunID) -> Int {
        run.steps.append(
            StoredRun.Step(
                stepRun: step.id, step: step.step, version: step.version, status: .running, attempts: 0,
                startedMicros: nil, endedMicros: nil, durationMicros: nil, inputs: [], output: nil, cachedFrom: nil,
                error: nil, metadata: [:]))
        stepIndex[step.id] = run.steps.count - 1
        return run.steps.count - 1
    }

    // MARK: - The line

    /// The run as its line holds it, and the artifact values too large to stay in the line, by SHA-256. Moves the
    /// run out of the fold (copying it retained every string and array it holds): once, when the fold is closed.
    ///
    /// - Parameters:
    ///   - rank: the line's place among the lines closed at its terminal offset (``ClosedRun/rank``).
    ///   - storeInlineLimit: values of at most this many bytes stay in the line; larger ones are written to
    ///     `artifacts/` and the line names the file.
    func takeStored(
        partition: Int32, rank: Int, storeInlineLimit: Int
    ) -> (run: StoredRun, artifacts: [(sha256: String, value: [UInt8])]) {
        var stored = StoredRun.taken
        swap(&stored, &run)
        stored.status = status ?? .incomplete
        stored.position = StoredRun.Position(
            partition: partition, firstOffset: firstOffset, terminalOffset: terminalOffset, terminalRank: rank,
            events: events)
        // Looked for first: changing an artifact in place is a copy of the steps when there is nothing to change.
        func isLarge(_ artifact: StoredRun.Artifact?) -> Bool { (artifact?.value?.count ?? 0) > storeInlineLimit }
        let large =
            isLarge(stored.input) || isLarge(stored.output)
            || stored.steps.contains { step in isLarge(step.output) || step.inputs.contains { isLarge($0) } }
        guard large else { return (stored, []) }
        var files: [(sha256: String, value: [UInt8])] = []
        func limit(_ artifact: inout StoredRun.Artifact) {
            guard let value = artifact.value, value.count > storeInlineLimit else { return }
            if let sha256 = artifact.sha256, StoreNames.isSHA256(sha256), ContentHash.sha256(value) == sha256 {
                files.append((sha256, value))
                artifact.value = nil
                artifact.file = ArtifactFiles.relativePath(of: sha256)
            } else {
                // A value whose hash does not match is kept in the line, never under another value's name.
                let mismatch = "the value's SHA-256 is not the sha256 its event gives"
                artifact.error = artifact.error.map { "\(mismatch); \($0)" } ?? mismatch
            }
        }
        func limitIfPresent(_ artifact: inout StoredRun.Artifact?) {
            guard var present = artifact else { return }
            limit(&present)
            artifact = present
        }
        limitIfPresent(&stored.input)
        limitIfPresent(&stored.output)
        for index in stored.steps.indices {
            for input in stored.steps[index].inputs.indices { limit(&stored.steps[index].inputs[input]) }
            limitIfPresent(&stored.steps[index].output)
        }
        return (stored, files)
    }
}

extension StoredRun {
    /// What a fold holds once its run is taken out: nothing to allocate.
    fileprivate static var taken: StoredRun {
        StoredRun(
            runID: "", attempt: 0, pipeline: "", status: .incomplete, capture: "", requestID: nil, worker: nil,
            trace: nil, startedMicros: nil, endedMicros: nil, durationMicros: nil, configuration: nil, input: nil,
            output: nil, error: nil, metadata: [:], steps: [], logs: [],
            position: Position(partition: 0, firstOffset: 0, terminalOffset: nil, terminalRank: 0, events: 0))
    }
}

extension StoredRun.Artifact {
    /// The artifact as an event gave it, its value (if any) in the line.
    init(_ ref: ArtifactRef) {
        self.init(
            id: ref.id, type: ref.type, sha256: ref.sha256, size: ref.size, value: ref.inlineJSON, file: nil,
            producedBy: ref.producedBy, error: ref.error)
    }
}
