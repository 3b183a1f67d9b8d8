/// What `GET /health` and `GET /ready` report.
public struct WorkerHealth: Sendable {
    public enum Status: String, Sendable {
        /// The consumer is being created.
        case starting
        case serving
        /// Responses have been failing with errors worth retrying, and nothing was acknowledged, for longer than
        /// ``WorkerConfiguration/deliveryStallLimit``.
        case stalled
        /// The consumer's poll thread has not gone round its loop for longer than
        /// ``WorkerConfiguration/pollStallLimit``: it is stuck.
        case notPolling = "not_polling"
        /// ``Worker/stop()`` was called: draining.
        case stopping
    }

    public var status: Status
    public var assignedPartitions: Int
    /// Requests taken from the consumer and not yet finished.
    public var inFlight: Int
    /// Whether the consumer has received its group's assignment (possibly empty: more workers than partitions).
    public var joinedGroup: Bool

    /// Whether a liveness probe should pass: starting or serving (not stalled, not stuck polling, not stopping).
    public var isLive: Bool { status == .starting || status == .serving }

    /// Whether a readiness probe should pass: serving, and a member of the group.
    public var isReady: Bool { status == .serving && joinedGroup }
}
