import Foundation
import Kafka
import Testing

@Suite("sluice broker, driven as a process")
struct BrokerCommandTests {
    @Test func printsBootstrapServersFirstCreatesTopicsAndStopsOnSIGTERM() async throws {
        let broker = try await BrokerProcess.start(["--topic", "alpha:3", "--topic", "beta", "--partitions", "5"])
        #expect(broker.bootstrapServers.hasPrefix("127.0.0.1:"))
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(["bootstrap.servers": broker.bootstrapServers]))
        let topics = try await admin.listTopics()
        #expect(topics.first { $0.name == "alpha" }?.partitions.count == 3)
        #expect(topics.first { $0.name == "beta" }?.partitions.count == 5)
        #expect(await broker.stop() == 0)
    }

    @Test func badArgumentsAreRefusedNamingTheValue() async throws {
        for (arguments, named) in [
            (["--topic", "x:0"], "x:0"), (["--brokers", "40"], "40"), (["--partitions", "0"], "0"),
        ] {
            let process = try ChildProcess(sluiceExecutable, ["broker"] + arguments)
            let status = await process.wait()
            #expect(status != 0)
            #expect(process.standardError.contains(named), "stderr: \(process.standardError)")
        }
    }

    /// The environment, then a properties file, then `--kafka` flags: each layer over the one before, and a bad
    /// property named with where it came from.
    @Test func connectionSettingsComeFromTheEnvironmentAFileAndFlags() async throws {
        let broker = try await BrokerProcess.start(["--topic", "layered:2"])
        let file = NSTemporaryDirectory() + "sluice-kafka-\(UUID().uuidString).properties"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "# a comment\n\nsecurity.protocol = ssl\n".write(toFile: file, atomically: true, encoding: .utf8)
        func topicsList(_ arguments: [String], _ environment: [String: String]) async throws -> (Int32, String, String)
        {
            let process = try ChildProcess(sluiceExecutable, ["topics", "list"] + arguments, environment: environment)
            let output = try await process.readRest()
            return (await process.wait(), output, process.standardError)
        }
        // The brokers from SLUICE_BROKERS; the file asks for TLS, the flag (and then the environment) for plaintext.
        let listed = try await topicsList(
            ["--kafka-config", file, "--kafka", "security.protocol=plaintext"],
            ["SLUICE_BROKERS": broker.bootstrapServers, "SLUICE_KAFKA_SECURITY_PROTOCOL": "ssl"])
        #expect(listed.0 == 0 && listed.1.contains("layered\t2"), "\(listed)")
        let badVariable = try await topicsList(
            [], ["SLUICE_BROKERS": broker.bootstrapServers, "SLUICE_KAFKA_LINGER_MS": "soon"])
        #expect(badVariable.0 != 0 && badVariable.2.contains("environment variable SLUICE_KAFKA_LINGER_MS"))
        try "linger.ms\n".write(toFile: file, atomically: true, encoding: .utf8)
        let badFile = try await topicsList(["--brokers", broker.bootstrapServers, "--kafka-config", file], [:])
        #expect(badFile.0 != 0 && badFile.2.contains("\(file) line 1: expected key=value"))
        let noBrokers = try await topicsList([], [:])
        #expect(noBrokers.0 != 0 && noBrokers.2.contains("--brokers is required (or set SLUICE_BROKERS)"))
        #expect(await broker.stop() == 0)
    }

    @Test func aForeignClientProducesAndConsumesInAGroup() async throws {
        let broker = try await BrokerProcess.start(["--topic", "foreign:4"])
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("python/group_client.py").path
        let client = try ChildProcess("/usr/bin/env", ["python3", script, broker.bootstrapServers, "foreign", "200"])
        let report = try await client.readRest()
        let status = await client.wait(timeout: .seconds(120))
        #expect(status == 0, "report: \(report) stderr: \(client.standardError)")
        let decoded = try JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any]
        #expect(decoded?["distinct"] as? Int == 200)
        #expect(decoded?["duplicates"] as? Int == 0)

        // What Python produced, a Swift consumer in another group reads with its keys and headers.
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration([
                "bootstrap.servers": broker.bootstrapServers, "group.id": "swift-reader",
                "auto.offset.reset": "earliest", "fetch.wait.max.ms": "10",
            ]),
            topics: ["foreign"])
        var seen = Set<String>()
        let deadline = ContinuousClock.now + .seconds(30)
        var iterator = consumer.messages.makeAsyncIterator()
        while seen.count < 200, ContinuousClock.now < deadline, let record = await iterator.next() {
            let value = String(decoding: record.value ?? [], as: UTF8.self)
            #expect(record.key.map { String(decoding: $0, as: UTF8.self) } == "k" + value.dropFirst())
            #expect(record.headers.string(named: "sluice-request-id") == "r" + value.dropFirst())
            seen.insert(value)
        }
        await consumer.close()
        #expect(seen.count == 200)
        #expect(await broker.stop() == 0)
    }
}
