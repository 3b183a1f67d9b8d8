import ArgumentParser
import Kafka
import Logging

/// `sluice topics`: list or create topics on a cluster.
struct TopicsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics",
        abstract: "List or create topics.",
        subcommands: [List.self, Create.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print each topic and its partition count.")
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let admin = try KafkaAdmin(configuration: connection.configuration())
            for topic in try await admin.listTopics() {
                print("\(topic.name)\t\(topic.partitions.count)")
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create topics (not supported by the embedded broker, which creates topics on first use).")
        @OptionGroup var connection: ConnectionOptions

        @Option(name: .long, help: "Partitions of each topic given without its own count.")
        var partitions: Int = 8

        @Option(name: .customLong("replication-factor"), help: "Replicas of each partition.")
        var replicationFactor: Int = 1

        @Argument(help: "Topics as NAME or NAME:PARTITIONS.")
        var topics: [String]

        func run() async throws {
            let admin = try KafkaAdmin(configuration: connection.configuration())
            let newTopics = try topics.map { spec in
                let topic = try BrokerCommand.parseTopic(spec, defaultPartitions: partitions)
                return NewTopic(topic.name, partitions: topic.partitions, replicationFactor: replicationFactor)
            }
            try await admin.createTopics(newTopics)
        }
    }
}
