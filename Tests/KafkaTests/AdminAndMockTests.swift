import Foundation
import Kafka
import Testing

@Suite("Admin requests and the embedded mock cluster")
struct AdminAndMockTests {
    @Test func listTopicsShowsCreatedTopicsAndPartitions() async throws {
        let test = try TestCluster(brokers: 3)
        let topic = try test.topic("listed", partitions: 5)
        let admin = try KafkaAdmin(configuration: test.producerConfiguration(), logger: testLogger)
        let topics = try await admin.listTopics()
        #expect(topics.first { $0.name == topic }?.partitions == Array(0..<5))
    }

    @Test func createTopicsOnTheMockIsAClearError() async throws {
        // The 2.0.2 mock has no CreateTopics handler; a real cluster creates them (deploy/ and docs/operations.md).
        let test = try TestCluster()
        let admin = try KafkaAdmin(
            configuration: test.producerConfiguration(), logger: testLogger)
        let error = try await #require(throws: KafkaError.self) {
            try await admin.createTopics([NewTopic(test.name("new"), partitions: 3)], timeout: .seconds(5))
        }
        #expect(error.code == .timedOut)
        #expect(error.message.contains("CreateTopics"))
    }

    @Test func mockRefusesBadTopicsAndBrokerCounts() throws {
        let test = try TestCluster()
        let topic = try test.topic("twice", partitions: 1)
        #expect(throws: KafkaError.self) { try test.cluster.createTopic(topic, partitions: 1) }
        #expect(throws: KafkaError.self) { try test.cluster.createTopic(test.name("none"), partitions: 0) }
        #expect(throws: KafkaError.self) { try MockCluster(brokers: 0) }
        #expect(throws: KafkaError.self) { try test.cluster.setBrokerDown(9) }
    }

    @Test func leaderMoveIsFollowedByProducers() async throws {
        let test = try TestCluster(brokers: 3)
        let topic = try test.topic("leader", partitions: 1)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        _ = try await producer.send(OutgoingMessage(topic: topic, value: "before".bytes))
        for broker in Int32(1)...3 {
            try test.cluster.setPartitionLeader(topic: topic, partition: 0, broker: broker)
            let report = try await producer.send(OutgoingMessage(topic: topic, value: "on \(broker)".bytes))
            #expect(report.partition == 0)
        }
        await producer.close()
    }

    /// Set on the listening sockets as the cluster starts, and copied by Linux to each connection they accept; a
    /// cluster asked for the stock behaviour leaves Nagle's algorithm on.
    @Test(arguments: [true, false]) func brokerSocketsGetTCPNoDelayUnlessAskedNot(_ tcpNoDelay: Bool) async throws {
        let test = try TestCluster(brokers: 2, tcpNoDelay: tcpNoDelay)
        let topic = try test.topic("nodelay", partitions: 2)
        // A partition led by each broker: the producer connects to both.
        for partition in Int32(0)...1 {
            try test.cluster.setPartitionLeader(topic: topic, partition: partition, broker: partition + 1)
        }
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        for partition in Int32(0)...1 {
            _ = try await producer.send(OutgoingMessage(topic: topic, partition: partition, value: "x".bytes))
        }
        let ports = test.cluster.bootstrapServers.split(separator: ",").compactMap {
            $0.split(separator: ":").last.flatMap { UInt16($0) }
        }
        #expect(ports.count == 2)
        for port in ports {
            let accepted = acceptedSockets(onPort: port)
            #expect(!accepted.isEmpty, "no connection accepted on \(port)")
            #expect(accepted.allSatisfy { $0.noDelay == tcpNoDelay })
        }
        await producer.close()
    }

    /// The sockets of this process accepted on `port` (not listening), with their TCP_NODELAY setting.
    private func acceptedSockets(onPort port: UInt16) -> [(fd: Int32, noDelay: Bool)] {
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return descriptors.compactMap(Int32.init).compactMap { fd in
            var address = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let named = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            guard named == 0, address.sin_family == sa_family_t(AF_INET), UInt16(bigEndian: address.sin_port) == port
            else { return nil }
            var listening: Int32 = 0
            var noDelay: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0, listening == 0 else { return nil }
            size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, &size) == 0 else { return nil }
            return (fd, noDelay != 0)
        }
    }
}
