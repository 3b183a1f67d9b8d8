import Pipelines

/// A run's line in the store (docs/store.md, "A run's line"): the one model of it. ``RunFold`` makes one when a run
/// closes and writes it with ``line()``; `sluice runs` reads lines back with ``init(line:reading:)``, and so does the
/// index (``Reading/structure``).
///
/// Everything in it comes from the run's events and their offsets: a replay of the same log gives the same bytes.
public struct StoredRun: Sendable {
    /// A value a run or a step consumed or produced.
    public struct Artifact: Sendable {
        public var id: String
        public var type: String
        public var sha256: String?
        public var size: Int
        /// The value's canonical JSON, when it stays in the line.
        public var value: [UInt8]?
        /// Where the value is, relative to the store's root, when it is too large for the line.
        public var file: String?
        /// The artifact of the run that produced this value (for a step's input or the run's output).
        public var producedBy: String?
        /// Why the value is missing or not to be trusted.
        public var error: String?
    }

    /// One step run.
    public struct Step: Sendable {
        public var stepRun: String
        public var step: String
        public var version: Int
        public var status: StepRunStatus
        public var attempts: Int
        public var startedMicros: Int64?
        public var endedMicros: Int64?
        public var durationMicros: Int64?
        public var inputs: [Artifact]
        public var output: Artifact?
        public var cachedFrom: CachedStepRun?
        public var error: ErrorDetail?
        public var metadata: [String: JSONValue]
        /// The step run's span, when it was traced.
        public var spanID: String? = nil
    }

    /// One log line of the run.
    public struct Log: Sendable {
        public var micros: Int64
        public var stepRun: String?
        public var level: String
        public var message: String
    }

    /// Where the run's events are in the lineage topic: what a restart or a replay compares with what it reads.
    public struct Position: Sendable {
        public var partition: Int32
        public var firstOffset: Int64
        /// The offset of the event that closed the run (its terminal event, or the one that made it incomplete).
        public var terminalOffset: Int64?
        /// The line's place among the lines closed at the same offset.
        public var terminalRank: Int
        public var events: Int
    }

    public var runID: String
    public var attempt: Int
    public var pipeline: String
    public var status: RunStatus
    public var capture: String
    public var requestID: String?
    public var worker: String?
    /// The `traceparent` the run's request carried.
    public var trace: String?
    /// The span the run ran in (the worker's span of its request), when it was traced.
    public var span: SpanIDs? = nil
    public var startedMicros: Int64?
    public var endedMicros: Int64?
    public var durationMicros: Int64?
    /// The resolved capture configuration the run used, as its `run_started` gave it.
    public var configuration: JSONValue?
    public var input: Artifact?
    public var output: Artifact?
    public var error: ErrorDetail?
    public var metadata: [String: JSONValue]
    public var steps: [Step]
    public var logs: [Log]
    public var position: Position

    // MARK: - Writing

    /// The version of a run's line this code writes (its `v`; lines without one are version 1, read as they are).
    /// docs/store.md describes each version.
    public static var lineVersion: Int { 2 }

    /// The line, without its newline. `configurations`, when given, keeps the canonical JSON of the configuration
    /// written last (one per writing thread: the runs of a pipeline share one).
    public func line(configurations: RepeatedJSON? = nil) -> [UInt8] {
        var out = JSONWriter(capacity: 2048)
        out.object { out in
            out.field("v", Self.lineVersion)
            out.field("run_id", runID)
            out.field("attempt", attempt)
            out.field("pipeline", pipeline)
            out.field("status", status.rawValue)
            out.field("capture", capture)
            out.field("request_id", requestID)
            out.field("worker", worker)
            out.field("trace", trace)
            if let span {
                out.field("trace_id", span.traceID)
                out.field("span_id", span.spanID)
            }
            Self.timings(startedMicros, endedMicros, durationMicros, into: &out)
            out.key("configuration")
            if let configuration {
                if let configurations {
                    out.raw(configurations.bytes(of: configuration))
                } else {
                    out.value(configuration)
                }
            } else {
                out.null()
            }
            out.key("input")
            Self.write(input, into: &out)
            out.key("output")
            Self.write(output, into: &out)
            out.field("error", error)
            out.key("metadata")
            out.value(.object(metadata))
            out.key("steps")
            out.array { list in
                for step in steps {
                    list.object { out in
                        out.field("step_run", step.stepRun)
                        out.field("step", step.step)
                        out.field("version", step.version)
                        if let spanID = step.spanID { out.field("span_id", spanID) }
                        out.field("status", step.status.rawValue)
                        out.field("attempts", step.attempts)
                        Self.timings(step.startedMicros, step.endedMicros, step.durationMicros, into: &out)
                        out.key("inputs")
                        out.array { list in for input in step.inputs { Self.write(input, into: &list) } }
                        out.key("output")
                        Self.write(step.output, into: &out)
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
                        out.key("at")
                        out.rfc3339(micros: log.micros)
                        out.field("step_run", log.stepRun)
                        out.field("level", log.level)
                        out.field("message", log.message)
                    }
                }
            }
            out.key("lineage")
            out.object { out in
                out.field("partition", Int(position.partition))
                out.field("first_offset", position.firstOffset)
                out.key("terminal_offset")
                Self.optional(position.terminalOffset, into: &out)
                out.field("terminal_rank", position.terminalRank)
                out.field("events", position.events)
            }
        }
        return out.bytes
    }

    private static func write(_ artifact: Artifact?, into out: inout JSONWriter) {
        guard let artifact else { return out.null() }
        out.object { out in
            out.field("id", artifact.id)
            out.field("type", artifact.type)
            out.field("sha256", artifact.sha256)
            out.field("size", artifact.size)
            if let value = artifact.value {
                out.key("value")
                out.raw(value)
            }
            if let file = artifact.file { out.field("file", file) }
            if let producedBy = artifact.producedBy { out.field("produced_by", producedBy) }
            if let error = artifact.error { out.field("error", error) }
        }
    }

    private static func optional(_ value: Int64?, into out: inout JSONWriter) {
        if let value { out.int(value) } else { out.null() }
    }

    /// The times in microseconds since 1970, each followed by the same time in RFC 3339 (UTC, six fractional digits),
    /// which query engines read as a timestamp; then the duration.
    private static func timings(_ started: Int64?, _ ended: Int64?, _ duration: Int64?, into out: inout JSONWriter) {
        out.key("started_us")
        optional(started, into: &out)
        out.key("started_at")
        if let started { out.rfc3339(micros: started) } else { out.null() }
        out.key("ended_us")
        optional(ended, into: &out)
        out.key("ended_at")
        if let ended { out.rfc3339(micros: ended) } else { out.null() }
        out.key("duration_us")
        optional(duration, into: &out)
    }

}

// MARK: - Reading

extension StoredRun {
    /// How much of a line to read.
    public enum Reading: Sendable {
        /// Every member.
        case everything
        /// The run, its steps and their artifacts without values: no configuration, metadata or logs. What the
        /// index keeps; as fast as its former reader of named members (docs/benchmarks.md, "The store's index").
        case structure
    }

    /// Reads a line of the store. Members are parsed as they are read; an artifact's value is kept as it is written.
    /// - Throws: ``StoreError`` naming the member that is missing or malformed.
    public init(line: [UInt8], reading: Reading = .everything) throws {
        do {
            self = try RawJSONObject.withObject(line) { fields in
                try Self(Members(fields, in: "the run", values: reading == .everything), reading: reading)
            }
        } catch let error as JSONParseError {
            throw StoreError(message: "a run's line is not a valid JSON object: \(error)")
        }
    }

    private init(_ run: Members, reading: Reading) throws {
        let everything = reading == .everything
        runID = try run.string("run_id")
        attempt = try run.int("attempt")
        pipeline = try run.string("pipeline")
        status = try run.status("status", RunStatus.self)
        capture = try run.string("capture")
        requestID = try run.optionalString("request_id")
        worker = try run.optionalString("worker")
        trace = try run.optionalString("trace")
        if let traceID = try run.optionalString("trace_id"), let spanID = try run.optionalString("span_id") {
            span = SpanIDs(traceID: traceID, spanID: spanID)
        }
        startedMicros = try run.optionalInt64("started_us")
        endedMicros = try run.optionalInt64("ended_us")
        durationMicros = try run.optionalInt64("duration_us")
        configuration = everything ? try run.optionalValue("configuration") : nil
        input = try run.artifact("input")
        output = try run.artifact("output")
        error = try run.error("error")
        metadata = everything ? try run.object("metadata") : [:]
        steps = try run.objects("steps") { step in
            Step(
                stepRun: try step.string("step_run"), step: try step.string("step"), version: try step.int("version"),
                status: try step.status("status", StepRunStatus.self), attempts: try step.int("attempts"),
                startedMicros: try step.optionalInt64("started_us"), endedMicros: try step.optionalInt64("ended_us"),
                durationMicros: try step.optionalInt64("duration_us"),
                inputs: try step.objects("inputs") { try $0.artifact() }, output: try step.artifact("output"),
                cachedFrom: try step.optionalObject("cached_from") {
                    CachedStepRun(runID: try $0.string("run_id"), stepRun: try $0.string("step_run"))
                },
                error: try step.error("error"), metadata: everything ? try step.object("metadata") : [:],
                spanID: try step.optionalString("span_id"))
        }
        logs =
            try !everything
            ? []
            : run.objects("logs") { log in
                Log(
                    micros: try log.int64("ts"), stepRun: try log.optionalString("step_run"),
                    level: try log.string("level"),
                    message: try log.string("message"))
            }
        let lineage = try run.optionalObject("lineage") { lineage in
            Position(
                partition: Int32(clamping: try lineage.int64("partition")),
                firstOffset: try lineage.int64("first_offset"),
                terminalOffset: try lineage.optionalInt64("terminal_offset"),
                terminalRank: try lineage.int("terminal_rank"),
                events: try lineage.int("events"))
        }
        guard let lineage else { throw StoreError(message: "a run's line has no lineage member") }
        position = lineage
    }
}

/// The members of one object of a line, read with errors that name the member. Valid only inside the closure that
/// hands it out (it reads the line's bytes in place).
private struct Members {
    let fields: RawJSONObject
    /// What the object is, for errors: "the run", "a step", ...
    let place: String
    /// Whether artifacts are read with their values.
    let values: Bool

    init(_ fields: RawJSONObject, in place: String, values: Bool) {
        self.fields = fields
        self.place = place
        self.values = values
    }

    private func malformed(_ name: StaticString) -> StoreError {
        StoreError(message: "\(place) in a run's line has no valid \(name)")
    }

    /// The member's value; `nil` when absent or `null`.
    func optionalValue(_ name: StaticString) throws -> JSONValue? {
        switch try fields.value(name) {
        case nil, .null?: return nil
        case let value?: return value
        }
    }

    func optionalString(_ name: StaticString) throws -> String? {
        do {
            return try fields.optionalString(name)
        } catch {
            throw malformed(name)
        }
    }

    func string(_ name: StaticString) throws -> String {
        guard let text = try optionalString(name) else { throw malformed(name) }
        return text
    }

    func optionalInt64(_ name: StaticString) throws -> Int64? {
        do {
            return try fields.optionalInt64(name)
        } catch {
            throw malformed(name)
        }
    }

    func int64(_ name: StaticString) throws -> Int64 {
        guard let number = try optionalInt64(name) else { throw malformed(name) }
        return number
    }

    func int(_ name: StaticString) throws -> Int { Int(try int64(name)) }

    func status<Status: RawRepresentable<String>>(_ name: StaticString, _ type: Status.Type) throws -> Status {
        guard let status = Status(rawValue: try string(name)) else { throw malformed(name) }
        return status
    }

    func object(_ name: StaticString) throws -> [String: JSONValue] {
        switch try optionalValue(name) {
        case nil: return [:]
        case .object(let members)?: return members
        default: throw malformed(name)
        }
    }

    /// The member, an object, read by `body`; `nil` when absent or `null`.
    func optionalObject<T>(_ name: StaticString, _ body: (Members) throws -> T) throws -> T? {
        do {
            return try fields.withObject(name) { try body(Members($0, in: "\(name)", values: values)) }
        } catch is JSONParseError {
            throw malformed(name)
        }
    }

    /// The member, an array of objects, each read by `body`; empty when absent or `null`.
    func objects<T>(_ name: StaticString, _ body: (Members) throws -> T) throws -> [T] {
        do {
            return try fields.withObjects(name) { try body(Members($0, in: "an element of \(name)", values: values)) }
                ?? []
        } catch is JSONParseError {
            throw malformed(name)
        }
    }

    func error(_ name: StaticString) throws -> ErrorDetail? {
        try optionalObject(name) { error in
            ErrorDetail(
                code: try error.string("code"), message: try error.string("message"),
                step: try error.optionalString("step"))
        }
    }

    func artifact(_ name: StaticString) throws -> StoredRun.Artifact? {
        try optionalObject(name) { try $0.artifact() }
    }

    /// This object as an artifact.
    func artifact() throws -> StoredRun.Artifact {
        StoredRun.Artifact(
            id: try string("id"), type: try string("type"), sha256: try optionalString("sha256"), size: try int("size"),
            value: values ? fields.rawValue("value") : nil, file: try optionalString("file"),
            producedBy: try optionalString("produced_by"), error: try optionalString("error"))
    }
}
