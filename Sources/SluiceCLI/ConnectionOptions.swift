import ArgumentParser
import Foundation
import Kafka
import Logging

/// `--brokers`, `--kafka-config FILE` and repeated `--kafka key=value`: how every command that talks to a cluster
/// reaches it. The environment fills in what the command line leaves out (docs/configuration.md): `SLUICE_BROKERS`,
/// and one `SLUICE_KAFKA_<NAME>` variable per librdkafka property (`SLUICE_KAFKA_SECURITY_PROTOCOL=SASL_SSL` is
/// `security.protocol`), so that secrets can come from a Kubernetes Secret without appearing in a process's arguments.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Bootstrap servers of the Kafka cluster (host:port,...). Default: $SLUICE_BROKERS.")
    var brokers: String?

    @Option(
        name: .customLong("kafka-config"),
        help: "A file of librdkafka properties, one key=value a line ('#' starts a comment line).")
    var kafkaConfigFile: String?

    @Option(name: .customLong("kafka"), help: "A librdkafka property as key=value. Repeatable; wins over the file.")
    var kafka: [String] = []

    /// The prefix of environment variables that set librdkafka properties.
    static let propertyPrefix = "SLUICE_KAFKA_"

    func validate() throws {
        guard brokers ?? Self.environment["SLUICE_BROKERS"] != nil else {
            throw ValidationError("--brokers is required (or set SLUICE_BROKERS)")
        }
    }

    /// `--brokers`, else `SLUICE_BROKERS`.
    var bootstrapServers: String { brokers ?? Self.environment["SLUICE_BROKERS"] ?? "" }

    private static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The librdkafka property an environment variable sets: the name after ``propertyPrefix`` in lowercase, `_` read
    /// as `.` and `__` as `_` (`SLUICE_KAFKA_SASL_MECHANISMS` is `sasl.mechanisms`).
    static func property(fromVariable name: String) -> String? {
        guard name.hasPrefix(propertyPrefix), name.count > propertyPrefix.count else { return nil }
        return name.dropFirst(propertyPrefix.count).lowercased()
            .replacing("__", with: "\u{0}").replacing("_", with: ".").replacing("\u{0}", with: "_")
    }

    /// The `key=value` lines of a properties file: blank lines and lines starting with `#` are skipped.
    /// - Throws: a `ValidationError` naming the file and the line that is not `key=value`.
    static func properties(inFile path: String) throws -> [(key: String, value: String)] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("--kafka-config \(path): cannot read the file")
        }
        var properties: [(key: String, value: String)] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = line.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            guard let equals = line.firstIndex(of: "="), equals != line.startIndex else {
                throw ValidationError("--kafka-config \(path) line \(number + 1): expected key=value")
            }
            properties.append(
                (
                    String(line[..<equals]).trimmingCharacters(in: .whitespaces),
                    String(line[line.index(after: equals)...]).trimmingCharacters(in: .whitespaces)
                ))
        }
        return properties
    }

    /// The names of the cluster's topics: how a command finds out at start-up that the cluster answers and its
    /// topics exist.
    /// - Throws: a `ValidationError` naming the brokers when the cluster does not answer within 10 s.
    func existingTopics(logger: Logger) async throws -> Set<String> {
        let admin = try KafkaAdmin(configuration: configuration(), logger: logger)
        do {
            return Set(try await admin.listTopics(timeout: .seconds(10)).map(\.name))
        } catch {
            throw UnavailableError("the Kafka cluster at \(bootstrapServers) does not answer: \(error)")
        }
    }

    /// Refuses to start when a topic of `needed` is not among `existing`, naming it, unless `create`: then creates the
    /// missing ones with `partitions` partitions (the embedded broker, which cannot, creates them on first use).
    /// - Throws: ``UnavailableError`` naming the missing topics, or why they could not be created.
    func ensureTopics(
        _ needed: [String], existing: Set<String>, create: Bool, partitions: Int, logger: Logger
    ) async throws {
        let missing = needed.filter { !existing.contains($0) }
        guard !missing.isEmpty else { return }
        guard create else {
            throw UnavailableError(
                "topic(s) \(missing.joined(separator: ", ")) do not exist on \(bootstrapServers): create them, or pass --create-topics"
            )
        }
        do {
            let admin = try KafkaAdmin(configuration: configuration(), logger: logger)
            try await admin.createTopics(
                missing.map { NewTopic($0, partitions: partitions) }, ifNotExists: true, timeout: .seconds(10))
            logger.info("created topic(s) \(missing.joined(separator: ", ")) with \(partitions) partitions")
        } catch let error as KafkaError where error.code == .timedOut {
            // The embedded broker has no CreateTopics; it creates a topic on first use instead.
            logger.warning(
                "the cluster did not create \(missing.joined(separator: ", ")) (\(error)); relying on auto-creation")
        }
    }

    /// The properties of the environment, then of `--kafka-config`, then of `--kafka`, each over the one before, with
    /// `bootstrap.servers`.
    /// - Throws: a `ValidationError` naming a property librdkafka refuses and where it came from.
    func configuration() throws -> KafkaConfiguration {
        var configuration = try KafkaConfiguration()
        func set(_ key: String, _ value: String, from source: String) throws {
            do {
                try configuration.set(key, value)
            } catch let error as KafkaError {
                throw ValidationError("\(source): \(error)")
            }
        }
        for (name, value) in Self.environment.sorted(by: { $0.key < $1.key }) {
            if let key = Self.property(fromVariable: name) { try set(key, value, from: "environment variable \(name)") }
        }
        if let kafkaConfigFile {
            for (key, value) in try Self.properties(inFile: kafkaConfigFile) {
                try set(key, value, from: "--kafka-config \(kafkaConfigFile)")
            }
        }
        do {
            for (key, value) in try KafkaConfiguration(assignments: kafka).properties {
                try configuration.set(key, value)
            }
        } catch let error as KafkaError {
            throw ValidationError("\(error)")
        }
        try set("bootstrap.servers", bootstrapServers, from: "--brokers")
        return configuration
    }
}
