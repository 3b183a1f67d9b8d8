import ArgumentParser
import Kafka

/// The flags of the commands that call a pipeline (`sluice call`, `sluice bench`): where its fleet is.
struct ClientOptions: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: "The pipeline to call.")
    var pipeline: String

    @Option(name: .customLong("requests-topic"), help: "Default: <pipeline>.requests.")
    var requestsTopic: String?

    @Option(name: .customLong("responses-topic"), help: "The reply-to topic. Default: <pipeline>.responses.")
    var responsesTopic: String?

    /// The `--kafka` properties with `bootstrap.servers`.
    func settings() throws -> KafkaConfiguration {
        try connection.configuration()
    }
}
