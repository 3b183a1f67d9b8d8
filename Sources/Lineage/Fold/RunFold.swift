import Pipelines

/// One run being folded from its events, in the order its lineage partition holds them; when its terminal event
/// (or the rule for `incomplete` runs) closes it, ``line(storeInlineLimit:)`` is its line in a segment.
///
/// Everything in the line comes from the events and their offsets, never from the clock or the materializer's
/// settings other than the store's inline limit: replaying the same log gives the same bytes.
struct RunFold {
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

    mutating func add(_ event: TrackingEvent<ArtifactRef>, offset: Int64) {
        lastSeq = event.seq
        lastOffset = offset
        events += 1
        switch event.body {
        case .runStarted(let configuration, let input, let traceparent, let worker):
            sawStart = true
            startedMicros = event.timestamp
            self.configuration = configuration
            self.input = input
            self.traceparent = traceparent
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
    mutating func closeIncomplete(at offset: Int64) {
        close(.incomplete, at: offset, micros: nil)
    }

    private mutating func close(_ status: RunStatus, at offset: Int64, micros: Int64?) {
        self.status = status
        terminalOffset = offset
        endedMicros = micros
    }

    private mutating func update(_ step: StepRunID, _ change: (inout StepFold) -> Void) {
        let index = stepIndex[step.id] ?? addStep(step)
        if steps[index].step.isEmpty {
            steps[index].step = step.step
            steps[index].version = step.version
        }
        change(&steps[index])
    }

    private mutating func addStep(_ step: StepRunID) -> Int {
        steps.append(StepFold(step: step.step, stepRun: step.id, version: step.version))
        stepIndex[step.id] = steps.count - 1
        return steps.count - 1
    }

    // MARK: - The line

    /// The run's line (without the newline), and the artifact values too large to stay in it, by SHA-256.
    ///
    /// - Parameters:
    ///   - rank: the line's place among the lines closed at its terminal offset (``ClosedRun/rank``).
    ///   - storeInlineLimit: values of at most this many bytes stay in the line; larger ones are written to
    ///     `artifacts/` and the line names the file.
    func line(
        partition: Int32, rank: Int, storeInlineLimit: Int
    ) -> (line: [UInt8], artifacts: [(sha256: String, value: [UInt8])]) {
        var artifacts: [(sha256: String, value: [UInt8])] = []
        var out = JSONWriter(capacity: 2048)
        func artifact(_ ref: ArtifactRef?, into out: inout JSONWriter) {
            guard let ref else { return out.null() }
            out.object { out in
                out.field("id", ref.id)
                out.field("type", ref.type)
                out.field("sha256", ref.sha256)
                out.field("size", ref.size)
                if let value = ref.inlineJSON {
                    if value.count <= storeInlineLimit {
                        out.key("value")
                        out.raw(value)
                    } else if let sha256 = ref.sha256, StoreNames.isSHA256(sha256),
                        ContentHash.sha256(value) == sha256
                    {
                        artifacts.append((sha256, value))
                        out.field("file", ArtifactFiles.relativePath(of: sha256))
                    } else {
                        // A value whose hash does not match is kept in the line, never under another value's name.
                        out.key("value")
                        out.raw(value)
                        out.field("error", "the value's SHA-256 is not the sha256 its event gives")
                    }
                }
                if let producedBy = ref.producedBy { out.field("produced_by", producedBy) }
                if let error = ref.error { out.field("error", error) }
            }
        }
        func optional(_ value: Int64?, into out: inout JSONWriter) {
            if let value { out.int(value) } else { out.null() }
        }
        func timings(_ started: Int64?, _ ended: Int64?, _ duration: Int64?, into out: inout JSONWriter) {
            out.key("started_us")
            optional(started, into: &out)
            out.key("ended_us")
            optional(ended, into: &out)
            out.key("duration_us")
            optional(duration, into: &out)
        }
        out.object { out in
            out.field("run_id", runID)
            out.field("attempt", attempt)
            out.field("pipeline", pipeline)
            out.field("status", (status ?? .incomplete).rawValue)
            out.field("capture", capture)
            out.field("request_id", requestID)
            out.field("worker", worker)
            out.field("trace", traceparent)
            timings(startedMicros, endedMicros, durationMicros, into: &out)
            out.key("configuration")
            out.value(configuration ?? .null)
            out.key("input")
            artifact(input, into: &out)
            out.key("output")
            artifact(output, into: &out)
            out.field("error", self.error)
            out.key("metadata")
            out.value(.object(metadata))
            out.key("steps")
            out.array { list in
                for step in steps {
                    list.object { out in
                        out.field("step_run", step.stepRun)
                        out.field("step", step.step)
                        out.field("version", step.version)
                        out.field("status", step.status.rawValue)
                        out.field("attempts", step.attempts)
                        timings(step.startedMicros, step.endedMicros, step.durationMicros, into: &out)
                        out.key("inputs")
                        out.array { list in for input in step.inputs { artifact(input, into: &list) } }
                        out.key("output")
                        artifact(step.output, into: &out)
                        out.key("cached_from")
                        if let source = step.cachedFrom {
                            out.object { out in
                                out.field("run_id", source.runID)
                                out.field("step_run", source.stepRun)
                            }
                        } else {
                            out.null()
                        }
                        out.field("error", step.error)
                        out.key("metadata")
                        out.value(.object(step.metadata))
                    }
                }
            }
            out.key("logs")
            out.array { list in
                for log in logs {
                    list.object { out in
                        out.field("ts", log.micros)
                        out.field("step_run", log.stepRun)
                        out.field("level", log.level)
                        out.field("message", log.message)
                    }
                }
            }
            out.key("lineage")
            out.object { out in
                out.field("partition", Int(partition))
                out.field("first_offset", firstOffset)
                out.key("terminal_offset")
                optional(terminalOffset, into: &out)
                out.field("terminal_rank", rank)
                out.field("events", events)
            }
        }
        return (out.bytes, artifacts)
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

    init(step: String, stepRun: String, version: Int) {
        self.step = step
        self.stepRun = stepRun
        self.version = version
    }
}
