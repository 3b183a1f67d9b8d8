import Kafka
import Pipelines
import W3CTraceContext

/// Wire protocol v1 (docs/protocol.md): topic names, header names, error codes.
public enum WireProtocol {
    /// Header names of requests and responses.
    public enum Header {
        public static let requestID = "sluice-request-id"
        public static let replyTo = "sluice-reply-to"
        /// The partition of the reply topic to answer on, a decimal number: a client reads only its own.
        public static let replyPartition = "sluice-reply-partition"
        public static let deadline = "sluice-deadline"
        public static let traceparent = "traceparent"
        public static let status = "sluice-status"
        public static let errorCode = "sluice-error-code"
        public static let errorMessage = "sluice-error-message"
        public static let originalTopic = "sluice-original-topic"
        public static let originalPartition = "sluice-original-partition"
        public static let originalOffset = "sluice-original-offset"
        /// On a dead-letter copy whose value is a prefix of the request's: `true`.
        public static let truncated = "sluice-truncated"
        /// On a truncated dead-letter copy: the request value's size in bytes.
        public static let originalSize = "sluice-original-size"
        /// On a dead-letter copy too small for the request's headers: how many were left out.
        public static let originalHeadersDropped = "sluice-original-headers-dropped"
    }

    /// The error codes a response can carry (a pipeline's ``CodedError`` may add its own).
    public enum ErrorCode {
        /// The value is not JSON, or not the pipeline's input type, or a header is malformed.
        public static let invalidInput = "invalid_input"
        /// The value is larger than the worker accepts.
        public static let payloadTooLarge = "payload_too_large"
        /// The request's deadline passed before it ran: it was not run.
        public static let deadlineExceeded = "deadline_exceeded"
        /// A step threw.
        public static let stepFailed = "step_failed"
        /// The worker failed (an output that cannot be written, lineage a BATCH run waits for not durable).
        public static let `internal` = "internal"
        /// The reply-to header names a topic the worker may not write to.
        public static let replyToNotAllowed = "reply_to_not_allowed"
    }

    /// The default topics of a pipeline.
    public static func requestsTopic(_ pipeline: String) -> String { "\(pipeline).requests" }
    public static func responsesTopic(_ pipeline: String) -> String { "\(pipeline).responses" }
    public static func deadLetterTopic(_ pipeline: String) -> String { "\(pipeline).dlq" }
    public static let lineageTopic = "sluice.lineage"
    /// Where `sluice gateway`s read their responses by default, each its own partitions: every worker answers there.
    public static let gatewayRepliesTopic = "sluice.gateway.replies"

    /// The run of a request message: the same for a redelivery of the same message, different for a new message.
    /// 32 hexadecimal digits of SHA-256 over the topic, partition and offset.
    public static func runID(topic: String, partition: Int32, offset: Int64) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(48 + topic.utf8.count)
        bytes.append(contentsOf: "sluice-run-v1\u{0}".utf8)
        bytes.append(contentsOf: topic.utf8)
        bytes.append(0)
        bytes.append(contentsOf: String(partition).utf8)
        bytes.append(0)
        bytes.append(contentsOf: String(offset).utf8)
        return ContentHash.sha256(bytes, digits: 32)
    }
}

/// A request as the worker reads it from a message: everything but the pipeline input's decoding.
public struct Request: Sendable {
    public let message: KafkaMessage
    /// The client's `sluice-request-id`, or `<topic>/<partition>/<offset>`.
    public let requestID: String
    /// The `sluice-reply-to` header, if given (not yet checked against the allowed topics).
    public let replyTo: String?
    /// The `sluice-reply-partition` header, if given: the partition of the reply topic to answer on.
    public let replyPartition: Int32?
    /// `sluice-deadline` in epoch milliseconds, if given.
    public let deadlineMilliseconds: Int64?
    /// The `traceparent` header, if given, as it came.
    public let traceparent: String?
    /// Why `traceparent` is ignored, when it is not W3C trace context (the request runs all the same).
    public let traceparentError: String?
    /// Why a header cannot be used, if one cannot: the request then gets an `invalid_input` response.
    public let headerError: String?

    public init(_ message: KafkaMessage) {
        self.message = message
        let headers = message.headers
        var problems: [String] = []
        func text(_ name: String) -> String? {
            guard let bytes = headers.value(named: name) else { return nil }
            guard let text = String(validating: bytes, as: UTF8.self) else {
                problems.append("header \(name) is not UTF-8")
                return nil
            }
            return text
        }
        self.requestID =
            text(WireProtocol.Header.requestID).flatMap { $0.isEmpty ? nil : $0 }
            ?? "\(message.topic)/\(message.partition)/\(message.offset)"
        replyTo = text(WireProtocol.Header.replyTo).flatMap { $0.isEmpty ? nil : $0 }
        if let bytes = headers.value(named: WireProtocol.Header.replyPartition) {
            replyPartition = Self.partition(bytes)
            if replyPartition == nil {
                problems.append(
                    "header \(WireProtocol.Header.replyPartition) '\(String(decoding: bytes, as: UTF8.self))' is not a "
                        + "partition number (decimal digits, or 4 bytes big-endian)")
            }
        } else {
            replyPartition = nil
        }
        if let deadline = text(WireProtocol.Header.deadline) {
            if let milliseconds = Int64(deadline.trimmingWhitespace), milliseconds >= 0 {
                deadlineMilliseconds = milliseconds
            } else {
                deadlineMilliseconds = nil
                problems.append("header \(WireProtocol.Header.deadline) '\(deadline)' is not epoch milliseconds")
            }
        } else {
            deadlineMilliseconds = nil
        }
        traceparent = text(WireProtocol.Header.traceparent)
        traceparentError = traceparent.flatMap(Self.traceparentError)
        headerError = problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    /// A reply partition as decimal digits (`"3"`, what Sluice's clients send), or as a 4-byte big-endian integer
    /// (what Spring's `ReplyingKafkaTemplate` writes for `KafkaHeaders.REPLY_PARTITION`); `nil` for anything else or a
    /// negative number.
    static func partition(_ bytes: [UInt8]) -> Int32? {
        let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace
        if !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) { return Int32(text) }
        guard bytes.count == 4 else { return nil }
        let number = bytes.reduce(Int32(0)) { $0 << 8 | Int32($1) }
        return number >= 0 ? number : nil
    }

    /// Why `traceparent` is not W3C trace context, or `nil` when it is.
    private static func traceparentError(_ traceparent: String) -> String? {
        do {
            _ = try TraceContext(traceParentHeaderValue: traceparent)
            return nil
        } catch {
            return "ignored: not W3C trace context (00-<32 hex digits>-<16 hex digits>-<2 hex digits>, ids not all 0)"
        }
    }

    /// The request message's run id (``WireProtocol/runID(topic:partition:offset:)``).
    public var runID: String {
        WireProtocol.runID(topic: message.topic, partition: message.partition, offset: message.offset)
    }
}

extension String {
    fileprivate var trimmingWhitespace: Substring {
        let start = firstIndex { !$0.isWhitespace } ?? endIndex
        let end = lastIndex { !$0.isWhitespace }.map(index(after:)) ?? start
        return self[start..<end]
    }
}

/// The response to one request (docs/protocol.md, "Response").
public struct Response: Sendable {
    public var requestID: String
    public var pipeline: String
    /// The output's JSON on success.
    public var output: [UInt8]?
    public var error: ErrorDetail?
    public var runID: String?
    /// The capture mode's label (`BATCH`, `REALTIME`, `OFF`, `CUSTOM`, `MEMORY`).
    public var capture: String
    public var durationMicros: Int64
    /// The `traceparent` header of the response message: the request's span when the worker traces, else the
    /// request's own header (when it is W3C trace context).
    public var traceparent: String?

    public init(
        requestID: String, pipeline: String, output: [UInt8]?, error: ErrorDetail?, runID: String?, capture: String,
        durationMicros: Int64, traceparent: String? = nil
    ) {
        self.requestID = requestID
        self.pipeline = pipeline
        self.output = output
        self.error = error
        self.runID = runID
        self.capture = capture
        self.durationMicros = durationMicros
        self.traceparent = traceparent
    }

    /// Turns the response into an error response (no output), keeping its request, run and timing.
    public mutating func replaceWithError(code: String, message: String) {
        output = nil
        error = ErrorDetail(code: code, message: message)
    }

    /// `ok` or `error`.
    public var status: String { error == nil ? "ok" : "error" }

    /// The response's JSON value.
    public func json() -> [UInt8] {
        Self.json(
            requestID: requestID, pipeline: pipeline, output: output, error: error, runID: runID, capture: capture,
            durationMicros: durationMicros)
    }

    /// The response object of docs/protocol.md: the one writer of it, for responses, for the results `sluice run`
    /// prints (whose runs have no request: `request_id` is then `null`) and for the errors `sluice gateway` answers
    /// itself (no worker ran the request: `capture` is then `null`).
    public static func json(
        requestID: String?, pipeline: String?, output: [UInt8]?, error: ErrorDetail?, runID: String?, capture: String?,
        durationMicros: Int64
    ) -> [UInt8] {
        var writer = JSONWriter(capacity: 256 + (output?.count ?? 0))
        writer.object { out in
            out.field("request_id", requestID)
            out.field("pipeline", pipeline)
            out.field("status", error == nil ? "ok" : "error")
            out.key("output")
            if let output { out.raw(output) } else { out.null() }
            out.field("error", error)
            out.field("run_id", runID)
            out.field("capture", capture)
            out.key("duration_ms")
            out.milliseconds(micros: durationMicros)
        }
        return writer.bytes
    }

    /// The response as a message to `topic` (to `partition`, if given, else where its key puts it), keyed like its
    /// request.
    public func message(topic: String, partition: Int32? = nil, key: [UInt8]?) -> OutgoingMessage {
        var headers = [
            KafkaHeader(WireProtocol.Header.requestID, requestID),
            KafkaHeader(WireProtocol.Header.status, error == nil ? Self.okBytes : Self.errorBytes),
        ]
        if let traceparent { headers.append(KafkaHeader(WireProtocol.Header.traceparent, traceparent)) }
        return OutgoingMessage(topic: topic, partition: partition, key: key, value: json(), headers: headers)
    }

    /// The `sluice-status` header's two values, made once.
    private static let okBytes = Array("ok".utf8)
    private static let errorBytes = Array("error".utf8)

    /// Reads a response's JSON value.
    /// - Throws: an error naming the member that is missing or malformed.
    public init(json: [UInt8]) throws {
        let object = try JSONValue(parsing: json)
        func string(_ name: String) throws -> String {
            guard case .string(let text)? = object[name] else { throw ResponseDecodingError(member: name) }
            return text
        }
        func optionalString(_ name: String) throws -> String? {
            switch object[name] {
            case nil, .null?: return nil
            case .string(let text)?: return text
            default: throw ResponseDecodingError(member: name)
            }
        }
        requestID = try string("request_id")
        pipeline = try string("pipeline")
        capture = try string("capture")
        runID = try optionalString("run_id")
        switch object["output"] {
        case nil, .null?: output = nil
        case let value?: output = CanonicalJSON.bytes(of: value)
        }
        switch object["error"] {
        case nil, .null?:
            error = nil
        case .object(let members)?:
            guard case .string(let code)? = members["code"], case .string(let message)? = members["message"] else {
                throw ResponseDecodingError(member: "error")
            }
            error = ErrorDetail(code: code, message: message, step: members["step"]?.stringValue)
        default:
            throw ResponseDecodingError(member: "error")
        }
        switch object["duration_ms"] {
        case .double(let milliseconds)?: durationMicros = Int64(milliseconds * 1000)
        case .int(let milliseconds)?: durationMicros = milliseconds * 1000
        default: durationMicros = 0
        }
        guard try string("status") == status else { throw ResponseDecodingError(member: "status") }
    }
}

/// A response value that does not follow docs/protocol.md.
public struct ResponseDecodingError: Error, Sendable, CustomStringConvertible {
    public let member: String
    public var description: String { "response member '\(member)' is missing or malformed" }
}

/// The copy of a failed request sent to the dead-letter topic: the request's key, value and headers, with headers
/// saying why it failed and where it came from.
///
/// A copy never exceeds the byte budget it is given (the producer's `message.max.bytes`, or less after a broker
/// refused a larger copy): a value that does not fit is cut to a prefix, and then `sluice-truncated: true` and
/// `sluice-original-size` (the value's length in bytes) say so; when even the request's headers do not fit, they are
/// left out and `sluice-original-headers-dropped` says how many there were.
public enum DeadLetter {
    /// A budget every broker accepts, used after a broker refused a larger copy as too large.
    public static let refusedCopyBudget = 16 * 1024

    /// What librdkafka adds to a record's key, value and headers when it checks `message.max.bytes` (the record
    /// batch's header and a record's own overhead), with room to spare.
    static let recordOverhead = 512

    /// The copy of `request`, failed with `error`, for `topic`, at most `budget` bytes as librdkafka counts a record.
    public static func message(for request: Request, error: ErrorDetail, topic: String, budget: Int) -> OutgoingMessage
    {
        let original = request.message
        var headers = [
            KafkaHeader(WireProtocol.Header.errorCode, error.code),
            KafkaHeader(WireProtocol.Header.errorMessage, String(error.message.prefix(1024))),
            KafkaHeader(WireProtocol.Header.originalTopic, original.topic),
            KafkaHeader(WireProtocol.Header.originalPartition, String(original.partition)),
            KafkaHeader(WireProtocol.Header.originalOffset, String(original.offset)),
        ]
        // Room for the headers saying what was cut, whether or not they are needed.
        let cutNotes = 3 * (32 + 20)
        var room = budget - recordOverhead - cutNotes - size(of: headers) - (original.key?.count ?? 0)
        var copiedHeaders = original.headers
        if size(of: copiedHeaders) > room / 2 {
            headers.append(KafkaHeader(WireProtocol.Header.originalHeadersDropped, String(copiedHeaders.count)))
            copiedHeaders = []
        }
        room -= size(of: copiedHeaders)
        var value = original.value
        if let whole = value, whole.count > room {
            value = Array(whole.prefix(max(0, room)))
            headers.append(KafkaHeader(WireProtocol.Header.truncated, "true"))
            headers.append(KafkaHeader(WireProtocol.Header.originalSize, String(whole.count)))
        }
        return OutgoingMessage(topic: topic, key: original.key, value: value, headers: copiedHeaders + headers)
    }

    /// Bytes of `headers` as librdkafka counts them toward `message.max.bytes`, rounded up (name, value and the
    /// varints of their lengths).
    static func size(of headers: [KafkaHeader]) -> Int {
        headers.reduce(0) { $0 + $1.name.utf8.count + ($1.value?.count ?? 0) + 12 }
    }
}
