import CSystemSupport
import Foundation
import Kafka
import Logging

/// SIGTERM, SIGINT and SIGHUP, delivered to async code instead of ending the process.
///
/// Once ``install()`` has run, these signals no longer end the process: a command waits for them with ``next()``
/// and stops in its own way (drain, flush, commit). Works whichever thread the signal lands on (a signal handler
/// writes to a pipe that a dedicated thread reads), so no signal mask is needed.
enum TerminationSignals {
    /// Routes the termination signals to ``next()``.
    /// - Throws: an error naming the errno value if the handlers cannot be installed.
    static func install() throws {
        let status = sluice_termination_signals_install()
        if status != 0 {
            throw KafkaError(code: .invalidArgument, message: "installing signal handlers: errno \(status)")
        }
    }

    /// Waits, on a thread of its own, for the next termination signal and returns its number.
    static func next() async -> Int32 {
        (try? await DedicatedThread.run(name: "sluice-signals") { sluice_termination_signals_wait() }) ?? -1
    }

    /// Calls `stop` at the first termination signal and exits with status 2 at the second: how a long-running
    /// command stops gracefully, or at once when asked twice. Cancel the task when the command is done.
    static func stopOnFirst(logger: Logger, _ stop: @escaping @Sendable () -> Void) -> Task<Void, Never> {
        Task {
            let first = await next()
            logger.info("signal \(first): stopping")
            stop()
            let second = await next()
            logger.warning("signal \(second) while stopping: exiting now")
            Foundation.exit(2)
        }
    }
}
