import CRdKafka

/// An error reported by librdkafka or by this module's own checks, carrying librdkafka's error code.
///
/// Every `rd_kafka_resp_err_t` and `rd_kafka_error_t` of the module becomes a ``KafkaError`` here, in one place.
public struct KafkaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A librdkafka error code (`rd_kafka_resp_err_t`): negative values are the client's own, positive ones the
    /// broker's.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        init(_ native: rd_kafka_resp_err_t) { rawValue = native.rawValue }

        var native: rd_kafka_resp_err_t { rd_kafka_resp_err_t(rawValue: rawValue) }

        /// librdkafka's name of the code, for example `UNKNOWN_TOPIC_OR_PART` or `_QUEUE_FULL`.
        public var name: String { String(cString: rd_kafka_err2name(native)) }
        public var description: String { name }

        public static let queueFull = Code(RD_KAFKA_RESP_ERR__QUEUE_FULL)
        public static let timedOut = Code(RD_KAFKA_RESP_ERR__TIMED_OUT)
        public static let messageTimedOut = Code(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT)
        public static let invalidArgument = Code(RD_KAFKA_RESP_ERR__INVALID_ARG)
        public static let unknownTopic = Code(RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
        public static let unknownTopicOrPartition = Code(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        public static let topicAuthorizationFailed = Code(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
        public static let topicAlreadyExists = Code(RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        public static let messageSizeTooLarge = Code(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        public static let recordListTooLarge = Code(RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE)
        /// The group coordinator refuses a request while the group rebalances.
        public static let rebalanceInProgress = Code(RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS)
        /// The group has moved to a newer generation than the member's: it rejoins.
        public static let illegalGeneration = Code(RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION)
        public static let notLeaderForPartition = Code(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION)
        public static let transport = Code(RD_KAFKA_RESP_ERR__TRANSPORT)
        public static let allBrokersDown = Code(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        public static let purgedInQueue = Code(RD_KAFKA_RESP_ERR__PURGE_QUEUE)
        public static let purgedInFlight = Code(RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
        public static let unsupportedFeature = Code(RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE)
        public static let destroyed = Code(RD_KAFKA_RESP_ERR__DESTROY)
        public static let noOffset = Code(RD_KAFKA_RESP_ERR__NO_OFFSET)
        /// The client is closed; nothing more can be sent or received through it.
        public static let closed = Code(RD_KAFKA_RESP_ERR__DESTROY)

        /// Whether producing the same record again can succeed. `false` for what the record or the topic is: too
        /// large (for the producer's `message.max.bytes` or the broker's limit), invalid, a topic or partition that
        /// does not exist after librdkafka's own metadata wait, or one this client may not write to. Everything else
        /// (timeouts, transport, leader changes, a full queue, a closed or purged client) may succeed later.
        public var isRetriable: Bool { !Self.permanentForProducing.contains(rawValue) }

        private static let permanentForProducing: Set<Int32> = [
            RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE,
            RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_RECORD,
            RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION,
            RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED,
            RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS, RD_KAFKA_RESP_ERR_POLICY_VIOLATION,
            RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT, RD_KAFKA_RESP_ERR__INVALID_ARG,
        ].reduce(into: []) { $0.insert($1.rawValue) }
    }

    public let code: Code
    /// What failed and why, in words; names the offending key, topic or value where there is one.
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.name): \(message)" }
}

// MARK: - Translation from librdkafka

extension KafkaError {
    /// An error for `err` while doing `context` (for example "subscribing to [a, b]").
    init(_ err: rd_kafka_resp_err_t, _ context: String) {
        self.init(code: Code(err), message: "\(context): \(String(cString: rd_kafka_err2str(err)))")
    }

    /// Reads an `rd_kafka_error_t` and destroys it: the caller must not use `error` again.
    static func consuming(_ error: OpaquePointer, _ context: String) -> KafkaError {
        defer { rd_kafka_error_destroy(error) }
        return KafkaError(
            code: Code(rd_kafka_error_code(error)),
            message: "\(context): \(String(cString: rd_kafka_error_string(error)))"
        )
    }

    /// Throws unless `err` is `RD_KAFKA_RESP_ERR_NO_ERROR`.
    static func check(_ err: rd_kafka_resp_err_t, _ context: @autoclosure () -> String) throws {
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context()) }
    }

    /// Throws if `error` is an `rd_kafka_error_t`, destroying it; returns if it is `nil`.
    static func check(_ error: OpaquePointer?, _ context: @autoclosure () -> String) throws {
        if let error { throw consuming(error, context()) }
    }

    static func closed(_ what: String) -> KafkaError {
        KafkaError(code: .closed, message: "\(what): the client is closed")
    }
}

extension String {
    /// The text librdkafka wrote into a zero-terminated error buffer.
    init(errorBuffer buffer: [CChar]) {
        self.init(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
