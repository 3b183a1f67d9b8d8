import ArgumentParser
import Kafka

/// The flags of the commands that call a pipeline (`sluice call`, `sluice bench`): where its fleet is.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "Bootstrap servers of the Kafka cluster (host:port,...).")
    var brokers: String

    @Option(name: .long, help: "The pipeline to call.")
    var pipeline: String

    @Option(name: .customLong("requests-topic"), help: "Default: <pipeline>.requests.")
    var requestsTopic: String?

    @Option(name: .customLong("responses-topic"), help: "The reply-to topic. Default: <pipeline>.responses.")
    var responsesTopic: String?

    @Option(name: .customLong("kafka"), help: "A librdkafka property as key=value. Repeatable.")
    var kafka: [String] = []

    /// The `--kafka` properties with `bootstrap.servers`.
    func settings() throws -> KafkaConfiguration {
        var settings = try KafkaConfiguration(assignments: kafka)
        try settings.set("bootstrap.servers", brokers)
        return settings
    }
}
