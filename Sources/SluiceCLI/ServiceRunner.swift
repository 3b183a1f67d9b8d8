import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// How a long-running command runs: its services in one `ServiceGroup` of swift-service-lifecycle.
///
/// The first SIGTERM, SIGINT or SIGHUP shuts the group down gracefully: each service stops in the reverse order of
/// `services` (a worker drains, flushes its lineage and commits before the status server that reports it goes); a
/// second signal exits at once with status 2 (docs/operations.md).
enum ServiceRunner {
    /// The signals that stop a command.
    static let terminationSignals: [UnixSignal] = [.sigterm, .sigint, .sighup]

    /// Traps the termination signals: from now on they no longer end the process but wait in the sequence for
    /// ``run(_:signals:logger:)``. Call it before starting anything that a signal should stop gracefully.
    static func trapTerminationSignals() async -> UnixSignalsSequence {
        await UnixSignalsSequence(trapping: terminationSignals)
    }

    /// Runs `services` until they end or a termination signal of `signals` stops them (one that came while they were
    /// being made stops them as soon as they run).
    /// - Throws: the first error a service throws.
    static func run(
        _ services: [ServiceGroupConfiguration.ServiceConfiguration], signals: UnixSignalsSequence, logger: Logger
    ) async throws {
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: services, logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                var caught = 0
                for await signal in signals {
                    caught += 1
                    if caught == 1 {
                        logger.info("signal \(signal): stopping")
                        await group.triggerGracefulShutdown()
                    } else {
                        logger.warning("signal \(signal) while stopping: exiting now")
                        exit(2)
                    }
                }
            }
            try await group.run()
            tasks.cancelAll()
        }
    }
}
