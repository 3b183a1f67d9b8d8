import CRdKafka
import Logging
import SystemSupport

/// A topic to create: its name, partition count, replication factor and topic-level settings.
public struct NewTopic: Sendable, Hashable {
    public var name: String
    public var partitions: Int
    public var replicationFactor: Int
    public var config: [String: String]

    public init(_ name: String, partitions: Int, replicationFactor: Int = 1, config: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.config = config
    }
}

/// A topic as the cluster's metadata describes it.
public struct TopicDescription: Sendable, Hashable {
    public var name: String
    public var partitions: [Int32]
}

/// Cluster administration: create topics, list topics and their partitions.
///
/// Requests run on threads of their own; the async methods never block the cooperative pool.
public final class KafkaAdmin: Sendable {
    private let client: ProducerClient

    /// - Throws: ``KafkaError`` naming a property librdkafka refuses.
    public init(configuration: KafkaConfiguration, logger: Logger = Logger(label: "sluice.kafka.admin")) throws {
        client = try ProducerClient(configuration: configuration, logger: logger, onError: { _ in })
    }

    deinit { client.shutdown() }

    /// Every topic of the cluster (internal ones included), sorted by name.
    /// - Throws: ``KafkaError`` if the cluster does not answer within `timeout`.
    public func listTopics(timeout: Duration = .seconds(10)) async throws -> [TopicDescription] {
        let milliseconds = ProducerClient.milliseconds(timeout)
        return try await DedicatedThread.run(name: "sluice-kadmin") { [client] in
            try client.fetchTopics(timeoutMilliseconds: milliseconds).map {
                TopicDescription(name: $0.name, partitions: $0.partitions)
            }
        }
    }

    /// Creates `topics`.
    /// - Parameter ifNotExists: when true, a topic that already exists is not an error.
    /// - Throws: ``KafkaError`` naming the first topic the cluster refused, or the request's own failure. A cluster
    ///   without the CreateTopics API, such as the embedded mock broker, gives ``KafkaError/Code/timedOut`` after
    ///   `timeout`: librdkafka waits for a broker that offers the API.
    public func createTopics(
        _ topics: [NewTopic], ifNotExists: Bool = true, timeout: Duration = .seconds(30)
    ) async throws {
        guard !topics.isEmpty else { return }
        let milliseconds = ProducerClient.milliseconds(timeout)
        try await DedicatedThread.run(name: "sluice-kadmin") { [client] in
            try Self.createTopics(topics, ifNotExists: ifNotExists, milliseconds: milliseconds, handle: client.handle)
        }
    }

    private static func createTopics(
        _ topics: [NewTopic], ifNotExists: Bool, milliseconds: Int32, handle: OpaquePointer
    ) throws {
        var reason = [CChar](repeating: 0, count: 512)
        var requests: [OpaquePointer?] = []
        defer { for request in requests { rd_kafka_NewTopic_destroy(request) } }
        for topic in topics {
            guard
                let request = rd_kafka_NewTopic_new(
                    topic.name, Int32(clamping: topic.partitions), Int32(clamping: topic.replicationFactor),
                    &reason, reason.count)
            else {
                throw KafkaError(code: .invalidArgument, message: "topic \(topic.name): \(String(errorBuffer: reason))")
            }
            requests.append(request)
            for (key, value) in topic.config.sorted(by: { $0.key < $1.key }) {
                try KafkaError.check(
                    rd_kafka_NewTopic_set_config(request, key, value), "topic \(topic.name): \(key)=\(value)")
            }
        }
        let options = rd_kafka_AdminOptions_new(handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        try KafkaError.check(
            rd_kafka_AdminOptions_set_request_timeout(options, milliseconds, &reason, reason.count),
            "request timeout \(milliseconds) ms")
        try KafkaError.check(
            rd_kafka_AdminOptions_set_operation_timeout(options, milliseconds, &reason, reason.count),
            "operation timeout \(milliseconds) ms")
        let results = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(results) }
        rd_kafka_CreateTopics(handle, &requests, requests.count, options, results)
        guard let event = rd_kafka_queue_poll(results, milliseconds &+ 5000) else {
            throw KafkaError(code: .timedOut, message: "creating topics: no answer within \(milliseconds) ms")
        }
        defer { rd_kafka_event_destroy(event) }
        let names = topics.map(\.name)
        let err = rd_kafka_event_error(event)
        if err == RD_KAFKA_RESP_ERR__TIMED_OUT {
            throw KafkaError(
                code: .timedOut,
                message: "creating topics \(names): no broker offered CreateTopics within \(milliseconds) ms "
                    + "(the embedded broker never does: create topics with `sluice broker --topic`)")
        }
        try KafkaError.check(err, "creating topics \(names)")
        var count = 0
        guard let result = rd_kafka_event_CreateTopics_result(event),
            let topicResults = rd_kafka_CreateTopics_result_topics(result, &count)
        else { return }
        for index in 0..<count {
            let topicResult = topicResults[index]
            let err = rd_kafka_topic_result_error(topicResult)
            if err == RD_KAFKA_RESP_ERR_NO_ERROR || (ifNotExists && err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                continue
            }
            let name = String(cString: rd_kafka_topic_result_name(topicResult))
            let detail = rd_kafka_topic_result_error_string(topicResult).map { String(cString: $0) } ?? ""
            throw KafkaError(code: KafkaError.Code(err), message: "creating topic \(name): \(detail)")
        }
    }
}
