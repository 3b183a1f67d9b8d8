/// How often a step is tried and how long it waits between tries.
///
/// Each failed attempt is recorded (`step_failed` with `retrying: true`); the step run fails when the last attempt
/// does. A cancelled run is not retried.
public struct RetryPolicy: Sendable, Hashable {
    /// Tries in all, at least 1.
    public var attempts: Int
    /// Wait before the second try, in milliseconds; multiplied by `multiplier` before each further one.
    public var backoffMilliseconds: Int
    public var multiplier: Double

    public init(attempts: Int, backoffMilliseconds: Int = 0, multiplier: Double = 2) {
        self.attempts = max(1, attempts)
        self.backoffMilliseconds = max(0, backoffMilliseconds)
        self.multiplier = max(1, multiplier)
    }

    /// One try.
    public static let none = RetryPolicy(attempts: 1)

    /// `count` tries in all, waiting `backoffMilliseconds` (then doubling) between them.
    public static func attempts(_ count: Int, backoffMilliseconds: Int = 0) -> RetryPolicy {
        RetryPolicy(attempts: count, backoffMilliseconds: backoffMilliseconds)
    }

    /// The wait after failed attempt `attempt` (from 1), in milliseconds.
    public func backoff(after attempt: Int) -> Int {
        var wait = Double(backoffMilliseconds)
        for _ in 1..<max(1, attempt) { wait *= multiplier }
        return Int(min(wait, 3_600_000))
    }

    /// Whether a failure of `attempt` is followed by another try.
    @usableFromInline
    func retries(after attempt: Int) -> Bool {
        attempt < attempts && !Task.isCancelled
    }

    /// Waits out the backoff after `attempt`; returns early (and the loop ends) when the task is cancelled.
    @usableFromInline
    func wait(after attempt: Int) async {
        let milliseconds = backoff(after: attempt)
        if milliseconds > 0 { try? await Task.sleep(for: .milliseconds(milliseconds)) }
    }
}
