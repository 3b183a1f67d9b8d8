import CoreMetrics
import Logging
import Synchronization
import Tracing

/// Options of one run, set by whoever starts it (the worker sets them from the request).
public struct RunOptions: Sendable {
    /// The capture configuration; `nil` means the pipeline's own (from code), else BATCH. The worker passes the
    /// configuration it resolved at start-up.
    public var capture: CaptureConfiguration?
    /// The run's id; `nil` makes a random one. The worker derives it from the request's topic, partition and offset.
    public var runID: String?
    public var requestID: String?
    /// Which delivery of the same request this is, from 1.
    public var attempt: Int
    /// The W3C trace context of the request, recorded on `run_started`.
    public var traceparent: String?
    /// Why `traceparent` was ignored, when it is malformed: recorded on `run_started` as `traceparent_error`.
    public var traceparentError: String?
    /// The process that runs it (the worker's name), recorded on `run_started`.
    public var worker: String?

    public init(
        capture: CaptureConfiguration? = nil, runID: String? = nil, requestID: String? = nil, attempt: Int = 1,
        traceparent: String? = nil, traceparentError: String? = nil, worker: String? = nil
    ) {
        self.capture = capture
        self.runID = runID
        self.requestID = requestID
        self.attempt = attempt
        self.traceparent = traceparent
        self.traceparentError = traceparentError
        self.worker = worker
    }
}

/// What a run returned.
public struct RunResult<Output: Sendable>: Sendable {
    /// `nil` for a run that left no lineage: memory-only, left out by its sample, or completed where only failed runs
    /// are kept.
    public let runID: String?
    public let capture: CaptureConfiguration
    /// The output, or why the run failed (``ErrorDetail``: `step_failed` with the step, a ``CodedError``'s code,
    /// `internal` when lineage a BATCH run waits for is not durable).
    public let outcome: Result<Output, ErrorDetail>
    public let durationMicros: Int64

    @usableFromInline
    init(runID: String?, capture: CaptureConfiguration, outcome: Result<Output, ErrorDetail>, durationMicros: Int64) {
        self.runID = runID
        self.capture = capture
        self.outcome = outcome
        self.durationMicros = durationMicros
    }
}

/// Runs pipelines, reporting tracked runs to a tracker and sharing one step cache among them.
public struct PipelineRunner: Sendable {
    public let tracker: any Tracker
    public let cache: StepCache
    /// Where ``RunContext/log(_:level:)`` writes besides the lineage.
    public let logger: Logger
    /// Starts a span per step run of a tracked run, a child of the span current when the step is called; `nil`:
    /// no spans.
    public let tracer: (any Tracer)?
    let stepMetrics: StepMetrics

    /// - Parameter metricsFactory: where tracked runs' step durations go (`sluice_step_duration_seconds`); `nil`: the
    ///   factory swift-metrics was bootstrapped with.
    public init(
        tracker: any Tracker, cache: StepCache = StepCache(), logger: Logger = Logger(label: "sluice.step"),
        metricsFactory: (any MetricsFactory)? = nil, tracer: (any Tracer)? = nil
    ) {
        self.tracker = tracker
        self.cache = cache
        self.logger = logger
        self.tracer = tracer
        stepMetrics = StepMetrics(factory: metricsFactory ?? MetricsSystem.factory)
    }

    /// Runs `pipeline` on `input` with the capture configuration of `options` (else the pipeline's, else BATCH).
    ///
    /// Memory-only runs bind no ``RunContext`` and report nothing; so do the runs a ``CaptureConfiguration/sampleRate``
    /// below 1 leaves out (their result's capture is memory-only). Tracked runs emit `run_started`, their steps'
    /// events and `run_completed` or `run_failed` (with `runs: errors`, only a failed run's events reach the tracker);
    /// BATCH (`wait_for_tracking`) returns only after the tracker says every event it was given is durable.
    ///
    /// Inlinable, so that a memory-only run is compiled for the pipeline's own types where the pipeline is declared.
    @inlinable
    public func run<Input, Output>(
        _ pipeline: Pipeline<Input, Output>, _ input: Input, options: RunOptions = RunOptions()
    ) async -> RunResult<Output> {
        let configuration = options.capture ?? pipeline.capture ?? .batch
        let started = Timestamps.monotonicMicros()
        guard configuration.isMemoryOnly else {
            return await runTracked(pipeline, input, options: options, configuration: configuration, started: started)
        }
        return await runInMemory(pipeline, input, capture: configuration, started: started)
    }

    /// A run that nothing tracks, reported with `capture`.
    @inlinable
    func runInMemory<Input, Output>(
        _ pipeline: Pipeline<Input, Output>, _ input: Input, capture configuration: CaptureConfiguration,
        started: Int64
    ) async -> RunResult<Output> {
        let outcome: Result<Output, ErrorDetail>
        do {
            outcome = .success(try await pipeline.run(input))
        } catch {
            outcome = .failure(ErrorDetail(describing: error))
        }
        return RunResult(
            runID: nil, capture: configuration, outcome: outcome, durationMicros: Timestamps.monotonicMicros() - started
        )
    }

    /// ``run(_:_:options:)`` of a run its configuration tracks, unless its sample leaves it out.
    @usableFromInline
    func runTracked<Input, Output>(
        _ pipeline: Pipeline<Input, Output>, _ input: Input, options: RunOptions,
        configuration: CaptureConfiguration, started: Int64
    ) async -> RunResult<Output> {
        let runID = options.runID ?? Self.randomRunID()
        guard configuration.tracks(runID: runID) else {
            return await runInMemory(pipeline, input, capture: .memoryOnly, started: started)
        }
        let run = RunRecorder(
            runID: runID, pipeline: pipeline.name, options: options, configuration: configuration, tracker: tracker,
            cache: cache, logger: logger, stepMetrics: stepMetrics, tracer: tracer)
        run.emit(
            .runStarted(
                configuration: configuration.knobsObject,
                input: run.artifact("input", .produced, input), traceparent: options.traceparent,
                traceparentError: options.traceparentError,
                span: tracer.flatMap { SpanIDs(of: ServiceContext.current ?? .topLevel, tracer: $0) },
                worker: options.worker))
        var outcome: Result<Output, ErrorDetail>
        do {
            let output = try await RunContext.$current.withValue(RunContext(run: run, stepRun: nil)) {
                try await pipeline.body(input)
            }
            run.emit(
                .runCompleted(
                    durationMicros: Timestamps.monotonicMicros() - started,
                    output: run.artifact("output", .consumed, output)))
            outcome = .success(output)
        } catch {
            let detail = ErrorDetail(describing: error)
            run.emit(.runFailed(durationMicros: Timestamps.monotonicMicros() - started, error: detail))
            outcome = .failure(detail)
        }
        if configuration.waitForTracking {
            do {
                try await run.flush()
            } catch {
                outcome = .failure(ErrorDetail(code: "internal", message: "the run's lineage is not durable: \(error)"))
            }
        }
        // A run whose events were discarded (`runs: errors`, completed) left no lineage to name.
        let keptRunID = configuration.keepsFailedRunsOnly && run.isDiscarded ? nil : runID
        return RunResult(
            runID: keptRunID, capture: configuration, outcome: outcome,
            durationMicros: Timestamps.monotonicMicros() - started)
    }

    /// 32 hexadecimal digits: 64 random bits drawn once per process, then a counter, so ids are unique without a
    /// system call per run.
    private static func randomRunID() -> String {
        let number = runCounter.add(1, ordering: .relaxed).newValue
        return String(unsafeUninitializedCapacity: 32) { text in
            for (offset, word) in [(0, processPrefix), (16, number)] {
                for digit in 0..<16 {
                    text[offset + digit] = hexDigits[Int((word >> UInt64(60 - 4 * digit)) & 0xF)]
                }
            }
            return 32
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private static let processPrefix: UInt64 = {
        var generator = SystemRandomNumberGenerator()
        return generator.next()
    }()

    private static let runCounter = Atomic<UInt64>(0)
}
