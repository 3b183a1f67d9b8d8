import Foundation
import Kafka
import Logging
import Synchronization

/// A mock cluster for one test, with unique topic and group names and client settings suited to the mock.
struct TestCluster {
    let cluster: MockCluster
    private let prefix: String

    init(brokers: Int = 1, tcpNoDelay: Bool = true) throws {
        cluster = try MockCluster(brokers: brokers, tcpNoDelay: tcpNoDelay, logger: testLogger)
        prefix = "t\(UInt32.random(in: 0...UInt32.max))"
    }

    /// A name no other test uses.
    func name(_ base: String) -> String { "\(prefix)-\(base)" }

    /// Creates a topic with a unique name and returns that name.
    func topic(_ base: String, partitions: Int) throws -> String {
        let topic = name(base)
        try cluster.createTopic(topic, partitions: partitions)
        return topic
    }

    func producerConfiguration(_ extra: [String: String] = [:]) throws -> KafkaConfiguration {
        try KafkaConfiguration([
            "bootstrap.servers": cluster.bootstrapServers,
            "linger.ms": "1",
            "socket.nagle.disable": "true",
        ]).merging(extra)
    }

    func consumerConfiguration(group: String, _ extra: [String: String] = [:]) throws -> KafkaConfiguration {
        try KafkaConfiguration([
            "bootstrap.servers": cluster.bootstrapServers,
            "group.id": name(group),
            "auto.offset.reset": "earliest",
            // The mock holds an empty fetch for the whole wait (docs/operations.md): keep it short.
            "fetch.wait.max.ms": "10",
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "200",
            "socket.nagle.disable": "true",
        ]).merging(extra)
    }
}

let testLogger: Logger = {
    var logger = Logger(label: "sluice.tests")
    logger.logLevel =
        ProcessInfo.processInfo.environment["SLUICE_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
    return logger
}()

/// Waits until `condition` holds, checking every 20 ms, for at most `timeout`.
/// - Returns: whether it held in time.
@discardableResult
func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// Reads `count` records from `consumer`, or fewer if `timeout` passes first.
func read(_ count: Int, from consumer: KafkaConsumer, timeout: Duration = .seconds(30)) async -> [KafkaMessage] {
    await withTaskGroup(of: [KafkaMessage].self) { group in
        group.addTask {
            var records: [KafkaMessage] = []
            for await record in consumer.messages {
                records.append(record)
                if records.count == count { break }
            }
            return records
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return []
        }
        let first = await group.next()!
        group.cancelAll()
        if first.count == count { return first }
        // The timer won: the reader was cancelled and returns what it had.
        return first.isEmpty ? await group.next() ?? [] : first
    }
}

/// Reads from every consumer at once until they have delivered `count` records between them, or `timeout` passes.
/// - Returns: the records each consumer delivered, in the order of `consumers`.
func read(_ count: Int, from consumers: [KafkaConsumer], timeout: Duration = .seconds(30)) async -> [[KafkaMessage]] {
    let delivered = Collector<Int>()
    return await withTaskGroup(of: (Int, [KafkaMessage]).self) { group in
        for (index, consumer) in consumers.enumerated() {
            group.addTask {
                var records: [KafkaMessage] = []
                let deadline = ContinuousClock.now + timeout
                while delivered.all.reduce(0, +) < count && ContinuousClock.now < deadline {
                    // Poll in short slices so that a reader stops soon after the others reach the count.
                    let slice = await read(1, from: consumer, timeout: .milliseconds(200))
                    records += slice
                    delivered.append(slice.count)
                }
                return (index, records)
            }
        }
        var results = Array(repeating: [KafkaMessage](), count: consumers.count)
        for await (index, records) in group { results[index] = records }
        return results
    }
}

/// Values collected from callbacks on other threads.
final class Collector<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { values.withLock { $0.append(value) } }
    var all: [Value] { values.withLock { $0 } }
}

extension String {
    var bytes: [UInt8] { Array(utf8) }
}

extension Array where Element == UInt8 {
    var text: String { String(decoding: self, as: UTF8.self) }
}
