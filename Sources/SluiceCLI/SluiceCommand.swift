import ArgumentParser

/// The `sluice` command line. A user's own executable gets the same commands from ``start(arguments:)``.
public struct SluiceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Pipeline serving over Kafka.",
        subcommands: [BrokerCommand.self, TopicsCommand.self]
    )

    public init() {}
}

extension SluiceCommand {
    /// Parses the command line (`arguments`, or the process's own) and runs the command it names; exits the process
    /// with the command's status.
    public static func start(arguments: [String]? = nil) async {
        await main(arguments)
    }
}
