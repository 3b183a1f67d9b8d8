import ArgumentParser
import Pipelines

/// The `sluice` command line. A user's own executable gets the same commands from ``start(arguments:)``.
public struct SluiceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Pipeline serving over Kafka.",
        subcommands: [
            BrokerCommand.self, TopicsCommand.self, WorkerCommand.self, MaterializeCommand.self, RunsCommand.self,
            CallCommand.self, BenchCommand.self, RunCommand.self,
        ]
    )

    public init() {}
}

extension SluiceCommand {
    /// Parses the command line (`arguments`, or the process's own) and runs the command it names; exits the process
    /// with the command's status.
    /// - Parameter pipelines: the pipelines the commands serve by name; `nil` keeps the examples (`text-stats`).
    public static func start(pipelines: [AnyPipeline]? = nil, arguments: [String]? = nil) async {
        if let pipelines { PipelineRegistry.register(pipelines) }
        await main(arguments)
    }
}
