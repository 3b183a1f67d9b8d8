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

    /// The gateway's routes, with every error answered as a response object.
    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorBodyMiddleware())
        router.post("/v1/pipelines/:name/invoke") { request, context in
            await self.invoke(request, pipeline: context.parameters.get("name") ?? "")
        }
        router.get("/openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: self.openAPI))
        }
        return router
    }

    /// Sets the gauges and counters that follow the client's state (see ``GatewayMetrics``).
    func refreshMetrics() { metrics.refresh(client) }

    /// Answers one call of `pipeline`.
    private func invoke(_ request: Request, pipeline name: String) async -> Response {
        let started = ContinuousClock.now
        var requestID: String?
        var served: String?
        let response: Response
        do {
            let id = try Self.requestID(request.headers[Header.requestID])
            requestID = id
            let requestsTopic: String
            switch await directory.lookup(name) {
            case .found(let topic):
                requestsTopic = topic
                served = name
            case .notFound(let why):
                throw Refusal(status: .notFound, code: "unknown_pipeline", message: why)
            case .unavailable(let why):
                throw Refusal(status: .serviceUnavailable, code: "unavailable", message: why, retryAfter: 1)
            }
            try Self.checkContentType(request.headers[.contentType])
            let body = try await Self.body(of: request, limit: limits.maxBodyBytes)
            let preferences = Preferences(request.headers[values: Header.prefer])
            let traceparent = request.headers[Header.traceparent]
            if preferences.respondAsync {
                response = try await accept(body, pipeline: name, to: requestsTopic, id: id, traceparent: traceparent)
            } else {
                response = try await call(
                    body, to: requestsTopic, id: id, traceparent: traceparent, wait: preferences.wait)
            }
        } catch let refusal as Refusal {
            response = Self.errorResponse(refusal, requestID: requestID, pipeline: name, since: started)
        } catch {
            logger.error("call of \(name) failed: \(error)", metadata: ["request_id": .string(requestID ?? "")])
            response = Self.errorResponse(
                Refusal(status: .internalServerError, code: WireProtocol.ErrorCode.internal, message: "\(error)"),
                requestID: requestID, pipeline: name, since: started)
        }
        metrics.record(pipeline: served ?? "", status: response.status.code, duration: .now - started)
        return response
    }

    /// Sends the request and answers the worker's response.
    private func call(
        _ body: [UInt8], to requestsTopic: String, id: String, traceparent: String?, wait: Int?
    ) async throws -> Response {
        let timeout = wait.map { min(.seconds($0), limits.maxTimeout) } ?? limits.timeout
        let message: ResponseMessage
        do {
            message = try await client.call(
                body, to: requestsTopic, requestID: id, deadline: timeout, timeout: timeout, traceparent: traceparent)
        } catch let error as PipelineClient.Timeout {
            throw Refusal(
                status: .gatewayTimeout, code: "timeout",
                message: "\(error) (\(timeout)); the request's deadline has passed too, so no worker starts it now")
        } catch let error as PipelineClient.Refused {
            switch error.reason {
            case .duplicateRequestID:
                throw Refusal(status: .conflict, code: "duplicate_request_id", message: "\(error)")
            case .noReplyPartition, .tooManyWaiting, .replyPartitionMoved, .closed:
                throw Refusal(status: .serviceUnavailable, code: "unavailable", message: "\(error)", retryAfter: 1)
            }
        } catch let error as KafkaError {
            throw Refusal(
                status: .serviceUnavailable, code: "unavailable", message: "the request was not sent: \(error)",
                retryAfter: 1)
        }
        var headers: HTTPFields = [.contentType: "application/json", Header.requestID: message.requestID]
        if let traceparent = message.traceparent { headers[Header.traceparent] = traceparent }
        if wait != nil { headers[Header.preferenceApplied] = "wait=\(timeout.components.seconds)" }
        let status = message.isError ? Self.status(ofErrorCode: (try? message.response())?.error?.code) : .ok
        return Response(status: status, headers: headers, body: Self.jsonBody(message.value))
    }

    /// Sends the request without waiting for its response (which goes to the pipeline's responses topic): 202.
    private func accept(
        _ body: [UInt8], pipeline: String, to requestsTopic: String, id: String, traceparent: String?
    ) async throws -> Response {
        do {
            try await client.send(body, to: requestsTopic, requestID: id, traceparent: traceparent)
        } catch {
            throw Refusal(
                status: .serviceUnavailable, code: "unavailable", message: "the request was not sent: \(error)",
                retryAfter: 1)
        }
        var writer = JSONWriter()
        writer.object { out in
            out.field("request_id", id)
            out.field("pipeline", pipeline)
            out.field("status", "accepted")
            out.field("responses_topic", WireProtocol.responsesTopic(pipeline))
        }
        return Response(
            status: .accepted,
            headers: [
                .contentType: "application/json", Header.requestID: id, Header.preferenceApplied: "respond-async",
            ],
            body: Self.jsonBody(writer.bytes))
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
        guard let header else { return }
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

    /// The request's body, checked to be one JSON value. One that says it is too large is refused before it is read.
    private static func body(of request: Request, limit: Int) async throws -> [UInt8] {
        let tooLarge = Refusal(
            status: .contentTooLarge, code: WireProtocol.ErrorCode.payloadTooLarge,
            message: "the body is larger than \(limit) bytes, the most this gateway accepts")
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit { throw tooLarge }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw tooLarge
        }
        let bytes = Array(buffer.readableBytesView)
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
    static func errorResponse(
        _ refusal: Refusal, requestID: String?, pipeline: String?, since started: ContinuousClock.Instant
    ) -> Response {
        let elapsed = (ContinuousClock.now - started).components
        let bytes = Serving.Response.json(
            requestID: requestID, pipeline: pipeline, output: nil,
            error: ErrorDetail(code: refusal.code, message: refusal.message), runID: nil, capture: nil,
            durationMicros: elapsed.seconds * 1_000_000 + elapsed.attoseconds / 1_000_000_000_000)
        var headers: HTTPFields = [.contentType: "application/json"]
        if let requestID { headers[Header.requestID] = requestID }
        if let retryAfter = refusal.retryAfter { headers[.retryAfter] = String(retryAfter) }
        if let allow = refusal.allow { headers[.allow] = allow }
        return Response(status: refusal.status, headers: headers, body: jsonBody(bytes))
    }

    /// A JSON value as a body, with a newline after it (for terminals).
    private static func jsonBody(_ json: [UInt8]) -> ResponseBody {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(json.count + 1)
        buffer.writeBytes(json)
        buffer.writeInteger(UInt8(ascii: "\n"))
        return ResponseBody(byteBuffer: buffer)
    }
}

/// What a call's `Prefer` headers (RFC 7240) ask for: `respond-async`, and `wait=N` (seconds). Others are ignored.
struct Preferences: Equatable {
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
            return Gateway.errorResponse(
                refusal, requestID: request.headers[Gateway.Header.requestID], pipeline: nil, since: started)
        }
    }

    /// The methods a path of the gateway takes, if it is one.
    static func allowedMethods(_ path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 5, parts[1] == "v1", parts[2] == "pipelines", parts[4] == "invoke" { return "POST" }
        return ["/health", "/ready", "/metrics", "/openapi.json"].contains(path) ? "GET" : nil
    }
}
