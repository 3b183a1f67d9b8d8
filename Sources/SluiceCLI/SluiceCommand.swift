import ArgumentParser
import Foundation
import Kafka
import Pipelines

/// The `sluice` command line. A user's own executable gets the same commands from ``start(arguments:)``.
public struct SluiceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Pipeline serving over Kafka.",
        version: "sluice \(version) (librdkafka \(KafkaConfiguration.librdkafkaVersion))",
        subcommands: [
            BrokerCommand.self, TopicsCommand.self, WorkerCommand.self, MaterializeCommand.self, RunsCommand.self,
            GatewayCommand.self, CallCommand.self, BenchCommand.self, RunCommand.self,
        ]
    )

    /// Sluice's version, as `sluice --version` prints it.
    public static let version = "0.15.0"

    public init() {}
}

extension SluiceCommand {
    /// Parses the command line (`arguments`, or the process's own) and runs the command it names; exits the process
    /// with the command's status: 0, 64 for a usage error, 69 when the cluster or a topic is unavailable, 1 otherwise.
    /// - Parameter pipelines: the pipelines the commands serve by name; `nil` keeps the examples (`text-stats`).
    public static func start(pipelines: [AnyPipeline]? = nil, arguments: [String]? = nil) async {
        if let pipelines { PipelineRegistry.register(pipelines) }
        do {
            var command = try parseAsRoot(arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as UnavailableError {
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            Foundation.exit(UnavailableError.exitCode)
        } catch {
            exit(withError: error)
        }
    }
}
