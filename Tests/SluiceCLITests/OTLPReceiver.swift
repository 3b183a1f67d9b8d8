import Foundation
import Hummingbird
import Synchronization

/// A small OTLP/HTTP trace receiver on 127.0.0.1: takes `POST /v1/traces` with the JSON encoding of an
/// `ExportTraceServiceRequest` (what swift-otel sends with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) and keeps every
/// span it carries.
final class OTLPReceiver: Sendable {
    /// A span as the test reads it: ids in lowercase hexadecimal (`parentSpanID` empty for a root span).
    struct Span: Sendable, CustomStringConvertible {
        var name: String
        var traceID: String
        var spanID: String
        var parentSpanID: String
        var kind: Int
        var statusCode: Int
        var serviceName: String?
        var attributes: [String: String]

        var description: String {
            "\(name) trace \(traceID) span \(spanID) parent \(parentSpanID.isEmpty ? "-" : parentSpanID) status \(statusCode)"
        }
    }

    private let received = Mutex<(spans: [Span], waiters: [(count: Int, CheckedContinuation<Void, Never>)])>(
        ([], []))
    private let server = Mutex<TestHTTPServer?>(nil)
    /// The port it listens on.
    var port: Int { server.withLock { $0?.port } ?? 0 }

    private init() {}

    /// Starts the receiver on a free port.
    static func start() async throws -> OTLPReceiver {
        let receiver = OTLPReceiver()
        let router = Router()
        router.post("/v1/traces") { request, _ in
            let body = try await request.body.collect(upTo: 16 << 20)
            receiver.add(Self.spans(inJSON: Data(body.readableBytesView)))
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        let server = try await TestHTTPServer.start(label: "otlp-receiver", router: router)
        receiver.server.withLock { $0 = server }
        return receiver
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    var spans: [Span] { received.withLock { $0.spans } }

    private func add(_ spans: [Span]) {
        let ready = received.withLock { state in
            state.spans += spans
            let count = state.spans.count
            let ready = state.waiters.filter { $0.count <= count }.map(\.1)
            state.waiters.removeAll { $0.count <= count }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    /// Waits until at least `count` spans came, at most `timeout`; returns the spans received.
    func waitForSpans(_ count: Int, timeout: Duration = .seconds(30)) async -> [Span] {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let now = self.received.withLock { state in
                        if state.spans.count >= count { return true }
                        state.waiters.append((count, continuation))
                        return false
                    }
                    if now { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
            // Whichever came first, no waiter is left behind.
            let left = received.withLock { state in
                defer { state.waiters.removeAll() }
                return state.waiters.map(\.1)
            }
            for waiter in left { waiter.resume() }
        }
        return spans
    }

    func stop() {
        server.withLock { $0 }?.stop()
    }

    /// The spans of an OTLP/JSON `ExportTraceServiceRequest`. Ids are hexadecimal in OTLP/JSON; swift-protobuf's
    /// JSON writes bytes in base64: both are read.
    static func spans(inJSON data: Data) -> [Span] {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [] }
        var spans: [Span] = []
        for resourceSpans in object["resourceSpans"] as? [[String: Any]] ?? [] {
            let resource = resourceSpans["resource"] as? [String: Any]
            let resourceAttributes = attributes(resource?["attributes"])
            for scopeSpans in resourceSpans["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scopeSpans["spans"] as? [[String: Any]] ?? [] {
                    spans.append(
                        Span(
                            name: span["name"] as? String ?? "", traceID: hex(span["traceId"]),
                            spanID: hex(span["spanId"]), parentSpanID: hex(span["parentSpanId"]),
                            kind: span["kind"] as? Int ?? 0,
                            statusCode: (span["status"] as? [String: Any])?["code"] as? Int ?? 0,
                            serviceName: resourceAttributes["service.name"], attributes: attributes(span["attributes"]))
                    )
                }
            }
        }
        return spans
    }

    private static func hex(_ value: Any?) -> String {
        guard let text = value as? String, !text.isEmpty else { return "" }
        if text.count == 32 || text.count == 16, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        guard let bytes = Data(base64Encoded: text) else { return text }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// OTLP key-value attributes, their values as text.
    private static func attributes(_ value: Any?) -> [String: String] {
        var result: [String: String] = [:]
        for attribute in value as? [[String: Any]] ?? [] {
            guard let key = attribute["key"] as? String, let value = attribute["value"] as? [String: Any] else {
                continue
            }
            if let text = value["stringValue"] as? String {
                result[key] = text
            } else if let number = value["intValue"] {
                result[key] = "\(number)"
            } else if let flag = value["boolValue"] as? Bool {
                result[key] = "\(flag)"
            }
        }
        return result
    }
}
