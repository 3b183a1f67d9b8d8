import Foundation
import HTTPTypes
import Hummingbird
import Kafka
import Logging
import Pipelines
import Serving

/// The HTTP face of `sluice gateway` (docs/gateway.md): `POST /v1/pipelines/{name}/invoke` turns its JSON body into a
/// request on the pipeline's requests topic, waits for the response on the gateway's reply partitions and answers it,
/// with an HTTP status that follows the outcome; `GET /openapi.json` describes it. Every refusal is the response
/// object of docs/protocol.md with an error (`capture` is then `null`: no worker ran the request).
final class Gateway: Sendable {
    /// How long calls wait and how large their bodies may be.
    struct Limits {
        /// How long a call waits for its response unless it asks otherwise (`Prefer: wait=N`); its request's
        /// `sluice-deadline` too.
        var timeout: Duration
        /// The longest wait a call may ask for.
        var maxTimeout: Duration
        var maxBodyBytes: Int
    }

    /// Why a call ends without a worker's response.
    struct Refusal: Error {
        var status: HTTPResponse.Status
        var code: String
        var message: String
        /// Seconds after which the call may be tried again (`Retry-After`), for 503.
        var retryAfter: Int?
        /// The methods the path allows (`Allow`), for 405.
        var allow: String?
    }

    /// The HTTP headers the gateway reads and writes besides the standard ones.
    enum Header {
        static let requestID = HTTPField.Name(WireProtocol.Header.requestID)!
        static let traceparent = HTTPField.Name(WireProtocol.Header.traceparent)!
        static let prefer = HTTPField.Name("Prefer")!
        static let preferenceApplied = HTTPField.Name("Preference-Applied")!
    }

    /// What the gateway answers a call: the status, the headers and the response object.
    struct Answer: Sendable {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        /// The JSON object, with a newline after it (for terminals).
        var body: ByteBuffer

        init(status: HTTPResponse.Status, headers: HTTPFields, json: [UInt8]) {
            self.status = status
            self.headers = headers
            var buffer = ByteBuffer()
            buffer.reserveCapacity(json.count + 1)
            buffer.writeBytes(json)
            buffer.writeInteger(UInt8(ascii: "\n"))
            body = buffer
        }

        /// The answer as Hummingbird's response, for the routes Hummingbird serves.
        var response: Response { Response(status: status, headers: headers, body: ResponseBody(byteBuffer: body)) }
    }

    /// A call of `POST /v1/pipelines/{name}/invoke` whose head the gateway took: its body is read next.
    struct Invocation: Sendable {
        let pipeline: String
        let requestID: String
        let preferences: Preferences
        let traceparent: String?
        let started: ContinuousClock.Instant
    }

    /// What the head of a call decides.
    enum Admission: Sendable {
        /// Read the body, then ``Gateway/invoke(_:body:answer:)``.
        case invoke(Invocation)
        /// Answer `answer` once the body has been read (and ignored).
        case refuse(Answer)
        /// Answer `answer` at once, and close the connection rather than read a body larger than the gateway takes.
        case refuseAndClose(Answer)
    }

    private let client: PipelineClient
    private let directory: PipelineDirectory
    private let limits: Limits
    private let metrics: GatewayMetrics
    private let openAPI: ByteBuffer
    private let logger: Logger

    init(
        client: PipelineClient, directory: PipelineDirectory, limits: Limits, servedPipelines: [GatewayOpenAPI.Served],
        metrics: GatewayMetrics, logger: Logger
    ) {
        self.client = client
        self.directory = directory
        self.limits = limits
        self.metrics = metrics
        self.logger = logger
        openAPI = ByteBuffer(
            string: GatewayOpenAPI.document(pipelines: servedPipelines, maxBodyBytes: limits.maxBodyBytes))
    }

    /// The largest body a call may have.
    var maxBodyBytes: Int { limits.maxBodyBytes }

    /// The routes Hummingbird serves (the invoke route is ``GatewayHTTPHandler``'s), with every error answered as a
    /// response object.
    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorBodyMiddleware())
        router.get("/openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: self.openAPI))
        }
        return router
    }

    /// Sets the gauges and counters that follow the client's state (see ``GatewayMetrics``).
    func refreshMetrics() { metrics.refresh(client) }

    /// The pipeline a request calls when it is `POST /v1/pipelines/{name}/invoke` (any query ignored).
    static func invokedPipeline(_ request: HTTPRequest) -> String? {
        guard request.method == .post, let path = request.path else { return nil }
        let prefix = "/v1/pipelines/".utf8
        let suffix = "/invoke".utf8
        var bytes = path.utf8[...]
        if let query = bytes.firstIndex(of: UInt8(ascii: "?")) { bytes = bytes[..<query] }
        guard bytes.count > prefix.count + suffix.count, bytes.starts(with: prefix),
            bytes.reversed().starts(with: suffix.reversed())
        else { return nil }
        let name = bytes.dropFirst(prefix.count).dropLast(suffix.count)
        guard !name.contains(UInt8(ascii: "/")) else { return nil }
        return String(Substring(name))
    }

    /// Checks a call's head: its request id, its content type and its declared length.
    func admit(_ head: HTTPRequest, pipeline name: String) -> Admission {
        let started = ContinuousClock.now
        var requestID: String?
        do {
            let id = try Self.requestID(head.headerFields[Header.requestID])
            requestID = id
            try Self.checkContentType(head.headerFields[.contentType])
            if let length = head.headerFields[.contentLength].flatMap({ Int($0) }), length > limits.maxBodyBytes {
                return .refuseAndClose(refuse(tooLarge, requestID: id, pipeline: name, since: started))
            }
            return .invoke(
                Invocation(
                    pipeline: name, requestID: id, preferences: Preferences(head.headerFields[values: Header.prefer]),
                    traceparent: head.headerFields[Header.traceparent], started: started))
        } catch let refusal as Refusal {
            return .refuse(refuse(refusal, requestID: requestID, pipeline: name, since: started))
        } catch {
            return .refuse(refuse(internalError(error), requestID: requestID, pipeline: name, since: started))
        }
    }

    /// The answer to a call whose body grew larger than the gateway takes.
    func refuseBodyTooLarge(_ invocation: Invocation) -> Answer {
        refuse(tooLarge, requestID: invocation.requestID, pipeline: invocation.pipeline, since: invocation.started)
    }

    /// Answers a call whose body has been read: sends the request and hands `answer` the worker's response (or the
    /// refusal), once, on whichever thread has it. Never suspends or blocks, unless the pipeline's name needs the
    /// cluster's topics listed (then it goes on in a task).
    func invoke(_ invocation: Invocation, body: ByteBuffer, answer: @escaping @Sendable (Answer) -> Void) {
        if let lookup = directory.lookupNow(invocation.pipeline) {
            invoke(invocation, body: body, lookup: lookup, answer: answer)
        } else {
            Task {
                let lookup = await directory.lookup(invocation.pipeline)
                invoke(invocation, body: body, lookup: lookup, answer: answer)
            }
        }
    }

    private func invoke(
        _ invocation: Invocation, body: ByteBuffer, lookup: PipelineDirectory.Lookup,
        answer: @escaping @Sendable (Answer) -> Void
    ) {
        let served: String
        let requestsTopic: String
        switch lookup {
        case .found(let topic):
            (served, requestsTopic) = (invocation.pipeline, topic)
        case .notFound(let why):
            return answer(reject(Refusal(status: .notFound, code: "unknown_pipeline", message: why), invocation))
        case .unavailable(let why):
            return answer(
                reject(
                    Refusal(status: .serviceUnavailable, code: "unavailable", message: why, retryAfter: 1), invocation))
        }
        let answered: @Sendable (Answer) -> Void = { [metrics] response in
            metrics.record(pipeline: served, status: response.status.code, duration: .now - invocation.started)
            answer(response)
        }
        do {
            let input = try Self.input(body)
            if invocation.preferences.respondAsync {
                try accept(input, to: requestsTopic, invocation, answer: answered)
            } else {
                try call(input, to: requestsTopic, invocation, answer: answered)
            }
        } catch let refusal as Refusal {
            answered(refusal.answer(invocation))
        } catch let error as PipelineClient.Refused {
            answered(Self.refusal(error).answer(invocation))
        } catch let error as KafkaError {
            answered(Self.notSent(error).answer(invocation))
        } catch {
            answered(internalError(error).answer(invocation))
        }
    }

    /// Sends the request; `answer` gets the worker's response.
    private func call(
        _ input: [UInt8], to requestsTopic: String, _ invocation: Invocation,
        answer: @escaping @Sendable (Answer) -> Void
    ) throws {
        let wait = invocation.preferences.wait
        let timeout = wait.map { min(.seconds($0), limits.maxTimeout) } ?? limits.timeout
        try client.call(
            input, to: requestsTopic, requestID: invocation.requestID, deadline: timeout, timeout: timeout,
            traceparent: invocation.traceparent
        ) { [self] result in
            let message: ResponseMessage
            switch result {
            case .success(let response): message = response
            case .failure(let error as PipelineClient.Timeout):
                return answer(
                    Refusal(
                        status: .gatewayTimeout, code: "timeout",
                        message:
                            "\(error) (\(timeout)); the request's deadline has passed too, so no worker starts it now"
                    ).answer(invocation))
            case .failure(let error as PipelineClient.Refused): return answer(Self.refusal(error).answer(invocation))
            case .failure(let error as KafkaError): return answer(Self.notSent(error).answer(invocation))
            case .failure(let error): return answer(internalError(error).answer(invocation))
            }
            var headers: HTTPFields = [.contentType: "application/json", Header.requestID: message.requestID]
            if let traceparent = message.traceparent { headers[Header.traceparent] = traceparent }
            if wait != nil { headers[Header.preferenceApplied] = "wait=\(timeout.components.seconds)" }
            let status = message.isError ? Self.status(ofErrorCode: (try? message.response())?.error?.code) : .ok
            answer(Answer(status: status, headers: headers, json: message.value))
        }
    }

    /// Sends the request without waiting for its response (which goes to the pipeline's responses topic); `answer`
    /// gets 202 once Kafka has acknowledged it.
    private func accept(
        _ input: [UInt8], to requestsTopic: String, _ invocation: Invocation,
        answer: @escaping @Sendable (Answer) -> Void
    ) throws {
        let id = invocation.requestID
        try client.send(input, to: requestsTopic, requestID: id, traceparent: invocation.traceparent) { result in
            if case .failure(let error) = result { return answer(Self.notSent(error).answer(invocation)) }
            var writer = JSONWriter()
            writer.object { out in
                out.field("request_id", id)
                out.field("pipeline", invocation.pipeline)
                out.field("status", "accepted")
                out.field("responses_topic", WireProtocol.responsesTopic(invocation.pipeline))
            }
            answer(
                Answer(
                    status: .accepted,
                    headers: [
                        .contentType: "application/json", Header.requestID: id,
                        Header.preferenceApplied: "respond-async",
                    ],
                    json: writer.bytes))
        }
    }

    private var tooLarge: Refusal {
        Refusal(
            status: .contentTooLarge, code: WireProtocol.ErrorCode.payloadTooLarge,
            message: "the body is larger than \(limits.maxBodyBytes) bytes, the most this gateway accepts")
    }

    private static func refusal(_ error: PipelineClient.Refused) -> Refusal {
        switch error.reason {
        case .duplicateRequestID:
            Refusal(status: .conflict, code: "duplicate_request_id", message: "\(error)")
        case .noReplyPartition, .tooManyWaiting, .replyPartitionMoved, .closed:
            Refusal(status: .serviceUnavailable, code: "unavailable", message: "\(error)", retryAfter: 1)
        }
    }

    private static func notSent(_ error: KafkaError) -> Refusal {
        Refusal(
            status: .serviceUnavailable, code: "unavailable", message: "the request was not sent: \(error)",
            retryAfter: 1)
    }

    private func internalError(_ error: any Error) -> Refusal {
        logger.error("call failed: \(error)")
        return Refusal(status: .internalServerError, code: WireProtocol.ErrorCode.internal, message: "\(error)")
    }

    /// A refusal of a call whose pipeline was not found, counted under no pipeline.
    private func reject(_ refusal: Refusal, _ invocation: Invocation) -> Answer {
        refuse(refusal, requestID: invocation.requestID, pipeline: invocation.pipeline, since: invocation.started)
    }

    /// A refusal's answer, counted under no pipeline (its name may be anything a caller sent).
    private func refuse(
        _ refusal: Refusal, requestID: String?, pipeline: String, since started: ContinuousClock.Instant
    ) -> Answer {
        metrics.record(pipeline: "", status: refusal.status.code, duration: .now - started)
        return Self.errorAnswer(refusal, requestID: requestID, pipeline: pipeline, since: started)
    }

    /// The HTTP status of an error response, by its code: 400 `invalid_input`, 413 `payload_too_large`, 504
    /// `deadline_exceeded`, 500 `internal` and `reply_to_not_allowed` (the fleet's fault), 502 for the rest
    /// (`step_failed` and the codes steps choose: the pipeline failed; `nil`, a response that does not follow
    /// docs/protocol.md).
    static func status(ofErrorCode code: String?) -> HTTPResponse.Status {
        guard let code else { return .badGateway }
        switch code {
        case WireProtocol.ErrorCode.invalidInput: return .badRequest
        case WireProtocol.ErrorCode.payloadTooLarge: return .contentTooLarge
        case WireProtocol.ErrorCode.deadlineExceeded: return .gatewayTimeout
        case WireProtocol.ErrorCode.internal, WireProtocol.ErrorCode.replyToNotAllowed: return .internalServerError
        default: return .badGateway
        }
    }

    /// The call's request id: its `sluice-request-id` header, or a new one.
    static func requestID(_ header: String?) throws -> String {
        guard let header else { return PipelineClient.newRequestID() }
        guard (1...256).contains(header.utf8.count), header.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw Refusal(
                status: .badRequest, code: WireProtocol.ErrorCode.invalidInput,
                message: "header sluice-request-id must be 1 to 256 visible ASCII characters")
        }
        return header
    }

    /// Accepts JSON: `application/json`, a `+json` type, no type, or `application/x-www-form-urlencoded` (what `curl
    /// -d` sends) whose body is JSON.
    static func checkContentType(_ header: String?) throws {
        guard let header, header != "application/json" else { return }
        // The media type: what comes before any parameter, without spaces, in lower case.
        let type = String(header.prefix { $0 != ";" }.filter { $0 != " " && $0 != "\t" }).lowercased()
        guard
            type == "application/json" || (type.hasPrefix("application/") && type.hasSuffix("+json"))
                || type == "application/x-www-form-urlencoded"
        else {
            throw Refusal(
                status: .unsupportedMediaType, code: "unsupported_media_type",
                message: "content type '\(type)' is not JSON: send the pipeline's input as application/json")
        }
    }

    /// The call's body, checked to be one JSON value.
    private static func input(_ body: ByteBuffer) throws -> [UInt8] {
        let bytes = Array(body.readableBytesView)
        guard !bytes.isEmpty else {
            throw Refusal(
                status: .badRequest, code: WireProtocol.ErrorCode.invalidInput,
                message: "the body is empty: send the pipeline's input as JSON")
        }
        do {
            try JSONValue.check(bytes)
        } catch {
            throw Refusal(
                status: .badRequest, code: WireProtocol.ErrorCode.invalidInput,
                message: "the body is not JSON: \(error)")
        }
        return bytes
    }

    /// A refusal as a response object with its error.
    static func errorAnswer(
        _ refusal: Refusal, requestID: String?, pipeline: String?, since started: ContinuousClock.Instant
    ) -> Answer {
        let elapsed = (ContinuousClock.now - started).components
        let bytes = Serving.Response.json(
            requestID: requestID, pipeline: pipeline, output: nil,
            error: ErrorDetail(code: refusal.code, message: refusal.message), runID: nil, capture: nil,
            durationMicros: elapsed.seconds * 1_000_000 + elapsed.attoseconds / 1_000_000_000_000)
        var headers: HTTPFields = [.contentType: "application/json"]
        if let requestID { headers[Header.requestID] = requestID }
        if let retryAfter = refusal.retryAfter { headers[.retryAfter] = String(retryAfter) }
        if let allow = refusal.allow { headers[.allow] = allow }
        return Answer(status: refusal.status, headers: headers, json: bytes)
    }
}

extension Gateway.Refusal {
    /// The refusal of an admitted call.
    func answer(_ invocation: Gateway.Invocation) -> Gateway.Answer {
        Gateway.errorAnswer(
            self, requestID: invocation.requestID, pipeline: invocation.pipeline, since: invocation.started)
    }
}

/// What a call's `Prefer` headers (RFC 7240) ask for: `respond-async`, and `wait=N` (seconds). Others are ignored.
struct Preferences: Equatable, Sendable {
    var respondAsync = false
    var wait: Int?

    init(respondAsync: Bool = false, wait: Int? = nil) {
        self.respondAsync = respondAsync
        self.wait = wait
    }

    init(_ headers: [String]) {
        for header in headers {
            for preference in header.split(separator: ",") {
                let token = preference.split(separator: ";", maxSplits: 1).first ?? ""
                let parts = token.split(separator: "=", maxSplits: 1).map {
                    $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                }
                guard let name = parts.first?.lowercased() else { continue }
                if name == "respond-async" {
                    respondAsync = true
                } else if name == "wait", parts.count == 2, let seconds = Int(parts[1]), seconds > 0 {
                    wait = seconds
                }
            }
        }
    }
}

/// Answers every error a route or Hummingbird throws (no route, a method the path does not take, a body too large)
/// as a response object, so that a caller always gets one shape.
private struct ErrorBodyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            var refusal = Gateway.Refusal(
                status: error.status, code: error.status == .notFound ? "not_found" : "http_\(error.status.code)",
                message: error.status.reasonPhrase)
            if error.status == .notFound, let allow = Self.allowedMethods(request.uri.path) {
                refusal = Gateway.Refusal(
                    status: .methodNotAllowed, code: "method_not_allowed",
                    message: "\(request.uri.path) takes \(allow), not \(request.method)", allow: allow)
            } else if error.status == .notFound {
                refusal.message = "no route \(request.method) \(request.uri.path)"
            }
            return Gateway.errorAnswer(
                refusal, requestID: request.headers[Gateway.Header.requestID], pipeline: nil, since: started
            ).response
        }
    }

    /// The methods a path of the gateway takes, if it is one.
    static func allowedMethods(_ path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 5, parts[1] == "v1", parts[2] == "pipelines", parts[4] == "invoke" { return "POST" }
        return ["/health", "/ready", "/metrics", "/openapi.json"].contains(path) ? "GET" : nil
    }
}
