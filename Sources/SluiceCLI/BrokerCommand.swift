import ArgumentParser
import Kafka
import Logging
import UnixSignals

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `sluice broker`: the embedded broker as a process of its own.
struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run an embedded Kafka broker (librdkafka's mock cluster) on 127.0.0.1 until SIGTERM.",
        discussion: """
            Prints the bootstrap servers as the first line of standard output. Memory only, for development and \
            tests; production points --brokers at a real Kafka cluster. Topics not created here are created on \
            first use with the mock's default of 4 partitions.
            """
    )

    @OptionGroup(title: "Logging") var logging: LogOptions

    @Option(name: .long, help: "Number of brokers in the cluster (1-16).")
    var brokers: Int = 1

    @Option(name: .long, help: "Partitions of each --topic given without its own count.")
    var partitions: Int = 8

    @Option(name: .customLong("topic"), help: "A topic to create, as NAME or NAME:PARTITIONS. Repeatable.")
    var topics: [String] = []

    @Flag(name: .long, help: "Leave Nagle's algorithm on broker sockets (the stock mock); default sets TCP_NODELAY.")
    var nagle = false

    func validate() throws {
        guard (1...16).contains(brokers) else { throw ValidationError("--brokers \(brokers) is outside 1...16") }
        guard partitions >= 1 else { throw ValidationError("--partitions \(partitions) must be at least 1") }
        for topic in topics { _ = try Self.parseTopic(topic, defaultPartitions: partitions) }
    }

    static func parseTopic(_ spec: String, defaultPartitions: Int) throws -> (name: String, partitions: Int) {
        guard let colon = spec.lastIndex(of: ":") else {
            guard !spec.isEmpty else { throw ValidationError("--topic needs a name") }
            return (spec, defaultPartitions)
        }
        let name = String(spec[..<colon])
        guard !name.isEmpty, let count = Int(spec[spec.index(after: colon)...]), count >= 1 else {
            throw ValidationError("--topic '\(spec)' is not NAME or NAME:PARTITIONS with PARTITIONS >= 1")
        }
        return (name, count)
    }

    func run() async throws {
        try logging.bootstrap()
        let logger = Logger(label: "sluice.broker")
        // Trapped before the cluster starts its thread.
        let signals = await ServiceRunner.trapTerminationSignals()
        let cluster = try MockCluster(brokers: brokers, tcpNoDelay: !nagle, logger: logger)
        for spec in topics {
            let topic = try Self.parseTopic(spec, defaultPartitions: partitions)
            try cluster.createTopic(topic.name, partitions: topic.partitions)
        }
        print(cluster.bootstrapServers)
        fflush(nil)  // the first line reaches a reading process at once
        logger.info(
            "embedded broker: \(brokers) broker(s) at \(cluster.bootstrapServers), TCP_NODELAY \(nagle ? "off" : "on")")
        for await signal in signals {
            logger.info("stopping on signal \(signal)")
            break
        }
        withExtendedLifetime(cluster) {}
    }
}
