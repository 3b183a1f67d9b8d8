import CRdKafka
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A Kafka protocol request type, for ``MockCluster/pushRequestErrors(_:_:)``.
public struct KafkaRequestType: RawRepresentable, Hashable, Sendable {
    public let rawValue: Int16
    public init(rawValue: Int16) { self.rawValue = rawValue }

    public static let produce = KafkaRequestType(rawValue: 0)
    public static let fetch = KafkaRequestType(rawValue: 1)
    public static let listOffsets = KafkaRequestType(rawValue: 2)
    public static let metadata = KafkaRequestType(rawValue: 3)
    public static let offsetCommit = KafkaRequestType(rawValue: 8)
    public static let offsetFetch = KafkaRequestType(rawValue: 9)
    public static let findCoordinator = KafkaRequestType(rawValue: 10)
    public static let joinGroup = KafkaRequestType(rawValue: 11)
    public static let heartbeat = KafkaRequestType(rawValue: 12)
    public static let syncGroup = KafkaRequestType(rawValue: 14)
}

/// The embedded broker: librdkafka's mock cluster, an in-memory implementation of the Kafka protocol listening on
/// real TCP ports on 127.0.0.1, with fault injection.
///
/// Memory only and not for production (docs/operations.md, "The embedded broker"): a partition keeps at most 5 MiB,
/// transactions are not honoured, and all its brokers share one thread. Brokers are numbered from 1. Its connections
/// have TCP_NODELAY, as a real broker's do, unless `tcpNoDelay` is `false`.
public final class MockCluster: @unchecked Sendable {
    // @unchecked Sendable: the mock's functions hand their work to the mock's own thread and wait for it, so they
    // may be called from any thread; the pointers are immutable until `deinit`.
    private let owner: RDKafkaClient
    private let cluster: OpaquePointer
    /// The `bootstrap.servers` value that reaches this cluster.
    public let bootstrapServers: String
    /// How many brokers the cluster has (ids `1...brokerCount`).
    public let brokerCount: Int

    /// Starts a cluster of `brokers` brokers.
    /// - Parameter tcpNoDelay: whether the brokers' connections get TCP_NODELAY (a real broker sets it; librdkafka's
    ///   mock leaves Nagle's algorithm on, which delays small responses by up to 40 ms).
    /// - Throws: ``KafkaError`` if the count is outside 1...16 or librdkafka cannot start it.
    public init(
        brokers: Int = 1, tcpNoDelay: Bool = true, logger: Logger = Logger(label: "sluice.kafka.mock")
    ) throws {
        guard (1...16).contains(brokers) else {
            throw KafkaError(code: .invalidArgument, message: "mock broker count \(brokers) is outside 1...16")
        }
        // The handle only hosts the cluster and connects nowhere: its notices (no bootstrap.servers) are noise.
        owner = try RDKafkaClient(
            type: RD_KAFKA_PRODUCER, configuration: KafkaConfiguration(["log_level": "4"]), logger: logger,
            onError: { _ in })
        guard let cluster = rd_kafka_mock_cluster_new(owner.handle, Int32(brokers)) else {
            owner.destroyHandle()
            throw KafkaError(code: .invalidArgument, message: "librdkafka could not start a mock cluster")
        }
        self.cluster = cluster
        brokerCount = brokers
        bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
        if tcpNoDelay {
            let ports = Set(
                bootstrapServers.split(separator: ",").compactMap { $0.split(separator: ":").last }
                    .compactMap { UInt16($0) })
            let listeners = Self.setNoDelay(onListenersOf: ports)
            if listeners != brokers {
                logger.warning("TCP_NODELAY set on \(listeners) of the \(brokers) mock brokers' listening sockets")
            }
        }
    }

    /// Sets TCP_NODELAY on this process's listening TCP sockets bound to one of `ports`, before any client knows
    /// them: Linux copies the option to every socket a listener accepts.
    /// - Returns: how many listening sockets it set.
    private static func setNoDelay(onListenersOf ports: Set<UInt16>) -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var descriptors: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let fd = Int32(name) { descriptors.append(fd) }
        }
        var set = 0
        for fd in descriptors {
            var address = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let named = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            guard named == 0, address.sin_family == sa_family_t(AF_INET),
                ports.contains(UInt16(bigEndian: address.sin_port))
            else { continue }
            var listening: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) == 0, listening != 0 else { continue }
            var one: Int32 = 1
            if setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 {
                set += 1
            }
        }
        return set
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        owner.destroyHandle()
    }

    /// Creates `name` with `partitions` partitions, replicated on `min(brokers, 3)` brokers unless told otherwise.
    /// - Throws: ``KafkaError`` naming the topic if the mock refuses it (for example because it exists).
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int? = nil) throws {
        guard partitions >= 1 else {
            throw KafkaError(code: .invalidArgument, message: "topic \(name): partition count \(partitions) < 1")
        }
        let replicas = replicationFactor ?? min(brokerCount, 3)
        try KafkaError.check(
            rd_kafka_mock_topic_create(cluster, name, Int32(clamping: partitions), Int32(clamping: replicas)),
            "creating topic \(name)")
    }

    /// Takes broker `id` down: its connections close and it accepts none until ``setBrokerUp(_:)``.
    public func setBrokerDown(_ id: Int32) throws {
        try KafkaError.check(rd_kafka_mock_broker_set_down(cluster, id), "taking broker \(id) down")
    }

    /// Brings broker `id` back.
    public func setBrokerUp(_ id: Int32) throws {
        try KafkaError.check(rd_kafka_mock_broker_set_up(cluster, id), "bringing broker \(id) up")
    }

    /// Delays every response of broker `id` by `milliseconds`.
    public func setRoundTripTime(broker id: Int32, milliseconds: Int) throws {
        try KafkaError.check(
            rd_kafka_mock_broker_set_rtt(cluster, id, Int32(clamping: milliseconds)), "setting broker \(id) RTT")
    }

    /// Makes broker `id` the leader of `topic`'s `partition`.
    public func setPartitionLeader(topic: String, partition: Int32, broker id: Int32) throws {
        try KafkaError.check(
            rd_kafka_mock_partition_set_leader(cluster, topic, partition, id),
            "moving the leader of \(topic)[\(partition)] to broker \(id)")
    }

    /// Makes metadata requests for `topic` answer with `error` (for example
    /// ``KafkaError/Code/unknownTopicOrPartition``). The mock otherwise creates any topic a client asks about.
    public func setTopicError(_ topic: String, _ error: KafkaError.Code) {
        rd_kafka_mock_topic_set_error(cluster, topic, error.native)
    }

    /// Answers the next `errors.count` requests of type `request` with these errors, in order, on whichever broker
    /// receives them. ``KafkaError/Code/transport`` makes the broker drop the connection instead.
    public func pushRequestErrors(_ request: KafkaRequestType, _ errors: [KafkaError.Code]) {
        let native = errors.map(\.native)
        rd_kafka_mock_push_request_errors_array(cluster, request.rawValue, native.count, native)
    }
}
