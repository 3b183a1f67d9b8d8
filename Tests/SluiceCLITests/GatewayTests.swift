import AsyncHTTPClient
import Foundation
import HTTPTypes
import Kafka
import NIOCore
import NIOHTTP1
import Testing

@testable import SluiceCLI

@Suite("sluice gateway, end to end: HTTP calls through the embedded broker and real workers", .serialized)
struct GatewayTests {
    /// The curl call of the README, and every header and refusal of docs/gateway.md, against a `text-stats` worker.
    @Test func aCallThroughTheGatewayIsAnsweredByAWorker() async throws {
        let cluster = try await ServingCluster.start(gatewayReplyPartitions: 4)
        let worker = try await cluster.startWorker(["--max-payload-bytes", "2048"])
        let gateway = try await cluster.startGateway(["--max-body-bytes", "4096"])
        let invoke = "/v1/pipelines/text-stats/invoke"

        // `curl -d` sends application/x-www-form-urlencoded; the gateway takes it when the body is JSON.
        let plain = try await gateway.post(
            invoke, #"{"text": "a b"}"#, headers: ["Content-Type": "application/x-www-form-urlencoded"])
        #expect(plain.status == 200)
        #expect(plain.json["status"] as? String == "ok" && plain.json["capture"] as? String == "BATCH")
        let output = try #require(plain.json["output"] as? [String: Any])
        #expect(output["tokens"] as? Int == 2 && output["first"] as? String == "a" && output["last"] as? String == "b")
        #expect(plain.json["run_id"] as? String != nil)
        #expect(plain.headers["sluice-request-id"] == plain.json["request_id"] as? String)

        let trace = "0af7651916cd43dd8448eb211c80319c"
        let named = try await gateway.post(
            invoke, #"{"text": "x y z"}"#,
            headers: ["sluice-request-id": "gw-1", "traceparent": "00-\(trace)-b7ad6b7169203331-01"])
        #expect(named.status == 200 && named.json["request_id"] as? String == "gw-1")
        #expect(named.headers["sluice-request-id"] == "gw-1")
        #expect(named.headers["traceparent"]?.hasPrefix("00-\(trace)-") == true)

        let accepted = try await gateway.post(
            invoke, #"{"text": "later"}"#, headers: ["Prefer": "respond-async", "sluice-request-id": "gw-async"])
        #expect(accepted.status == 202 && accepted.json["status"] as? String == "accepted")
        #expect(accepted.json["responses_topic"] as? String == cluster.responses)
        #expect(accepted.headers["preference-applied"] == "respond-async")

        // Refused by the worker: its response, with the worker's capture.
        let invalid = try await gateway.post(invoke, #"{"text": 1}"#)
        #expect(
            invalid.status == 400 && invalid.errorCode == "invalid_input"
                && invalid.json["capture"] as? String == "BATCH")
        let tooLargeForTheWorker = try await gateway.post(
            invoke, #"{"text": "\#(String(repeating: "w ", count: 1500))"}"#)
        #expect(tooLargeForTheWorker.status == 413 && tooLargeForTheWorker.errorCode == "payload_too_large")
        #expect(tooLargeForTheWorker.json["capture"] as? String == "BATCH")

        // Refused by the gateway: the same object, capture null.
        let refusals: [(String, String, [String: String], Int, String)] = [
            (invoke, #"{"text": "#, [:], 400, "invalid_input"),
            (invoke, "", [:], 400, "invalid_input"),
            (invoke, #"{"text": "a"}"#, ["sluice-request-id": "has space"], 400, "invalid_input"),
            ("/v1/pipelines/nope/invoke", #"{"text": "a"}"#, [:], 404, "unknown_pipeline"),
            ("/v1/pipelines/no%20pe/invoke", #"{"text": "a"}"#, [:], 404, "unknown_pipeline"),
            (invoke, #"{"text": "a"}"#, ["Content-Type": "text/plain"], 415, "unsupported_media_type"),
            (invoke, #"{"text": "\#(String(repeating: "w", count: 5000))"}"#, [:], 413, "payload_too_large"),
            ("/v2/anything", "{}", [:], 404, "not_found"),
        ]
        for (path, body, headers, status, code) in refusals {
            let answer = try await gateway.post(path, body, headers: headers)
            #expect(answer.status == status && answer.errorCode == code, "\(path) \(body.prefix(40)) \(headers)")
            #expect(answer.json["capture"] is NSNull && answer.json["status"] as? String == "error")
        }
        let get = try await gateway.request(.GET, invoke)
        #expect(get.status == 405 && get.errorCode == "method_not_allowed" && get.headers["allow"] == "POST")

        // Many calls at once, each answered with its own output.
        let answers = try await withThrowingTaskGroup(of: (Int, HTTPAnswer).self) { group in
            for index in 0..<200 {
                group.addTask {
                    let words = (0...index % 7).map { "w\($0)" }.joined(separator: " ")
                    return (index, try await gateway.post(invoke, #"{"text": "\#(words)"}"#))
                }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(answers.count == 200)
        for (index, answer) in answers {
            #expect(
                answer.status == 200 && (answer.json["output"] as? [String: Any])?["tokens"] as? Int == index % 7 + 1)
        }
        #expect(Set(answers.values.compactMap { $0.json["request_id"] as? String }).count == 200)

        // The accepted request was answered on the pipeline's responses topic.
        var asynchronous: [[String: Any]] = []
        for _ in 0..<100 where asynchronous.isEmpty {
            asynchronous = try await cluster.read(cluster.responses).compactMap { $0["value"] as? [String: Any] }
                .filter { $0["request_id"] as? String == "gw-async" }
            if asynchronous.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect((asynchronous.first?["output"] as? [String: Any])?["tokens"] as? Int == 1)

        let metrics = try #require(try await gateway.metrics())
        #expect(hasSample(metrics, #"sluice_gateway_calls_total{pipeline="text-stats",status="200"} 202"#))
        #expect(hasSample(metrics, #"sluice_gateway_calls_total{pipeline="",status="404"} 2"#))
        #expect(try await gateway.httpStatus("/ready").status == 200)
        #expect(await gateway.stop() == 0)
        #expect(await worker.stop() == 0)
        #expect(await cluster.broker.stop() == 0)
    }

    /// A stand-in worker answers each request with the error its body names, after the delay it names: every error
    /// code gets its HTTP status, and a response after the call's `Prefer: wait` is dropped and counted late.
    @Test func errorCodesBecomeStatusesAndLateResponsesAreCounted() async throws {
        let cluster = try await ServingCluster.start(pipeline: "fake", partitions: 2, gatewayReplyPartitions: 2)
        let responder = try StandInWorker(bootstrap: cluster.bootstrap, topic: cluster.requests)
        let gateway = try await cluster.startGateway()
        let invoke = "/v1/pipelines/fake/invoke"
        let cases: [(String?, Int)] = [
            (nil, 200), ("invalid_input", 400), ("payload_too_large", 413), ("deadline_exceeded", 504),
            ("step_failed", 502), ("a_code_of_the_steps_own", 502), ("internal", 500), ("reply_to_not_allowed", 500),
        ]
        for (code, status) in cases {
            let answer = try await gateway.post(invoke, #"{"code": \#(code.map { "\"\($0)\"" } ?? "null")}"#)
            #expect(answer.status == status, "\(code ?? "ok")")
            #expect(answer.errorCode == code && answer.json["capture"] as? String == "FAKE")
        }

        let slow = try await gateway.post(invoke, #"{"code": null, "delay_ms": 2500}"#, headers: ["Prefer": "wait=1"])
        #expect(slow.status == 504 && slow.errorCode == "timeout" && slow.json["capture"] is NSNull)
        var late = false
        for _ in 0..<100 where !late {
            try await Task.sleep(for: .milliseconds(100))
            late = hasSample(
                try await gateway.metrics() ?? "", #"sluice_gateway_dropped_responses_total{reason="late"} 1"#)
        }
        #expect(late)
        // The stand-in saw the request's deadline: the call's wait.
        let deadline = try #require(responder.deadlines.last)
        #expect(abs(deadline - slow.sentMilliseconds - 1000) < 1000)

        // SIGTERM while a call waits: the gateway answers it before it exits.
        let inFlight = Task { try await gateway.post(invoke, #"{"code": null, "delay_ms": 1500}"#) }
        try await gateway.waitUntilObject { $0["waiting"] as? Int == 1 }
        #expect(await gateway.stop() == 0)
        #expect(try await inFlight.value.status == 200)
        await responder.stop()
        #expect(await cluster.broker.stop() == 0)
    }

    /// A client that sends half a request is cut off after the idle timeout, bytes that are not HTTP get 400 or a
    /// closed connection, a caller that hangs up leaves nothing behind, pipelined requests are answered in order and
    /// `Expect: 100-continue` is honoured; the gateway serves on.
    @Test func misbehavingClientsAreCutOffAndTheGatewayServesOn() async throws {
        let cluster = try await ServingCluster.start(gatewayReplyPartitions: 2)
        let worker = try await cluster.startWorker(["--capture", "MEMORY"])
        let gateway = try await cluster.startGateway(["--idle-timeout", "1"])
        let clients = try ChildProcess(
            "/usr/bin/env", ["python3", pythonScript("slow_http_clients.py"), String(gateway.port), "1"])
        let output = try await clients.readRest()
        #expect(await clients.wait(timeout: .seconds(60)) == 0, "\(clients.standardError)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        let half = try #require(result["half_request"] as? [String: Any])
        #expect(half["closed"] as? Bool == true, "\(half)")
        let garbage = try #require(result["garbage"] as? [String: Any])
        let statusLine = garbage["status_line"] as? String ?? ""
        #expect(statusLine.isEmpty || statusLine.hasPrefix("HTTP/1.1 400"), "\(garbage)")
        #expect(garbage["closed"] as? Bool == true)
        // Pipelined calls and another route, answered in order; the call that said `Connection: close` is answered,
        // then the connection closes.
        let pipelined = try #require(result["pipelined"] as? [String: Any])
        #expect(pipelined["statuses"] as? [Int] == [200, 200, 200, 200, 200], "\(pipelined)")
        #expect((pipelined["tokens"] as? [Any])?.map { $0 as? Int } == [1, 2, nil, 3, 5], "\(pipelined)")
        #expect(pipelined["health"] as? String == "serving")
        #expect(pipelined["last_connection"] as? String == "close" && pipelined["closed"] as? Bool == true)
        let patient = try #require(result["continue"] as? [String: Any])
        #expect(patient["interim"] as? Int == 100 && patient["status"] as? Int == 200 && patient["tokens"] as? Int == 2)
        #expect(patient["refused_status"] as? Int == 415 && patient["refused_closed"] as? Bool == true, "\(patient)")

        let after = try await gateway.post("/v1/pipelines/text-stats/invoke", #"{"text": "still here"}"#)
        #expect(after.status == 200 && (after.json["output"] as? [String: Any])?["tokens"] as? Int == 2)
        try await gateway.waitUntilObject { $0["waiting"] as? Int == 0 }
        #expect(gateway.process.isRunning)
        #expect(await gateway.stop() == 0)
        #expect(await worker.stop() == 0)
        #expect(await cluster.broker.stop() == 0)
    }

    /// Two gateways in one group split the reply topic's partitions: each reads only its own responses (none
    /// unmatched), and when one stops the other takes its partitions and goes on.
    @Test func twoGatewaysShareTheReplyTopic() async throws {
        let cluster = try await ServingCluster.start(gatewayReplyPartitions: 4)
        let worker = try await cluster.startWorker(["--capture", "MEMORY"])
        let first = try await cluster.startGateway()
        let second = try await cluster.startGateway()
        try await first.waitUntilObject { $0["reply_partitions"] as? Int ?? 0 < 4 }
        let split = [
            try #require(try await first.healthObject()?["reply_partitions"] as? Int),
            try #require(try await second.healthObject()?["reply_partitions"] as? Int),
        ]
        #expect(split.reduce(0, +) == 4 && split.allSatisfy { $0 > 0 })

        let invoke = "/v1/pipelines/text-stats/invoke"
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<200 {
                let gateway = index % 2 == 0 ? first : second
                group.addTask { try await gateway.post(invoke, #"{"text": "call \#(index)"}"#).status }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(statuses.count == 200 && statuses.allSatisfy { $0 == 200 })
        for gateway in [first, second] {
            let metrics = try #require(try await gateway.metrics())
            #expect(hasSample(metrics, #"sluice_gateway_calls_total{pipeline="text-stats",status="200"} 100"#))
            let dropped = metrics.split(separator: "\n").filter {
                $0.hasPrefix("sluice_gateway_dropped_responses_total{")
            }
            #expect(dropped.allSatisfy { $0.hasSuffix("} 0") }, "\(dropped)")
        }

        #expect(await second.stop() == 0)
        try await first.waitUntilObject { $0["reply_partitions"] as? Int == 4 }
        #expect(try await first.post(invoke, #"{"text": "alone"}"#).status == 200)
        #expect(await first.stop() == 0)
        #expect(await worker.stop() == 0)
        #expect(await cluster.broker.stop() == 0)
    }

    /// `/openapi.json` is a valid OpenAPI 3.1 document (openapi-spec-validator) with text-stats' input schema, and
    /// schemathesis's generated calls against it, through a worker, get only statuses and bodies it declares, 2xx for
    /// bodies that follow the schema, and never a 5xx.
    @Test func theOpenAPIDocumentValidatesAndSurvivesSchemathesis() async throws {
        let cluster = try await ServingCluster.start(gatewayReplyPartitions: 2)
        let worker = try await cluster.startWorker(["--capture", "MEMORY"])
        let gateway = try await cluster.startGateway(["--pipeline", "text-stats"])
        let check = try ChildProcess(
            "/usr/bin/env", ["python3", pythonScript("gateway_openapi.py"), "http://127.0.0.1:\(gateway.port)"])
        let output = try await check.readRest()
        let status = await check.wait(timeout: .seconds(600))
        #expect(status == 0, "\(output.suffix(4000))\n\(check.standardError.suffix(2000))")
        #expect(output.contains("the document is valid OpenAPI 3.1"))
        // text-stats is a pipeline of this executable: its operation's body is its input's schema.
        #expect(
            output.contains(
                #"/v1/pipelines/text-stats/invoke takes {"properties": {"text": {"type": "string"}}, "required": ["text"], "type": "object"}"#
            ))
        #expect(try await gateway.httpStatus("/health").status == 200)
        #expect(await gateway.stop() == 0)
        #expect(await worker.stop() == 0)
        #expect(await cluster.broker.stop() == 0)
    }

    @Test func preferHeadersAreReadAsRFC7240Says() {
        #expect(Preferences(["respond-async"]) == Preferences(respondAsync: true))
        #expect(
            Preferences(["handling=lenient, wait=5", "respond-async; foo=bar"])
                == Preferences(respondAsync: true, wait: 5))
        #expect(Preferences(["wait=\"7\""]) == Preferences(wait: 7))
        #expect(Preferences(["wait=0", "wait=soon", "respond-sync"]) == Preferences())
    }

    @Test func errorCodesMapToStatuses() {
        #expect(Gateway.status(ofErrorCode: "invalid_input") == .badRequest)
        #expect(Gateway.status(ofErrorCode: "payload_too_large") == .contentTooLarge)
        #expect(Gateway.status(ofErrorCode: "deadline_exceeded") == .gatewayTimeout)
        #expect(Gateway.status(ofErrorCode: "internal") == .internalServerError)
        #expect(Gateway.status(ofErrorCode: "step_failed") == .badGateway)
        #expect(Gateway.status(ofErrorCode: nil) == .badGateway)
    }
}

/// An HTTP answer: its status, headers (names lowercased) and JSON body.
struct HTTPAnswer: @unchecked Sendable {
    var status: Int
    var headers: [String: String]
    var json: [String: Any]
    /// When the call was sent, in epoch milliseconds.
    var sentMilliseconds: Int64

    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
}

extension ServiceProcess {
    func post(_ path: String, _ body: String, headers: [String: String] = [:]) async throws -> HTTPAnswer {
        try await request(.POST, path, body: body, headers: headers)
    }

    func request(
        _ method: HTTPMethod, _ path: String, body: String? = nil, headers: [String: String] = [:]
    ) async throws -> HTTPAnswer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let sent = Int64(Date().timeIntervalSince1970 * 1000)
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        let json = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any] ?? [:]
        var fields: [String: String] = [:]
        for header in response.headers { fields[header.name.lowercased()] = header.value }
        return HTTPAnswer(status: Int(response.status.code), headers: fields, json: json, sentMilliseconds: sent)
    }
}

/// A worker of the `fake` pipeline in the test's process: answers each request (`{"code": CODE or null, "delay_ms":
/// N}`) after the delay with an error `CODE` (or `ok`), on the reply topic and partition the request names.
final class StandInWorker: @unchecked Sendable {
    private let consumer: KafkaConsumer
    private let producer: KafkaProducer
    private var task: Task<Void, Never>?
    private let lock = NSLock()
    private var seenDeadlines: [Int64] = []

    /// The `sluice-deadline` of each request, in the order they came.
    var deadlines: [Int64] { lock.withLock { seenDeadlines } }

    init(bootstrap: String, topic: String) throws {
        let settings = try KafkaConfiguration([
            "bootstrap.servers": bootstrap, "group.id": "stand-in", "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": "10", "linger.ms": "1", "session.timeout.ms": "6000", "heartbeat.interval.ms": "200",
        ])
        consumer = try KafkaConsumer(configuration: settings, topics: [topic])
        producer = try KafkaProducer(configuration: settings)
        task = Task { [self] in
            for await message in consumer.messages {
                Task { await answer(message) }
            }
        }
    }

    private func answer(_ message: KafkaMessage) async {
        let body = (try? JSONSerialization.jsonObject(with: Data(message.value ?? []))) as? [String: Any] ?? [:]
        if let deadline = message.headers.string(named: "sluice-deadline").flatMap({ Int64($0) }) {
            lock.withLock { seenDeadlines.append(deadline) }
        }
        if let delay = body["delay_ms"] as? Int { try? await Task.sleep(for: .milliseconds(delay)) }
        let id = message.headers.string(named: "sluice-request-id") ?? ""
        let code = body["code"] as? String
        let error = code.map { #"{"code": "\#($0)", "message": "as asked", "step": null}"# } ?? "null"
        let value =
            #"{"request_id": "\#(id)", "pipeline": "fake", "status": "\#(code == nil ? "ok" : "error")", "output": \#(code == nil ? "1" : "null"), "error": \#(error), "run_id": null, "capture": "FAKE", "duration_ms": 0.1}"#
        let reply = OutgoingMessage(
            topic: message.headers.string(named: "sluice-reply-to") ?? "fake.responses",
            partition: message.headers.string(named: "sluice-reply-partition").flatMap { Int32($0) }, key: nil,
            value: Array(value.utf8),
            headers: [KafkaHeader("sluice-request-id", id), KafkaHeader("sluice-status", code == nil ? "ok" : "error")])
        _ = try? await producer.send(reply)
    }

    func stop() async {
        task?.cancel()
        await consumer.close()
        await producer.close()
    }
}
