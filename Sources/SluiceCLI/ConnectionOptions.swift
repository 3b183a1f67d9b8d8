import ArgumentParser
import Kafka
import Logging

/// `--brokers` and repeated `--kafka key=value`: how every command that talks to a cluster reaches it.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Bootstrap servers of the Kafka cluster (host:port,...).")
    var brokers: String

    @Option(name: .customLong("kafka"), help: "A librdkafka property as key=value. Repeatable.")
    var kafka: [String] = []

    /// The names of the cluster's topics: how a command finds out at start-up that the cluster answers and its
    /// topics exist.
    /// - Throws: a `ValidationError` naming the brokers when the cluster does not answer within 10 s.
    func existingTopics(logger: Logger) async throws -> Set<String> {
        let admin = try KafkaAdmin(configuration: configuration(), logger: logger)
        do {
            return Set(try await admin.listTopics(timeout: .seconds(10)).map(\.name))
        } catch {
            throw ValidationError("the Kafka cluster at \(brokers) does not answer: \(error)")
        }
    }

    /// The `--kafka` properties with `bootstrap.servers`.
    /// - Throws: a `ValidationError` naming a property librdkafka refuses.
    func configuration() throws -> KafkaConfiguration {
        do {
            var configuration = try KafkaConfiguration(assignments: kafka)
            try configuration.set("bootstrap.servers", brokers)
            return configuration
        } catch let error as KafkaError {
            throw ValidationError("\(error)")
        }
    }
}
