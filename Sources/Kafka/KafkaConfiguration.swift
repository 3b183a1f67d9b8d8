import CRdKafka

/// librdkafka properties (`bootstrap.servers`, `linger.ms`, ...), each checked by librdkafka when it is set.
///
/// A key librdkafka does not know, or a value it rejects, is a ``KafkaError`` whose message names the key (and the
/// value, unless the key looks secret), so a bad `--kafka key=value` fails at start-up, not later.
public struct KafkaConfiguration: Sendable, Equatable {
    /// The properties as set, by key.
    public private(set) var properties: [String: String] = [:]

    /// Checks and sets every property.
    /// - Throws: ``KafkaError`` with code ``KafkaError/Code/invalidArgument`` naming the first bad key or value.
    public init(_ properties: [String: String] = [:]) throws {
        for key in properties.keys.sorted() {
            try set(key, properties[key]!)
        }
    }

    /// Checks and sets `key=value` assignments, as given on a command line (`--kafka linger.ms=1`).
    /// - Throws: ``KafkaError`` naming an assignment without `=` or with an empty key, or a bad key or value.
    public init(assignments: [String]) throws {
        for assignment in assignments {
            guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
                throw KafkaError(
                    code: .invalidArgument,
                    message: "librdkafka property '\(assignment)' is not of the form key=value"
                )
            }
            try set(String(assignment[..<equals]), String(assignment[assignment.index(after: equals)...]))
        }
    }

    /// Checks and sets one property, replacing an earlier value of the same key.
    /// - Throws: ``KafkaError`` naming `key` (and `value`) when librdkafka rejects it.
    public mutating func set(_ key: String, _ value: String) throws {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(code: .invalidArgument, message: "librdkafka could not allocate a configuration")
        }
        defer { rd_kafka_conf_destroy(conf) }
        try Self.apply(key, value, to: conf)
        properties[key] = value
    }

    /// A copy with `properties` set on top of these.
    /// - Throws: ``KafkaError`` naming a bad key or value.
    public func merging(_ properties: [String: String]) throws -> KafkaConfiguration {
        var merged = self
        for key in properties.keys.sorted() { try merged.set(key, properties[key]!) }
        return merged
    }

    /// The value of `key`, if set.
    public subscript(key: String) -> String? { properties[key] }

    /// The value librdkafka uses for `key`: the one set (under this name or an alias), else librdkafka's default.
    public func effectiveValue(_ key: String) -> String? {
        guard let conf = try? makeNative() else { return nil }
        defer { rd_kafka_conf_destroy(conf) }
        var buffer = [CChar](repeating: 0, count: 512)
        var size = buffer.count
        guard rd_kafka_conf_get(conf, key, &buffer, &size) == RD_KAFKA_CONF_OK else { return nil }
        return String(errorBuffer: buffer)
    }

    // MARK: - Native configuration

    /// A new `rd_kafka_conf_t` holding these properties; the caller owns it.
    func makeNative() throws -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(code: .invalidArgument, message: "librdkafka could not allocate a configuration")
        }
        do {
            for key in properties.keys.sorted() { try Self.apply(key, properties[key]!, to: conf) }
        } catch {
            rd_kafka_conf_destroy(conf)
            throw error
        }
        return conf
    }

    static func apply(_ key: String, _ value: String, to conf: OpaquePointer) throws {
        var reason = [CChar](repeating: 0, count: 512)
        let result = rd_kafka_conf_set(conf, key, value, &reason, reason.count)
        guard result == RD_KAFKA_CONF_OK else {
            let shown = isSecret(key) ? "<redacted>" : "'\(value)'"
            let what = result == RD_KAFKA_CONF_UNKNOWN ? "unknown librdkafka property" : "invalid librdkafka property"
            throw KafkaError(
                code: .invalidArgument,
                message: "\(what) '\(key)' = \(shown): \(String(errorBuffer: reason))"
            )
        }
    }

    /// Whether a key holds a secret whose value must not appear in errors or logs.
    static func isSecret(_ key: String) -> Bool {
        let lowered = key.lowercased()
        return lowered.contains("password") || lowered.contains("secret") || lowered.hasSuffix(".key.pem")
    }
}

extension KafkaConfiguration {
    /// The version of the librdkafka the process runs with (`rd_kafka_version_str`), e.g. `2.0.2`.
    public static var librdkafkaVersion: String { String(cString: rd_kafka_version_str()) }
}
