import CRdKafka
import CSystemSupport
import Logging

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
/// Memory only and not for production (see DESIGN.md, "The broker"): a partition keeps at most 5 MiB, transactions
/// are not honoured, and all its brokers share one thread. Brokers are numbered from 1. Accepted sockets get
/// TCP_NODELAY as on a real broker, unless ``setsTCPNoDelay`` is turned off.
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
    /// - Throws: ``KafkaError`` if the count is outside 1...16 or librdkafka cannot start it.
    public init(brokers: Int = 1, logger: Logger = Logger(label: "sluice.kafka.mock")) throws {
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
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        owner.destroyHandle()
    }

    /// Whether sockets accepted by this process get TCP_NODELAY (default true, as a real broker). Process-wide.
    public static var setsTCPNoDelay: Bool {
        get { sluice_broker_sockets_nodelay() != 0 }
        set { sluice_broker_sockets_set_nodelay(newValue ? 1 : 0) }
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
