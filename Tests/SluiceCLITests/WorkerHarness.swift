import Foundation
import Kafka
import Testing

/// A `sluice broker` with a pipeline's topics, and helpers to drive `sluice worker` processes and Python clients
/// against it.
struct ServingCluster {
    let broker: BrokerProcess
    let pipeline: String

    var bootstrap: String { broker.bootstrapServers }
    var requests: String { "\(pipeline).requests" }
    var responses: String { "\(pipeline).responses" }
    var deadLetters: String { "\(pipeline).dlq" }
    let lineage = "sluice.lineage"

    /// - Parameter gatewayReplyPartitions: when given, also creates `sluice gateway`'s reply topic with as many
    ///   partitions.
    static func start(
        pipeline: String = "text-stats", partitions: Int = 4, deadLetterPartitions: Int = 2,
        gatewayReplyPartitions: Int? = nil
    ) async throws -> ServingCluster {
        let broker = try await BrokerProcess.start(
            [
                "--topic", "\(pipeline).requests:\(partitions)", "--topic", "\(pipeline).responses:\(partitions)",
                "--topic", "\(pipeline).dlq:\(deadLetterPartitions)", "--topic", "sluice.lineage:4",
            ] + (gatewayReplyPartitions.map { ["--topic", "sluice.gateway.replies:\($0)"] } ?? []))
        return ServingCluster(broker: broker, pipeline: pipeline)
    }

    /// The librdkafka flags of the workers and gateways the tests start: short group timings (the embedded broker's
    /// joins take `session.timeout.ms` - 1 s) and quick fetches and sends.
    static let servingKafkaFlags = [
        "--kafka", "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=200", "--kafka", "fetch.wait.max.ms=10",
        "--kafka", "linger.ms=1", "--kafka", "socket.nagle.disable=true",
    ]

    /// Starts a worker (`environment` added to the test's own) and waits until it owns partitions (`/health`), at most
    /// 60 s.
    func startWorker(
        _ arguments: [String] = [], environment: [String: String] = [:], waitForPartitions: Bool = true
    ) async throws -> ServiceProcess {
        let process = try ChildProcess(
            sluiceExecutable,
            [
                "worker", "--brokers", bootstrap, "--pipeline", pipeline, "--http", "127.0.0.1:0",
            ] + Self.servingKafkaFlags + arguments, environment: environment)
        let worker = try await ServiceProcess(process: process)
        if waitForPartitions {
            try await worker.waitUntil { $0.assignedPartitions > 0 }
        }
        return worker
    }

    /// Starts `sluice gateway` on a port of its own and waits until it reads a reply partition (`/health`), at most
    /// 60 s.
    func startGateway(_ arguments: [String] = []) async throws -> ServiceProcess {
        let process = try ChildProcess(
            sluiceExecutable,
            [
                "gateway", "--brokers", bootstrap, "--http", "127.0.0.1:0",
            ] + Self.servingKafkaFlags + arguments)
        let gateway = try await ServiceProcess(process: process)
        try await gateway.waitUntilObject { $0["status"] as? String == "serving" }
        return gateway
    }

    /// Starts `sluice materialize` into `store` and waits until it owns partitions, at most 60 s.
    func startMaterializer(
        store: String, group: String = "sluice.materializer", _ arguments: [String] = []
    )
        async throws -> ServiceProcess
    {
        let process = try ChildProcess(
            sluiceExecutable,
            [
                "materialize", "--brokers", bootstrap, "--store", store, "--group", group, "--http", "127.0.0.1:0",
                "--kafka", "session.timeout.ms=6000", "--kafka", "heartbeat.interval.ms=200",
                "--kafka", "fetch.wait.max.ms=10", "--kafka", "socket.nagle.disable=true",
            ] + arguments)
        let materializer = try await ServiceProcess(process: process)
        try await materializer.waitUntil { $0.assignedPartitions > 0 }
        return materializer
    }

    /// Produces one record per line (`KEY<TAB>VALUE` or `VALUE`) to `topic` with the Python client.
    func produce(_ lines: [String], to topic: String) async throws {
        let shell = try ChildProcess(
            "/usr/bin/env", ["python3", pythonScript("produce_lines.py"), bootstrap, topic],
            input: lines.joined(separator: "\n") + "\n")
        _ = try await shell.readRest()
        #expect(await shell.wait(timeout: .seconds(60)) == 0)
    }

    /// Produces `specs` with the Python client and returns the responses it read (see request_reply.py).
    func call(_ specs: [[String: Any]], timeout: Int = 60) async throws -> (status: Int32, responses: [[String: Any]]) {
        let input = try specs.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
            .joined(separator: "\n")
        let shell = try ChildProcess(
            "/usr/bin/env",
            ["python3", pythonScript("request_reply.py"), bootstrap, requests, responses, String(timeout)],
            input: input + "\n")
        let lines = try await shell.readRest().split(separator: "\n")
        let status = await shell.wait(timeout: .seconds(timeout + 30))
        let responses = try lines.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
        return (status, responses)
    }

    /// Every message of `topic` (see read_topic.py).
    /// - Throws: when the reader did not read the topic to its end (exit status other than 0).
    func read(_ topic: String) async throws -> [[String: Any]] {
        let reader = try ChildProcess("/usr/bin/env", ["python3", pythonScript("read_topic.py"), bootstrap, topic])
        let lines = try await reader.readRest().split(separator: "\n")
        let status = await reader.wait(timeout: .seconds(60))
        guard status == 0 else {
            throw KafkaError(
                code: .timedOut, message: "reading \(topic) ended with status \(status): \(reader.standardError)")
        }
        return try lines.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
    }

    /// The lineage events on the lineage topic, record after record: each event of a lineage record v2 with the
    /// record's run members (`run_id`, `pipeline`, `request_id`, `capture`, `attempt`) and its `partition`, `offset`
    /// and `key`.
    func lineageEvents() async throws -> [[String: Any]] {
        try await read(lineage).flatMap { record -> [[String: Any]] in
            let value = try #require(record["value"] as? [String: Any])
            #expect(value["v"] as? Int == 2, "\(value)")
            let events = try #require(value["events"] as? [[String: Any]])
            return events.map { event in
                var event = event
                for member in ["run_id", "pipeline", "request_id", "capture", "attempt"] {
                    event[member] = value[member]
                }
                for member in ["partition", "offset", "key"] { event[member] = record[member] }
                return event
            }
        }
    }

    /// The offsets `group` has committed for `topic`, by partition (see committed.py).
    func committedOffsets(group: String, topic: String) async throws -> [Int: Int] {
        let reader = try ChildProcess(
            "/usr/bin/env", ["python3", pythonScript("committed.py"), bootstrap, group, topic])
        let output = try await reader.readRest()
        #expect(await reader.wait(timeout: .seconds(30)) == 0, "\(reader.standardError)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Int])
        return Dictionary(uniqueKeysWithValues: object.map { (Int($0.key)!, $0.value) })
    }

    func stop() async {
        _ = await broker.stop()
    }
}

/// Whether the Prometheus text has `sample` (a name, its labels and its value) as a whole line: the exposition lists
/// series in no fixed order, so a sample may be the last line, without a newline after it.
func hasSample(_ metrics: String, _ sample: String) -> Bool {
    metrics.split(separator: "\n").contains { $0 == sample }
}

/// A file of this repository, by its path from the repository's root.
func repositoryFile(_ path: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../\(path)").standardized
        .path
}

func pythonScript(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/\(name)").path
}

/// A `sluice worker` or `sluice materialize` process and its `/health` and `/metrics`.
struct ServiceProcess {
    let process: ChildProcess
    let port: Int

    init(process: ChildProcess) async throws {
        self.process = process
        // The worker logs the port it serves /health on; wait for that line (at most 30 s).
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            if let match = process.standardError.firstMatch(of: /health and metrics on .* port (\d+)/) {
                port = Int(match.1)!
                return
            }
            guard ContinuousClock.now < deadline, process.isRunning else {
                throw KafkaError(code: .timedOut, message: "process did not start: \(process.standardError)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    struct Health {
        var status: String
        var assignedPartitions: Int
        var inFlight: Int

        init(_ object: [String: Any]) {
            status = object["status"] as? String ?? ""
            assignedPartitions = object["assigned_partitions"] as? Int ?? -1
            inFlight = object["in_flight"] as? Int ?? -1
        }
    }

    func health() async throws -> Health? {
        try await healthObject().map(Health.init)
    }

    func metrics() async throws -> String? { try await httpGet("/metrics") }

    /// Requests answered so far (the count of `sluice_request_duration_seconds`).
    func answered() async throws -> Int? {
        guard let metrics = try await metrics(),
            let match = metrics.firstMatch(of: /sluice_request_duration_seconds_count\{[^}]*\} (\d+)/)
        else { return nil }
        return Int(match.1)
    }

    /// Polls `/metrics` until at least `count` requests are answered, at most `timeout`.
    func waitUntilAnswered(_ count: Int, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let answered = try? await answered(), answered >= count { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw KafkaError(code: .timedOut, message: "never answered \(count): \(process.standardError.suffix(2000))")
    }

    /// The whole `/health` object.
    func healthObject() async throws -> [String: Any]? {
        guard let body = try await httpGet("/health") else { return nil }
        return try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
    }

    /// Polls `/health` until `condition` holds, at most `timeout`.
    func waitUntil(timeout: Duration = .seconds(60), _ condition: (Health) -> Bool) async throws {
        try await waitUntilObject(timeout: timeout) { condition(Health($0)) }
    }

    /// Polls `/health` until `condition` holds for its whole object, at most `timeout`.
    func waitUntilObject(timeout: Duration = .seconds(60), _ condition: ([String: Any]) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let object = try? await healthObject(), condition(object) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw KafkaError(code: .timedOut, message: "health never matched: \(process.standardError.suffix(2000))")
    }

    /// The status code and body of `GET path`, whatever the status.
    func httpStatus(_ path: String) async throws -> (status: Int, body: String) {
        let curl = try ChildProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import sys, urllib.request, urllib.error
                try:
                    answer = urllib.request.urlopen(sys.argv[1], timeout=5); print(answer.status); print(answer.read().decode())
                except urllib.error.HTTPError as error:
                    print(error.code); print(error.read().decode())
                """,
                "http://127.0.0.1:\(port)\(path)",
            ])
        let output = try await curl.readRest()
        #expect(await curl.wait(timeout: .seconds(10)) == 0)
        let lines = output.split(separator: "\n", maxSplits: 1)
        return (Int(lines.first ?? "") ?? -1, lines.count > 1 ? String(lines[1]) : "")
    }

    private func httpGet(_ path: String) async throws -> String? {
        let curl = try ChildProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode(),end='')",
                "http://127.0.0.1:\(port)\(path)",
            ])
        let body = try await curl.readRest()
        return await curl.wait(timeout: .seconds(10)) == 0 ? body : nil
    }

    func stop() async -> Int32 {
        process.signal(SIGTERM)
        return await process.wait(timeout: .seconds(60))
    }
}
