import Hummingbird
import Logging

/// A Hummingbird server on 127.0.0.1 and a free port, for the tests that receive what Sluice sends over HTTP (OTLP
/// traces, OpenLineage events).
struct TestHTTPServer: Sendable {
    let port: Int
    private let task: Task<Void, any Error>

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Starts serving `router`; returns once the server listens.
    static func start(label: String, router: Router<BasicRequestContext>) async throws -> TestHTTPServer {
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: label)
        logger.logLevel = .critical
        let application = Application(
            router: router, configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            }, logger: logger)
        let task = Task { try await application.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            task.cancel()
            throw CancellationError()
        }
        return TestHTTPServer(port: port, task: task)
    }

    func stop() {
        task.cancel()
    }
}
