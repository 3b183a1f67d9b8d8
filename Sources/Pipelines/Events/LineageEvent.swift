/// One tracking event of a run: the lineage event model (docs/lineage-events.md, docs/protocol.md).
///
/// `Artifact` is ``ArtifactRef`` for an event as it travels and is stored (``LineageEvent``), and
/// ``PendingArtifact`` for an event as the runner emits it, before anything is serialised (``PendingEvent``).
public struct TrackingEvent<Artifact: Sendable>: Sendable {
    /// `<run_id>/<attempt>/<seq>`: unique, and the same when the same run emits the same event again.
    public var eventID: String { "\(runID)/\(attempt)/\(seq)" }
    /// The event's position in its run, from 0.
    public var seq: Int
    /// Wall-clock time of the event in microseconds since 1970.
    public var timestamp: Int64
    public var runID: String
    public var pipeline: String
    /// The request the run serves, if any (set by the worker).
    public var requestID: String?
    /// The capture mode's label (``CaptureConfiguration/label``).
    public var capture: String
    /// Which delivery of the same request this run is: 1, then 2 when a redelivered request runs again.
    public var attempt: Int
    public var body: LineageEventBody<Artifact> {
        didSet { type = body.type }
    }
    /// The event's type (`run_started`, `step_completed`, ...), the body's, kept beside it: reading it from an event
    /// in an array is then a field read, where computing it copied the whole event to switch over its body.
    public private(set) var type: LineageEventType

    public init(
        seq: Int, timestamp: Int64, runID: String, pipeline: String, requestID: String?, capture: String,
        attempt: Int, body: LineageEventBody<Artifact>
    ) {
        self.init(
            seq: seq, timestamp: timestamp, runID: runID, pipeline: pipeline, requestID: requestID, capture: capture,
            attempt: attempt, body: body, type: body.type)
    }

    /// The event with `body` of the type `type`, already known (a decoder read it): `body.type` copies the body to
    /// switch over it.
    init(
        seq: Int, timestamp: Int64, runID: String, pipeline: String, requestID: String?, capture: String,
        attempt: Int, body: LineageEventBody<Artifact>, type: LineageEventType
    ) {
        self.seq = seq
        self.timestamp = timestamp
        self.runID = runID
        self.pipeline = pipeline
        self.requestID = requestID
        self.capture = capture
        self.attempt = attempt
        self.body = body
        self.type = type
    }

    /// The same event with every artifact transformed.
    public func mapArtifacts<Other: Sendable>(
        _ transform: (Artifact) throws -> Other
    ) rethrows -> TrackingEvent<Other> {
        TrackingEvent<Other>(
            seq: seq, timestamp: timestamp, runID: runID, pipeline: pipeline, requestID: requestID, capture: capture,
            attempt: attempt, body: try body.mapArtifacts(transform))
    }
}

/// A lineage event as it travels on the lineage topic and is stored.
public typealias LineageEvent = TrackingEvent<ArtifactRef>

/// A lineage event as the runner emits it: artifacts still unserialised values.
public typealias PendingEvent = TrackingEvent<PendingArtifact>

extension TrackingEvent: Equatable where Artifact: Equatable {}

extension TrackingEvent where Artifact == PendingArtifact {
    /// Serialises and hashes the event's artifacts and finds their producers.
    /// - Important: Resolve the events of one run in `seq` order (see ``PendingArtifact/resolve()``).
    public func resolve() -> LineageEvent {
        mapArtifacts { $0.resolve() }
    }
}

/// The types of lineage events.
public enum LineageEventType: String, Sendable, Hashable, CaseIterable {
    case runStarted = "run_started"
    case stepStarted = "step_started"
    case stepCompleted = "step_completed"
    case stepCached = "step_cached"
    case stepFailed = "step_failed"
    case log = "log"
    case metadata = "metadata"
    case runCompleted = "run_completed"
    case runFailed = "run_failed"

    /// `run_completed` and `run_failed`: the run's last event.
    public var isTerminal: Bool { self == .runCompleted || self == .runFailed }

    /// The type named `name`, as ``init(rawValue:)`` finds it, with one string comparison: the only type the name can
    /// be is picked by its length and a byte first (`init(rawValue:)` compares with each type in turn: 500
    /// instructions an event, decoding a record).
    public init?(named name: String) {
        var name = name
        let candidate: LineageEventType? = name.withUTF8 { utf8 in
            switch utf8.count {
            case 3: .log
            case 8: .metadata
            case 10: .runFailed
            case 11:
                utf8[0] == UInt8(ascii: "r")
                    ? .runStarted : utf8[5] == UInt8(ascii: "c") ? .stepCached : .stepFailed
            case 12: .stepStarted
            case 13: .runCompleted
            case 14: .stepCompleted
            default: nil
            }
        }
        guard let candidate, candidate.rawValue == name else { return nil }
        self = candidate
    }
}

/// What an event says, by type. Indirect: a body is a reference to its payload, so that copying an event (into a
/// record, out of an array) retains one box instead of every string and artifact it holds (`record-probe`: 6 % of a
/// tracker's instructions per run, 1.4 % of the materializer's per record).
public indirect enum LineageEventBody<Artifact: Sendable>: Sendable {
    /// The run began. `configuration` is the resolved capture configuration (``CaptureConfiguration/knobs``);
    /// `input` is `nil` when artifacts are not captured; `traceparent` is the request's header as it came, and
    /// `traceparentError` says why it was ignored when it is malformed; `span` is the span the run ran in, when traced;
    /// `worker` names the process that ran it, if one was named.
    case runStarted(
        configuration: JSONValue, input: Artifact?, traceparent: String?, traceparentError: String?, span: SpanIDs?,
        worker: String?)
    /// One attempt of a step run began, with its inputs (none when artifacts are not captured).
    case stepStarted(step: StepRunID, attempt: Int, inputs: [Artifact])
    /// The attempt succeeded.
    case stepCompleted(step: StepRunID, attempt: Int, durationMicros: Int64, output: Artifact?)
    /// The step was not run: its output came from the cache, from the step run `cachedFrom`.
    case stepCached(step: StepRunID, inputs: [Artifact], output: Artifact?, cachedFrom: CachedStepRun)
    /// The attempt threw. `retrying` says whether another attempt follows.
    case stepFailed(step: StepRunID, attempt: Int, durationMicros: Int64, error: ErrorDetail, retrying: Bool)
    /// A log line of a step run, or of the run itself when `stepRun` is `nil`.
    case log(stepRun: String?, level: LogLevel, message: String)
    /// Metadata attached to a step run, or to the run itself when `stepRun` is `nil`.
    case metadata(stepRun: String?, values: [String: JSONValue])
    case runCompleted(durationMicros: Int64, output: Artifact?)
    case runFailed(durationMicros: Int64, error: ErrorDetail)

    public var type: LineageEventType {
        switch self {
        case .runStarted: .runStarted
        case .stepStarted: .stepStarted
        case .stepCompleted: .stepCompleted
        case .stepCached: .stepCached
        case .stepFailed: .stepFailed
        case .log: .log
        case .metadata: .metadata
        case .runCompleted: .runCompleted
        case .runFailed: .runFailed
        }
    }

    public func mapArtifacts<Other: Sendable>(
        _ transform: (Artifact) throws -> Other
    ) rethrows -> LineageEventBody<Other> {
        switch self {
        case .runStarted(let configuration, let input, let traceparent, let traceparentError, let span, let worker):
            .runStarted(
                configuration: configuration, input: try input.map(transform), traceparent: traceparent,
                traceparentError: traceparentError, span: span, worker: worker)
        case .stepStarted(let step, let attempt, let inputs):
            .stepStarted(step: step, attempt: attempt, inputs: try inputs.map(transform))
        case .stepCompleted(let step, let attempt, let duration, let output):
            .stepCompleted(step: step, attempt: attempt, durationMicros: duration, output: try output.map(transform))
        case .stepCached(let step, let inputs, let output, let cachedFrom):
            .stepCached(
                step: step, inputs: try inputs.map(transform), output: try output.map(transform),
                cachedFrom: cachedFrom)
        case .stepFailed(let step, let attempt, let duration, let error, let retrying):
            .stepFailed(step: step, attempt: attempt, durationMicros: duration, error: error, retrying: retrying)
        case .log(let stepRun, let level, let message):
            .log(stepRun: stepRun, level: level, message: message)
        case .metadata(let stepRun, let values):
            .metadata(stepRun: stepRun, values: values)
        case .runCompleted(let duration, let output):
            .runCompleted(durationMicros: duration, output: try output.map(transform))
        case .runFailed(let duration, let error):
            .runFailed(durationMicros: duration, error: error)
        }
    }
}

extension LineageEventBody: Equatable where Artifact: Equatable {}

/// Which step run an event is about.
public struct StepRunID: Sendable, Hashable {
    /// The step's name.
    public var step: String
    /// `<step>#<n>`: the n-th invocation of that step in the run, from 1.
    public var id: String
    /// The step's version.
    public var version: Int
    /// The id of the step run's span, when traced (``SpanIDs/spanID``).
    public var spanID: String?

    public init(step: String, id: String, version: Int, spanID: String? = nil) {
        self.step = step
        self.id = id
        self.version = version
        self.spanID = spanID
    }
}

/// Where a cached output came from.
public struct CachedStepRun: Sendable, Hashable {
    public var runID: String
    public var stepRun: String

    public init(runID: String, stepRun: String) {
        self.runID = runID
        self.stepRun = stepRun
    }
}

/// Why a step or a run failed.
public struct ErrorDetail: Sendable, Hashable {
    /// `step_failed`, or the code of a thrown ``CodedError``.
    public var code: String
    public var message: String
    /// The step whose failure failed the run; `nil` for a failure outside any step.
    public var step: String?

    public init(code: String, message: String, step: String? = nil) {
        self.code = code
        self.message = message
        self.step = step
    }
}

extension JSONWriter {
    /// Writes `error` as the error object of docs/protocol.md, `{"code", "message", "step"}`, or `null`: the one writer
    /// of it, for responses, lineage events, the store's lines and the commands that print results.
    public mutating func field(_ name: StaticString, _ error: ErrorDetail?) {
        key(name)
        guard let error else { return null() }
        object { out in
            out.field("code", error.code)
            out.field("message", error.message)
            out.field("step", error.step)
        }
    }
}

/// The level of a step's log line.
public enum LogLevel: String, Sendable, Hashable, CaseIterable, Comparable {
    case debug
    case info
    case warning
    case error

    private var rank: Int {
        switch self {
        case .debug: 0
        case .info: 1
        case .warning: 2
        case .error: 3
        }
    }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rank < rhs.rank }
}
