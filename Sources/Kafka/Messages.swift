/// One partition of one topic.
public struct TopicPartition: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public static func < (lhs: TopicPartition, rhs: TopicPartition) -> Bool {
        (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition)
    }

    public var description: String { "\(topic)[\(partition)]" }
}

/// A Kafka record header: a name and a value that may be absent (`nil`) or empty.
public struct KafkaHeader: Hashable, Sendable {
    public var name: String
    public var value: [UInt8]?

    public init(_ name: String, _ value: [UInt8]?) {
        self.name = name
        self.value = value
    }

    /// A header whose value is the UTF-8 bytes of `value`.
    public init(_ name: String, _ value: String) {
        self.init(name, Array(value.utf8))
    }
}

extension Array where Element == KafkaHeader {
    /// The value of the last header called `name` (Kafka allows repeats; the last one wins), or `nil`.
    public func value(named name: String) -> [UInt8]? {
        last(where: { $0.name == name })?.value
    }

    /// The value of the last header called `name` as UTF-8 text, or `nil` if absent or not UTF-8.
    public func string(named name: String) -> String? {
        value(named: name).flatMap { String(validating: $0, as: UTF8.self) }
    }
}

/// A record read from Kafka. A `nil` value is a tombstone; a `nil` key means the record had none.
public struct KafkaMessage: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// The record's timestamp in epoch milliseconds, if the record has one.
    public var timestampMilliseconds: Int64?

    public init(
        topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestampMilliseconds: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMilliseconds = timestampMilliseconds
    }

    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }
}

/// A record to produce. Without a partition, librdkafka's partitioner picks one from the key.
public struct OutgoingMessage: Sendable {
    public var topic: String
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]

    public init(
        topic: String, partition: Int32? = nil, key: [UInt8]? = nil, value: [UInt8]?, headers: [KafkaHeader] = []
    ) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// Where Kafka stored a produced record, from its delivery report.
public struct DeliveryReport: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}
