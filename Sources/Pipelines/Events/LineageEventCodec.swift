// The JSON form of lineage records (docs/lineage-events.md): written with `JSONWriter` in a fixed key order, read
// with the JSON parser. Foundation's coders are not used: they cost microseconds per event.

import Crypto

/// A lineage event that cannot be read, naming the field.
public struct LineageEventDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public let message: String
    public var description: String { "lineage event: \(message)" }
}

// MARK: - Writing

/// The lineage wire format (docs/lineage-events.md). Version 2, written by this code: one record carries events of
/// one run, in `seq` order, with the members common to the run written once. Version 1 (one event per record, every
/// member in every event), written by earlier workers, is still read.
public enum LineageRecord {
    /// The record version this code writes.
    public static var version: Int { 2 }

    /// One record holding `events`.
    /// - Precondition: `events` is not empty, and its events belong to one run (run id, pipeline, request id,
    ///   capture and attempt are the first event's).
    public static func encode(_ events: [LineageEvent]) -> [UInt8] {
        encodeRecord(events, at: Array(events.indices)[...])
    }

    /// One record holding `events`, their artifacts resolved as they are written, in order: what a tracker publishes
    /// (same precondition).
    public static func encode(_ events: [PendingEvent]) -> [UInt8] {
        encodeRecord(events, at: Array(events.indices)[...])
    }

    /// One record holding the events of `events` at `positions`, in that order, their artifacts resolved as they are
    /// written: what a tracker publishes from the events it took together (same precondition for those events).
    public static func encode(_ events: [PendingEvent], at positions: ArraySlice<Int>) -> [UInt8] {
        encodeRecord(events, at: positions)
    }

    // Specialised for both kinds of events inside this module (a public generic would run unspecialised: no public
    // entry point is generic). Events are read in place: copying one retains each of its members.
    private static func encodeRecord<Artifact: RecordableArtifact>(
        _ events: [TrackingEvent<Artifact>], at positions: ArraySlice<Int>
    ) -> [UInt8] {
        guard let first = positions.first else { preconditionFailure("a lineage record holds at least one event") }
        var writer = JSONWriter(capacity: 512 * positions.count)
        let scratch = CanonicalScratch()
        writer.object { out in
            out.field("v", version)
            out.field("run_id", events[first].runID)
            out.field("pipeline", events[first].pipeline)
            out.field("request_id", events[first].requestID)
            out.field("capture", events[first].capture)
            out.field("attempt", events[first].attempt)
            out.key("events")
            out.array { list in
                for position in positions {
                    assert(
                        events[position].runID == events[first].runID
                            && events[position].attempt == events[first].attempt, "one run per record")
                    list.object { member in
                        member.field("seq", events[position].seq)
                        member.field("type", events[position].type.rawValue)
                        member.field("ts", events[position].timestamp)
                        events[position].body.write(to: &member, scratch: scratch)
                    }
                }
            }
        }
        return writer.bytes
    }

    /// The canonical JSON of the runs' configurations, kept for the next run of the same pipeline.
    fileprivate static let configurationWritten = RepeatedJSON()

    /// The events of one record: those of a version 2 record, in order, or the one event of a version 1 record.
    /// Unknown members are ignored, so a newer writer's additions do not break an older reader. `configurations`, when
    /// given, keeps the configuration read last (one per reading thread: the runs of a pipeline share one).
    /// - Throws: ``LineageEventDecodingError`` naming the missing or malformed field, or ``JSONParseError``.
    public static func decode(
        _ json: some Collection<UInt8>, configurations: RepeatedJSON? = nil
    ) throws -> [LineageEvent] {
        // The members are located first and parsed one by one as they are read: no dictionary per object, and an
        // inline value is kept as the bytes it was written with (Sluice writes canonical JSON).
        try RawJSONObject.withObject(json) { object in
            let record = Fields(object, "record", configurations: configurations)
            switch try record.int("v") {
            case 2:
                let run = try RunMembers(record)
                guard
                    let events = try object.withObjects(
                        "events",
                        { try LineageEvent(run: run, fields: Fields($0, "event", configurations: configurations)) })
                else { throw record.fail("events", "an array of events") }
                guard !events.isEmpty else { throw record.fail("events", "a non-empty array") }
                return events
            case 1:
                let event = try LineageEvent(run: try RunMembers(record), fields: record)
                let eventID = try record.string("event_id")
                guard eventID == event.eventID else {
                    throw LineageEventDecodingError(message: "event_id '\(eventID)' is not '\(event.eventID)'")
                }
                return [event]
            case let version:
                throw LineageEventDecodingError(message: "record version \(version) is neither 1 nor 2")
            }
        }
    }
}

/// What a lineage record writes for an artifact: an ``ArtifactRef`` as it is, a ``PendingArtifact`` resolved as it
/// is written (so that a tracker writes a run's record straight from the events the runner emitted).
protocol RecordableArtifact: Sendable {
    /// Writes the artifact's reference; `scratch` is a buffer to reuse for serialising.
    func write(to out: inout JSONWriter, scratch: CanonicalScratch)
}

extension ArtifactRef: RecordableArtifact {
    func write(to out: inout JSONWriter, scratch: CanonicalScratch) {
        out.artifact(self)
    }
}

extension PendingArtifact: RecordableArtifact {
    /// Resolves the artifact (``resolve()``) and writes it as ``JSONWriter/artifact(_:)`` writes the reference, from
    /// the digest and the scratch's bytes: records of one run are written in `seq` order.
    func write(to out: inout JSONWriter, scratch: CanonicalScratch) {
        let found = resolve(in: scratch)
        func sha256(_ out: inout JSONWriter) {
            guard let digest = found.digest else { return out.null() }
            digest.withUnsafeBytes { out.hex($0) }
        }
        out.artifact(
            id: id, type: found.type, sha256: sha256, size: found.size, inlined: found.inlined,
            value: { out in scratch.withBytes { out.raw($0) } }, producedBy: found.producedBy, error: found.error)
    }
}

extension Optional where Wrapped: RecordableArtifact {
    fileprivate func write(to out: inout JSONWriter, scratch: CanonicalScratch) {
        if let artifact = self { artifact.write(to: &out, scratch: scratch) } else { out.null() }
    }
}

extension LineageEventBody where Artifact: RecordableArtifact {
    /// Writes the members of this type of event (docs/lineage-events.md, "Members by type").
    fileprivate func write(to out: inout JSONWriter, scratch: CanonicalScratch) {
        switch self {
        case .runStarted(let configuration, let input, let traceparent, let traceparentError, let span, let worker):
            out.key("configuration")
            out.raw(LineageRecord.configurationWritten.bytes(of: configuration))
            out.key("input")
            input.write(to: &out, scratch: scratch)
            out.field("traceparent", traceparent)
            if let traceparentError { out.field("traceparent_error", traceparentError) }
            if let span {
                out.key("trace")
                out.object { trace in
                    trace.field("trace_id", span.traceID)
                    trace.field("span_id", span.spanID)
                }
            }
            out.field("worker", worker)
        case .stepStarted(let step, let attempt, let inputs):
            out.stepRun(step)
            out.field("step_attempt", attempt)
            out.key("inputs")
            out.array { list in for input in inputs { input.write(to: &list, scratch: scratch) } }
        case .stepCompleted(let step, let attempt, let duration, let output):
            out.stepRun(step)
            out.field("step_attempt", attempt)
            out.field("duration_us", duration)
            out.key("output")
            output.write(to: &out, scratch: scratch)
        case .stepCached(let step, let inputs, let output, let cachedFrom):
            out.stepRun(step)
            out.key("inputs")
            out.array { list in for input in inputs { input.write(to: &list, scratch: scratch) } }
            out.key("output")
            output.write(to: &out, scratch: scratch)
            out.key("cached_from")
            out.object { source in
                source.field("run_id", cachedFrom.runID)
                source.field("step_run", cachedFrom.stepRun)
            }
        case .stepFailed(let step, let attempt, let duration, let error, let retrying):
            out.stepRun(step)
            out.field("step_attempt", attempt)
            out.field("duration_us", duration)
            out.field("error", error)
            out.field("retrying", retrying)
        case .log(let stepRun, let level, let message):
            out.field("step_run", stepRun)
            out.field("level", level.rawValue)
            out.field("message", message)
        case .metadata(let stepRun, let values):
            out.field("step_run", stepRun)
            out.key("values")
            out.value(.object(values))
        case .runCompleted(let duration, let output):
            out.field("status", "completed")
            out.field("duration_us", duration)
            out.key("output")
            output.write(to: &out, scratch: scratch)
        case .runFailed(let duration, let error):
            out.field("status", "failed")
            out.field("duration_us", duration)
            out.field("error", error)
        }
    }
}

extension JSONWriter {
    fileprivate mutating func stepRun(_ step: StepRunID) {
        field("step", step.step)
        field("step_run", step.id)
        field("version", step.version)
        if let spanID = step.spanID { field("span_id", spanID) }
    }

    /// An artifact reference; optional members are left out when absent.
    mutating func artifact(_ ref: ArtifactRef) {
        artifact(
            id: ref.id, type: ref.type,
            sha256: { out in if let sha256 = ref.sha256 { out.string(sha256) } else { out.null() } }, size: ref.size,
            inlined: ref.inlineJSON != nil, value: { out in out.raw(ref.inlineJSON ?? []) }, producedBy: ref.producedBy,
            error: ref.error)
    }

    /// The members of an artifact reference, in their order; `sha256` and `value` write their values, `value` only
    /// when the artifact is `inlined`. (The closures are not optional: an optional closure escapes, and its context is
    /// allocated at every call.)
    mutating func artifact(
        id: String, type: String, sha256: (inout JSONWriter) -> Void, size: Int, inlined: Bool,
        value: (inout JSONWriter) -> Void, producedBy: String?, error: String?
    ) {
        object { out in
            out.field("id", id)
            out.field("type", type)
            out.key("sha256")
            sha256(&out)
            out.field("size", size)
            if inlined {
                out.key("value")
                value(&out)
            }
            if let producedBy { out.field("produced_by", producedBy) }
            if let error { out.field("error", error) }
        }
    }
}

// MARK: - Reading

/// The members every event of a run shares: once per version 2 record, in every version 1 event.
private struct RunMembers {
    let runID: String
    let pipeline: String
    let requestID: String?
    let capture: String
    let attempt: Int

    init(_ fields: Fields) throws {
        runID = try fields.string("run_id")
        pipeline = try fields.string("pipeline")
        requestID = try fields.optionalString("request_id")
        capture = try fields.string("capture")
        attempt = try fields.int("attempt")
    }
}

extension TrackingEvent where Artifact == ArtifactRef {
    /// The event whose own members are `fields`, of the run `run`.
    fileprivate init(run: RunMembers, fields: Fields) throws {
        // Members looked up in the order they are written (`seq`, `type`, `ts`, then the body's): each lookup then
        // finds its member at the first name it compares. A bad `seq` or `ts` is reported after the type and the
        // body, which say more.
        let seq = Result { try fields.int("seq") }
        let typeName = try fields.string("type")
        let timestamp = Result { try fields.int64("ts") }
        guard let type = LineageEventType(named: typeName) else {
            throw LineageEventDecodingError(message: "unknown type '\(typeName)'")
        }
        let body: LineageEventBody<ArtifactRef>
        switch type {
        case .runStarted:
            body = .runStarted(
                configuration: try fields.configuration(), input: try fields.optionalArtifact("input"),
                traceparent: try fields.optionalString("traceparent"),
                traceparentError: try fields.optionalString("traceparent_error"),
                span: try fields.optionalObject("trace") { trace in
                    SpanIDs(traceID: try trace.string("trace_id"), spanID: try trace.string("span_id"))
                }, worker: try fields.optionalString("worker"))
        case .stepStarted:
            body = .stepStarted(
                step: try fields.stepRun(), attempt: try fields.int("step_attempt"),
                inputs: try fields.artifacts("inputs"))
        case .stepCompleted:
            body = .stepCompleted(
                step: try fields.stepRun(), attempt: try fields.int("step_attempt"),
                durationMicros: try fields.int64("duration_us"), output: try fields.optionalArtifact("output"))
        case .stepCached:
            let source = try fields.object("cached_from") { source in
                CachedStepRun(runID: try source.string("run_id"), stepRun: try source.string("step_run"))
            }
            body = .stepCached(
                step: try fields.stepRun(), inputs: try fields.artifacts("inputs"),
                output: try fields.optionalArtifact("output"), cachedFrom: source)
        case .stepFailed:
            body = .stepFailed(
                step: try fields.stepRun(), attempt: try fields.int("step_attempt"),
                durationMicros: try fields.int64("duration_us"), error: try fields.errorDetail(),
                retrying: try fields.bool("retrying"))
        case .log:
            let levelName = try fields.string("level")
            guard let level = LogLevel(rawValue: levelName) else {
                throw LineageEventDecodingError(message: "unknown log level '\(levelName)'")
            }
            body = .log(
                stepRun: try fields.optionalString("step_run"), level: level, message: try fields.string("message"))
        case .metadata:
            guard case .object(let values) = try fields.member("values") else {
                throw LineageEventDecodingError(message: "metadata 'values' is not an object")
            }
            body = .metadata(stepRun: try fields.optionalString("step_run"), values: values)
        case .runCompleted:
            body = .runCompleted(
                durationMicros: try fields.int64("duration_us"), output: try fields.optionalArtifact("output"))
        case .runFailed:
            body = .runFailed(durationMicros: try fields.int64("duration_us"), error: try fields.errorDetail())
        }
        self.init(
            seq: try seq.get(), timestamp: try timestamp.get(), runID: run.runID, pipeline: run.pipeline,
            requestID: run.requestID, capture: run.capture, attempt: run.attempt, body: body, type: type)
    }
}

/// The members of a JSON object, read with errors that name the member. Valid only while its object is.
private struct Fields {
    let object: RawJSONObject
    let context: StaticString
    /// Where the configuration read last is kept, if anywhere.
    let configurations: RepeatedJSON?

    init(_ object: RawJSONObject, _ context: StaticString, configurations: RepeatedJSON? = nil) {
        self.object = object
        self.context = context
        self.configurations = configurations
    }

    func fail(_ name: StaticString, _ expected: String) -> LineageEventDecodingError {
        LineageEventDecodingError(message: "\(context) field '\(name)' is missing or not \(expected)")
    }

    func member(_ name: StaticString) throws -> JSONValue {
        guard let value = try object.value(name) else { throw fail(name, "present") }
        return value
    }

    /// The run's configuration, not parsed again when it is written as the one read before it.
    func configuration() throws -> JSONValue {
        guard let configurations else { return try member("configuration") }
        guard let value = object.value("configuration", as: configurations) else {
            throw fail("configuration", "present")
        }
        return value
    }

    func string(_ name: StaticString) throws -> String {
        guard let text = try? object.optionalString(name) else { throw fail(name, "a string") }
        return text
    }

    func optionalString(_ name: StaticString) throws -> String? {
        do {
            return try object.optionalString(name)
        } catch {
            throw fail(name, "a string or null")
        }
    }

    func int64(_ name: StaticString) throws -> Int64 {
        guard let number = try? object.optionalInt64(name) else { throw fail(name, "an integer") }
        return number
    }

    func int(_ name: StaticString) throws -> Int {
        guard let number = Int(exactly: try int64(name)) else { throw fail(name, "an integer") }
        return number
    }

    func bool(_ name: StaticString) throws -> Bool {
        guard case .bool(let flag)? = try object.value(name) else { throw fail(name, "true or false") }
        return flag
    }

    /// The member, an object, read by `body`.
    func object<T>(_ name: StaticString, _ body: (Fields) throws -> T) throws -> T {
        guard let value = try optionalObject(name, body) else { throw fail(name, "an object") }
        return value
    }

    /// The member, an object read by `body`, or `nil` when it is absent or null.
    func optionalObject<T>(_ name: StaticString, _ body: (Fields) throws -> T) throws -> T? {
        do {
            return try object.withObject(name) { try body(Fields($0, name)) }
        } catch is JSONParseError {
            throw fail(name, "an object")
        }
    }

    func stepRun() throws -> StepRunID {
        StepRunID(
            step: try string("step"), id: try string("step_run"), version: try int("version"),
            spanID: try optionalString("span_id"))
    }

    func errorDetail() throws -> ErrorDetail {
        try object("error") { error in
            ErrorDetail(
                code: try error.string("code"), message: try error.string("message"),
                step: try error.optionalString("step"))
        }
    }

    func optionalArtifact(_ name: StaticString) throws -> ArtifactRef? {
        try optionalObject(name) { try $0.artifact() }
    }

    func artifacts(_ name: StaticString) throws -> [ArtifactRef] {
        do {
            guard let artifacts = try object.withObjects(name, { try Fields($0, name).artifact() })
            else { throw fail(name, "an array") }
            return artifacts
        } catch is JSONParseError {
            throw fail(name, "an array of objects")
        }
    }

    /// These fields as an artifact reference.
    func artifact() throws -> ArtifactRef {
        ArtifactRef(
            id: try string("id"), type: try string("type"), sha256: try optionalString("sha256"), size: try int("size"),
            inlineJSON: object.rawValue("value"), producedBy: try optionalString("produced_by"),
            error: try optionalString("error"))
    }
}
