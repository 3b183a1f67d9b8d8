import CRdKafka

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Partition lists

extension TopicPartition {
    /// The topic partitions of a native list, in its order.
    static func array(from list: UnsafePointer<rd_kafka_topic_partition_list_t>?) -> [TopicPartition] {
        guard let list else { return [] }
        return (0..<Int(list.pointee.cnt)).map { index in
            let element = list.pointee.elems[index]
            return TopicPartition(String(cString: element.topic), element.partition)
        }
    }

    /// Calls `body` with a native list of `partitions`, each with its offset if given; destroys the list afterwards.
    static func withNativeList<R>(
        _ partitions: [(TopicPartition, Int64?)],
        _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws -> R
    ) rethrows -> R {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (partition, offset) in partitions {
            let element = rd_kafka_topic_partition_list_add(list, partition.topic, partition.partition)!
            if let offset { element.pointee.offset = offset }
        }
        return try body(list)
    }
}

// MARK: - Messages

/// Turns native consumer records into ``KafkaMessage`` values. Keeps the last topic name it decoded, so records of
/// the same topic share one `String`. Used by one thread at a time (the consumer's poll thread).
struct MessageDecoder {
    private var lastTopicHandle: OpaquePointer?
    private var lastTopicName = ""
    /// Header names seen so far (at most ``headerNameLimit``), reused rather than made again for every record: a
    /// name longer than 15 bytes, as `sluice-request-id`, is a heap string.
    private var headerNames: [String] = []
    private static let headerNameLimit = 32

    mutating func decode(_ native: UnsafeMutablePointer<rd_kafka_message_t>) -> KafkaMessage {
        let record = native.pointee
        let topic = topicName(record.rkt)
        let key = record.key.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: record.key_len)) }
        let value = record.payload.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: record.len)) }
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(native, &timestampType)
        return KafkaMessage(
            topic: topic, partition: record.partition, offset: record.offset, key: key, value: value,
            headers: headers(of: native),
            timestampMilliseconds: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp
        )
    }

    private mutating func topicName(_ rkt: OpaquePointer?) -> String {
        guard let rkt else { return "" }
        let name = rd_kafka_topic_name(rkt)!
        // The handle alone is not proof (a freed handle's address can be reused): compare the name too.
        if rkt == lastTopicHandle, lastTopicName.withCString({ strcmp($0, name) == 0 }) { return lastTopicName }
        lastTopicHandle = rkt
        lastTopicName = String(cString: name)
        return lastTopicName
    }

    private mutating func headers(of native: UnsafeMutablePointer<rd_kafka_message_t>) -> [KafkaHeader] {
        var headers: OpaquePointer?
        guard rd_kafka_message_headers(native, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR, let headers else { return [] }
        var result: [KafkaHeader] = []
        result.reserveCapacity(rd_kafka_header_cnt(headers))
        var index = 0
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while rd_kafka_header_get_all(headers, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
            let bytes = value.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: size)) }
            result.append(KafkaHeader(name.map { headerName($0) } ?? "", bytes))
            index += 1
        }
        return result
    }

    private mutating func headerName(_ name: UnsafePointer<CChar>) -> String {
        let length = strlen(name)
        for known in headerNames where known.utf8.count == length {
            let same = known.utf8.withContiguousStorageIfAvailable {
                length == 0 || memcmp($0.baseAddress!, name, length) == 0
            }
            if same == true { return known }
        }
        let made = String(cString: name)
        if headerNames.count < Self.headerNameLimit { headerNames.append(made) }
        return made
    }
}
