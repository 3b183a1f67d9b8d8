import CRdKafka
import Logging

/// Owns one `rd_kafka_t` and is the context its C callbacks reach through librdkafka's opaque pointer.
///
/// The opaque pointer is unretained: a client destroys its handle (``destroyHandle(flags:)``) before it is released,
/// and librdkafka calls no callback after `rd_kafka_destroy` returns.
class RDKafkaClient: @unchecked Sendable {
    // @unchecked Sendable: `handle` is set once in `init` and librdkafka's handle is thread-safe for the calls made
    // through it; `logger` and `onError` are immutable. Subclasses keep their mutable state behind a `Mutex`.
    let logger: Logger
    let onError: @Sendable (KafkaError) -> Void
    private(set) var handle: OpaquePointer!

    /// Creates the handle.
    /// - Parameters:
    ///   - type: producer or consumer.
    ///   - configuration: the user's properties.
    ///   - configure: sets callbacks or forced properties on the native configuration before the handle exists.
    /// - Throws: ``KafkaError`` naming the bad property when librdkafka refuses the configuration.
    init(
        type: rd_kafka_type_t, configuration: KafkaConfiguration, logger: Logger,
        onError: @escaping @Sendable (KafkaError) -> Void,
        configure: (OpaquePointer) throws -> Void = { _ in }
    ) throws {
        self.logger = logger
        self.onError = onError
        let conf = try configuration.makeNative()
        do {
            try configure(conf)
        } catch {
            rd_kafka_conf_destroy(conf)
            throw error
        }
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(self).toOpaque())
        rd_kafka_conf_set_log_cb(conf, logCallback)
        rd_kafka_conf_set_error_cb(conf, errorCallback)
        var reason = [CChar](repeating: 0, count: 512)
        // rd_kafka_new takes ownership of conf only when it succeeds.
        guard let rk = rd_kafka_new(type, conf, &reason, reason.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(
                code: .invalidArgument, message: "librdkafka refused the configuration: \(String(errorBuffer: reason))")
        }
        handle = rk
    }

    /// Destroys the handle; no callback runs afterwards. Call exactly once.
    func destroyHandle(flags: Int32 = 0) {
        rd_kafka_destroy_flags(handle, flags)
    }

    // MARK: - Metadata

    /// Topics and their partition ids as the cluster reports them, sorted by name. Blocks: call it on a
    /// ``DedicatedThread``.
    func fetchTopics(timeoutMilliseconds: Int32) throws -> [(name: String, partitions: [Int32])] {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        try KafkaError.check(rd_kafka_metadata(handle, 1, nil, &metadata, timeoutMilliseconds), "reading metadata")
        guard let metadata else { return [] }
        defer { rd_kafka_metadata_destroy(metadata) }
        var topics: [(name: String, partitions: [Int32])] = []
        for i in 0..<Int(metadata.pointee.topic_cnt) {
            let topic = metadata.pointee.topics[i]
            guard topic.err == RD_KAFKA_RESP_ERR_NO_ERROR else { continue }
            let partitions = (0..<Int(topic.partition_cnt)).map { topic.partitions[$0].id }.sorted()
            topics.append((String(cString: topic.topic), partitions))
        }
        return topics.sorted { $0.name < $1.name }
    }
}

// MARK: - C callbacks

/// The client whose handle `rk` is (librdkafka's opaque pointer), for the C callbacks of this module.
func client(_ rk: OpaquePointer?) -> RDKafkaClient? {
    guard let rk, let opaque = rd_kafka_opaque(rk) else { return nil }
    return Unmanaged<RDKafkaClient>.fromOpaque(opaque).takeUnretainedValue()
}

/// librdkafka's log lines (syslog levels) to swift-log. Called on librdkafka's own threads.
private let logCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void =
    {
        rk, level, facility, line in
        guard let client = client(rk), let line else { return }
        let swiftLevel: Logger.Level =
            switch level {
            case ...2: .critical
            case 3: .error
            case 4: .warning
            case 5: .notice
            case 6: .info
            default: .debug
            }
        client.logger.log(
            level: swiftLevel, "\(String(cString: line))",
            metadata: ["facility": .string(facility.map { String(cString: $0) } ?? "")]
        )
    }

/// Client-level errors (a broker unreachable, all brokers down, ...). librdkafka retries on its own; these are
/// reported so that they surface, and logged.
private let errorCallback:
    @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void = {
        _, code, reason, opaque in
        guard let opaque else { return }
        let client = Unmanaged<RDKafkaClient>.fromOpaque(opaque).takeUnretainedValue()
        let error = KafkaError(code: KafkaError.Code(rawValue: code), message: reason.map { String(cString: $0) } ?? "")
        client.logger.warning("librdkafka: \(error)")
        client.onError(error)
    }
