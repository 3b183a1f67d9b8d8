import ArgumentParser
import Kafka

/// `--brokers` and repeated `--kafka key=value`: how every command that talks to a cluster reaches it.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Bootstrap servers of the Kafka cluster (host:port,...).")
    var brokers: String

    @Option(name: .customLong("kafka"), help: "A librdkafka property as key=value. Repeatable.")
    var kafka: [String] = []

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
