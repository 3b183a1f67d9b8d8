import Foundation
import Kafka
import Logging
import Pipelines
import Serving
import Testing

private let quiet: Logger = {
    var logger = Logger(label: "sluice.tests")
    logger.logLevel = .critical
    return logger
}()

@Suite("Wire protocol codecs and in-order offsets")
struct ProtocolTests {
    private func message(headers: [KafkaHeader], value: String? = "{}") -> KafkaMessage {
        KafkaMessage(
            topic: "p.requests", partition: 3, offset: 41, key: Array("k".utf8), value: value.map { Array($0.utf8) },
            headers: headers)
    }

    @Test func requestsReadTheirHeadersAndFallBackToTheirPosition() {
        let plain = Request(message(headers: []))
        #expect(plain.requestID == "p.requests/3/41")
        #expect(plain.replyTo == nil && plain.deadlineMilliseconds == nil && plain.headerError == nil)
        let full = Request(
            message(headers: [
                KafkaHeader("sluice-request-id", "abc"), KafkaHeader("sluice-reply-to", "p.responses.me"),
                KafkaHeader("sluice-deadline", " 1700000000000 "), KafkaHeader("traceparent", "00-a-b-01"),
            ]))
        #expect(full.requestID == "abc" && full.replyTo == "p.responses.me")
        #expect(full.deadlineMilliseconds == 1_700_000_000_000 && full.traceparent == "00-a-b-01")
        let bad = Request(
            message(headers: [KafkaHeader("sluice-deadline", "tomorrow"), KafkaHeader("sluice-reply-to", [0xFF])]))
        #expect(bad.headerError?.contains("'tomorrow' is not epoch milliseconds") == true)
        #expect(bad.headerError?.contains("sluice-reply-to is not UTF-8") == true)
    }

    /// `sluice-reply-partition` as decimal digits (Sluice's clients) or 4 bytes big-endian (Spring's
    /// `ReplyingKafkaTemplate`); anything else is a header error that names the value.
    @Test func replyPartitionsAreDecimalOrFourBytesBigEndian() {
        func partition(_ value: [UInt8]) -> (Int32?, String?) {
            let request = Request(message(headers: [KafkaHeader("sluice-reply-partition", value)]))
            return (request.replyPartition, request.headerError)
        }
        #expect(Request(message(headers: [])).replyPartition == nil)
        #expect(partition(Array("3".utf8)) == (3, nil))
        #expect(partition(Array(" 12 ".utf8)) == (12, nil))
        #expect(partition(Array("0007".utf8)) == (7, nil))
        #expect(partition([0, 0, 1, 2]) == (258, nil))
        #expect(partition([0, 0, 0, 0]) == (0, nil))
        for bad: [UInt8] in [
            Array("-1".utf8), Array("three".utf8), [], [0xFF, 0xFF, 0xFF, 0xFF], [0, 1], Array("99999999999".utf8),
        ] {
            let (number, error) = partition(bad)
            #expect(number == nil, "\(bad)")
            #expect(
                error?.contains("sluice-reply-partition") == true && error?.contains("not a partition number") == true)
        }
    }

    @Test func runIDsFollowTheDocumentedFormula() {
        // docs/protocol.md: SHA-256 of "sluice-run-v1", topic, partition and offset joined by NUL, first 32 hex
        // digits; the expected value is Python's hashlib over those bytes.
        let once = WireProtocol.runID(topic: "p.requests", partition: 3, offset: 41)
        #expect(once == "de667f317ab777f0f1ae317e776bd6f3")
        #expect(once != WireProtocol.runID(topic: "p.requests", partition: 3, offset: 42))
        #expect(once != WireProtocol.runID(topic: "p.requests", partition: 4, offset: 41))
        #expect(once.count == 32 && once.allSatisfy(\.isHexDigit))
        #expect(Request(message(headers: [])).runID == once)
    }

    @Test func responsesRoundTrip() throws {
        let ok = Response(
            requestID: "r1", pipeline: "p", output: Array(#"{"a":1}"#.utf8), error: nil, runID: "run", capture: "BATCH",
            durationMicros: 1500)
        #expect(
            String(decoding: ok.json(), as: UTF8.self)
                == #"{"request_id":"r1","pipeline":"p","status":"ok","output":{"a":1},"error":null,"run_id":"run","capture":"BATCH","duration_ms":1.5}"#
        )
        let decoded = try Response(json: ok.json())
        #expect(decoded.requestID == "r1" && decoded.output == ok.output && decoded.runID == "run")
        let failed = Response(
            requestID: "r2", pipeline: "p", output: nil,
            error: ErrorDetail(code: "step_failed", message: "m", step: "s"),
            runID: nil, capture: "MEMORY", durationMicros: 0)
        let message = failed.message(topic: "p.responses", key: Array("k".utf8))
        #expect(message.headers.string(named: "sluice-status") == "error")
        #expect(message.headers.string(named: "sluice-request-id") == "r2")
        #expect(try Response(json: failed.json()).error == ErrorDetail(code: "step_failed", message: "m", step: "s"))
        #expect(throws: ResponseDecodingError.self) { try Response(json: Array(#"{"request_id":1}"#.utf8)) }
    }

    @Test func deadLettersCarryTheRequestAndWhy() {
        let request = Request(message(headers: [KafkaHeader("sluice-request-id", "x")], value: "nope"))
        let letter = DeadLetter.message(
            for: request, error: ErrorDetail(code: "invalid_input", message: "not JSON"), topic: "p.dlq",
            budget: 1_000_000)
        #expect(letter.topic == "p.dlq" && letter.value == Array("nope".utf8) && letter.key == Array("k".utf8))
        #expect(letter.headers.string(named: "sluice-truncated") == nil)
        #expect(letter.headers.string(named: "sluice-request-id") == "x")
        #expect(letter.headers.string(named: "sluice-error-code") == "invalid_input")
        #expect(letter.headers.string(named: "sluice-original-topic") == "p.requests")
        #expect(letter.headers.string(named: "sluice-original-partition") == "3")
        #expect(letter.headers.string(named: "sluice-original-offset") == "41")
        #expect(letter.headers.string(named: "sluice-error-message") == "not JSON")
    }

    /// librdkafka's own size check of a record: key, value and headers (name, value) plus its framing.
    private func recordSize(_ record: OutgoingMessage) -> Int {
        (record.key?.count ?? 0) + (record.value?.count ?? 0)
            + record.headers.reduce(0) { $0 + $1.name.utf8.count + ($1.value?.count ?? 0) + 12 } + 512
    }

    @Test func deadLettersTooLargeForTheBudgetCarryAPrefixAndSaySo() throws {
        let value = String(repeating: "v", count: 50_000)
        let request = Request(message(headers: [KafkaHeader("sluice-request-id", "big")], value: value))
        let error = ErrorDetail(code: "payload_too_large", message: "too large")
        let letter = DeadLetter.message(for: request, error: error, topic: "p.dlq", budget: 16_384)
        let kept = try #require(letter.value)
        #expect(kept.count > 10_000 && kept.count < 16_384 && kept == Array(value.utf8.prefix(kept.count)))
        #expect(letter.headers.string(named: "sluice-truncated") == "true")
        #expect(letter.headers.string(named: "sluice-original-size") == "50000")
        #expect(letter.headers.string(named: "sluice-request-id") == "big")
        #expect(recordSize(letter) <= 16_384)

        // Headers too large to copy are left out and counted; the copy still fits.
        let noisy = Request(
            message(headers: (0..<40).map { KafkaHeader("h\($0)", String(repeating: "x", count: 1000)) }, value: value))
        let trimmed = DeadLetter.message(for: noisy, error: error, topic: "p.dlq", budget: 16_384)
        #expect(trimmed.headers.string(named: "sluice-original-headers-dropped") == "40")
        #expect(trimmed.headers.string(named: "h0") == nil)
        #expect(trimmed.headers.string(named: "sluice-error-code") == "payload_too_large")
        #expect(recordSize(trimmed) <= 16_384)
    }

    @Test func replyTopicsMustStartWithAnAllowedPrefix() {
        var configuration = WorkerConfiguration(
            pipeline: AnyPipeline(Pipeline("p") { (value: Int) in value }), capture: .batch,
            kafka: try! KafkaConfiguration())
        #expect(configuration.allowsReply(to: "p.responses") && configuration.allowsReply(to: "p.responses.client-7"))
        #expect(!configuration.allowsReply(to: "q.responses") && !configuration.allowsReply(to: "p.request"))
        configuration.allowedReplyPrefixes.append("replies.")
        #expect(configuration.allowsReply(to: "replies.team-a"))
    }
}

@Suite("The request-reply client against an embedded cluster")
struct ClientTests {
    @Test func responsesFindTheirCallersAndDuplicatesAreDropped() async throws {
        // Every request answered twice, as by a worker killed after producing.
        let echo = try EchoStandIn(partitions: 2, copies: 2)
        let client = try PipelineClient(kafka: echo.settings, pipeline: "echo", logger: quiet)
        let answers = try await withThrowingTaskGroup(of: (Int, Response).self) { group in
            for index in 0..<20 {
                group.addTask {
                    (
                        index,
                        try await client.call(Array("[\(index)]".utf8), to: "echo.requests", timeout: .seconds(60))
                            .response()
                    )
                }
            }
            var answers: [Int: Response] = [:]
            for try await (index, response) in group { answers[index] = response }
            return answers
        }
        #expect(answers.count == 20)
        for (index, response) in answers { #expect(response.output == Array("[\(index)]".utf8)) }
        #expect(try await eventuallyTrue { client.dropped.duplicates == 20 })
        await #expect(throws: PipelineClient.Timeout.self) {
            _ = try await client.call(
                Array("1".utf8), to: "echo.requests", requestID: "nobody-answers", timeout: .milliseconds(1))
        }
        // A call whose task is cancelled ends at once with CancellationError and waits no more.
        let cancelled = Task {
            try await client.call(Array("2".utf8), to: "silent.requests", timeout: .seconds(60))
        }
        #expect(try await eventuallyTrue { client.waitingCount == 1 })
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { _ = try await cancelled.value }
        #expect(client.waitingCount == 0)
        await client.close()
        await echo.stop()
    }

    /// A call that no other call waits beside is sent at once, whatever the client's `linger.ms` says; a call beside
    /// another waits for it, as batched requests do (docs/kafka-layer.md, "Prompt when idle").
    @Test func aCallAloneDoesNotWaitForTheLinger() async throws {
        let echo = try EchoStandIn(partitions: 1, copies: 1)
        // A minute of linger: a request that waited for it would outlast every call's timeout here.
        let client = try PipelineClient(
            kafka: echo.settings.merging(["linger.ms": "60000"]), pipeline: "echo", logger: quiet)
        let alone = try await client.call(Array("[1]".utf8), to: "echo.requests", timeout: .seconds(20)).response()
        #expect(alone.output == Array("[1]".utf8))

        let waiting = Task { try await client.call(Array("2".utf8), to: "silent.requests", timeout: .seconds(60)) }
        #expect(try await eventuallyTrue { client.waitingCount == 1 })
        await #expect(throws: PipelineClient.Timeout.self) {
            _ = try await client.call(Array("[3]".utf8), to: "echo.requests", timeout: .seconds(2))
        }
        waiting.cancel()
        _ = try? await waiting.value
        let aloneAgain = try await client.call(Array("[4]".utf8), to: "echo.requests", timeout: .seconds(20))
        #expect(try aloneAgain.response().output == Array("[4]".utf8))
        await client.close()
        await echo.stop()
    }

    private func eventuallyTrue(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}

/// A stand-in worker on an embedded cluster of its own, with the topics `echo.requests`, `echo.responses` and
/// `silent.requests` (which nobody answers): it answers each echo request with its input, `copies` times.
private struct EchoStandIn {
    /// Kept alive as long as the stand-in.
    private let cluster: MockCluster
    /// Client settings for the cluster.
    let settings: KafkaConfiguration
    private let requests: KafkaConsumer
    private let replies: KafkaProducer
    private let answering: Task<Void, Never>

    init(partitions: Int, copies: Int) throws {
        cluster = try MockCluster(logger: quiet)
        try cluster.createTopic("echo.requests", partitions: partitions)
        try cluster.createTopic("echo.responses", partitions: partitions)
        try cluster.createTopic("silent.requests", partitions: 1)
        settings = try KafkaConfiguration([
            "bootstrap.servers": cluster.bootstrapServers, "fetch.wait.max.ms": "10", "socket.nagle.disable": "true",
            "session.timeout.ms": "6000", "heartbeat.interval.ms": "200",
        ])
        let requests = try KafkaConsumer(
            configuration: settings.merging(["group.id": "echo", "auto.offset.reset": "earliest"]),
            topics: ["echo.requests"], logger: quiet)
        let replies = try KafkaProducer(configuration: settings.merging(["linger.ms": "1"]), logger: quiet)
        answering = Task {
            for await message in requests.messages {
                let request = Request(message)
                let response = Response(
                    requestID: request.requestID, pipeline: "echo", output: message.value, error: nil, runID: nil,
                    capture: "MEMORY", durationMicros: 1)
                for _ in 0..<copies {
                    _ = try? await replies.send(response.message(topic: request.replyTo ?? "", key: nil))
                }
            }
        }
        (self.requests, self.replies) = (requests, replies)
    }

    func stop() async {
        answering.cancel()
        await requests.close()
        await replies.close()
    }
}

/// A one-step pipeline: 4 lineage events a run (run_started, step_started, step_completed, run_completed).
private enum Shout {
    static let upper = Step("upper") { (text: String) in text.uppercased() }
    static let pipeline = Pipeline("shout") { (text: String) in try await upper(text) }
    static let eventsPerRun = 4
}

@Suite("Who waits for lineage: a worker in process, its lineage partition's broker slowed down")
struct LineageWaitTests {
    /// Lineage lives on broker 2, requests and responses on broker 1. Once a first run has warmed up every
    /// connection, broker 2 answers 3 s late: a run's events reach the log but are acknowledged only 3 s later. A
    /// REALTIME response arrives while none of its run's events is acknowledged; a BATCH response only after all are;
    /// with `flush_on_step_end` the step waits for its events, the response not for `run_completed`.
    @Test(arguments: [
        ("REALTIME", 0), ("BATCH", Shout.eventsPerRun),
        (#"{"mode": "REALTIME", "flush_on_step_end": true}"#, Shout.eventsPerRun - 1),
    ])
    func aResponseWaitsForTheLineageItsModeSays(capture: String, acknowledgedAtResponse: Int) async throws {
        let cluster = try MockCluster(brokers: 2, logger: quiet)
        for topic in ["shout.requests", "shout.responses", "sluice.lineage"] {
            try cluster.createTopic(topic, partitions: 1)
            try cluster.setPartitionLeader(topic: topic, partition: 0, broker: topic == "sluice.lineage" ? 2 : 1)
        }
        // Generous group timings: a coordinator on broker 2 answers heartbeats late too.
        let settings = try KafkaConfiguration([
            "bootstrap.servers": cluster.bootstrapServers, "fetch.wait.max.ms": "10", "socket.nagle.disable": "true",
            "session.timeout.ms": "30000", "heartbeat.interval.ms": "1000", "linger.ms": "1",
        ])
        let mode = try CaptureConfiguration.parse(capture, source: .code)
        var configuration = WorkerConfiguration(pipeline: AnyPipeline(Shout.pipeline), capture: mode, kafka: settings)
        configuration.metricsFactory = metrics.factory
        let worker = try Worker(configuration: configuration, logger: quiet)
        let serving = Task { try await worker.run() }
        let client = try PipelineClient(kafka: settings, pipeline: "shout", logger: quiet)

        let warmUp = try await client.call(Array(#""warm""#.utf8), to: "shout.requests", timeout: .seconds(60))
            .response()
        #expect(warmUp.output == Array(#""WARM""#.utf8))
        #expect(try await eventually { lineageAcknowledged(worker) == Shout.eventsPerRun })

        try cluster.setRoundTripTime(broker: 2, milliseconds: 3000)
        let response = try await client.call(Array(#""late""#.utf8), to: "shout.requests", timeout: .seconds(60))
            .response()
        let acknowledged = lineageAcknowledged(worker) - Shout.eventsPerRun
        #expect(response.output == Array(#""LATE""#.utf8) && response.capture == mode.label)
        #expect(acknowledged == acknowledgedAtResponse)
        // Either way the run's lineage is published in the end.
        #expect(try await eventually { lineageAcknowledged(worker) == 2 * Shout.eventsPerRun })

        try cluster.setRoundTripTime(broker: 2, milliseconds: 0)
        worker.stop()
        try await serving.value
        await client.close()
    }

    private let metrics = MetricsRegistry()

    /// `sluice_lineage_events_total` of the worker's metrics.
    private func lineageAcknowledged(_ worker: Worker) -> Int {
        worker.refreshMetrics()
        return metrics.value(of: "sluice_lineage_events_total{").map { Int($0) } ?? -1
    }

    private func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<1500 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}

@Suite("Deliveries that keep failing: a worker in process, its responses' broker down")
struct DeliveryStallTests {
    /// Responses live on broker 2. With broker 2 down, a response's delivery times out (`message.timeout.ms` 1 s)
    /// and is tried again; after `deliveryStallLimit` with nothing acknowledged the health says `stalled` (not
    /// live). Broker 2 back: the response is delivered, the call answered, and the worker is `serving` again.
    @Test func aWorkerWhoseDeliveriesKeepFailingIsStalledUntilTheyPass() async throws {
        let cluster = try MockCluster(brokers: 2, logger: quiet)
        for topic in ["shout.requests", "shout.responses"] {
            try cluster.createTopic(topic, partitions: 1)
            try cluster.setPartitionLeader(topic: topic, partition: 0, broker: topic == "shout.responses" ? 2 : 1)
        }
        let settings = try KafkaConfiguration([
            "bootstrap.servers": cluster.bootstrapServers, "fetch.wait.max.ms": "10", "socket.nagle.disable": "true",
            "session.timeout.ms": "30000", "heartbeat.interval.ms": "1000", "linger.ms": "1",
        ])
        var configuration = WorkerConfiguration(
            pipeline: AnyPipeline(Shout.pipeline), capture: try CaptureConfiguration.parse("MEMORY", source: .code),
            kafka: try settings.merging(["message.timeout.ms": "1000"]))
        configuration.deliveryStallLimit = .seconds(1)
        let worker = try Worker(configuration: configuration, logger: quiet)
        let serving = Task { try await worker.run() }
        let client = try PipelineClient(kafka: settings, pipeline: "shout", logger: quiet)
        #expect(
            try await client.call(Array(#""warm""#.utf8), to: "shout.requests", timeout: .seconds(60)).response().output
                == Array(#""WARM""#.utf8))
        #expect(worker.health.status == .serving && worker.health.isLive)

        try cluster.setBrokerDown(2)
        let call = Task {
            try await client.call(Array(#""later""#.utf8), to: "shout.requests", timeout: .seconds(60)).response()
        }
        var stalled = false
        for _ in 0..<300 where !stalled {
            stalled = worker.health.status == .stalled
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(stalled && !worker.health.isLive && worker.health.inFlight == 1)

        try cluster.setBrokerUp(2)
        #expect(try await call.value.output == Array(#""LATER""#.utf8))
        var live = false
        for _ in 0..<300 where !live {
            live = worker.health.status == .serving
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(live && worker.health.inFlight == 0)
        worker.stop()
        try await serving.value
        await client.close()
    }
}
