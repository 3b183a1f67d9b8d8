import CSystemSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An OS thread of its own, outside Swift's cooperative pool, for blocking calls.
///
/// - Important: Poll loops and every blocking call (librdkafka's flush, commit, close and admin requests; waiting for
///   a signal; `fsync`) run on such threads, never on the cooperative pool.
public final class DedicatedThread: @unchecked Sendable {
    // @unchecked Sendable: `thread` is written once in `start` before the value is shared and only read afterwards.
    private var thread = pthread_t()

    private final class Body {
        let name: String
        let run: @Sendable () -> Void
        init(name: String, run: @escaping @Sendable () -> Void) {
            self.name = name
            self.run = run
        }
    }

    private init() {}

    /// Starts `body` on a new joinable thread named `name` (at most 15 characters are kept).
    /// - Throws: ``ThreadStartError`` if the system refuses a thread.
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws -> DedicatedThread {
        let dedicated = DedicatedThread()
        try dedicated.launch(Body(name: name, run: body))
        return dedicated
    }

    /// Runs `body` on a detached thread of its own and returns its result: the way to make a blocking call from
    /// async code without blocking the cooperative pool.
    public static func run<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            do {
                let dedicated = DedicatedThread()
                try dedicated.launch(Body(name: name) { continuation.resume(with: Result { try body() }) })
                pthread_detach(dedicated.thread)
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    private func launch(_ body: Body) throws {
        let argument = Unmanaged.passRetained(body).toOpaque()
        let status = pthread_create(
            &thread, nil,
            { argument in
                let body = Unmanaged<Body>.fromOpaque(argument!).takeRetainedValue()
                sluice_set_thread_name(body.name)
                body.run()
                return nil
            }, argument)
        if status != 0 {
            _ = Unmanaged<Body>.fromOpaque(argument).takeRetainedValue()
            throw ThreadStartError(name: body.name, errno: status)
        }
    }

    /// Waits for the thread to end. Does nothing when called from the thread itself.
    public func join() {
        if pthread_equal(pthread_self(), thread) != 0 { return }
        pthread_join(thread, nil)
    }
}

/// The system refused a thread (`pthread_create` failed: too many threads, or no memory for a stack).
public struct ThreadStartError: Error, Sendable, CustomStringConvertible {
    /// The thread's name.
    public let name: String
    /// What `pthread_create` returned.
    public let errno: Int32

    public var description: String { "could not start thread \(name): \(String(cString: strerror(errno)))" }
}
