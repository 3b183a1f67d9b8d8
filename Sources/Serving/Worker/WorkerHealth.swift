/// What `GET /health` reports.
public struct WorkerHealth: Sendable {
    public enum Status: String, Sendable {
        /// The consumer is being created.
        case starting
        case serving
        /// Responses have been failing with errors worth retrying, and nothing was acknowledged, for longer than
        /// ``WorkerConfiguration/deliveryStallLimit``.
        case stalled
        /// ``Worker/stop()`` was called: draining.
        case stopping
    }

    public var status: Status
    public var assignedPartitions: Int
    /// Requests taken from the consumer and not yet finished.
    public var inFlight: Int

    /// Whether a liveness probe should pass: not stalled and not stopping.
    public var isLive: Bool { status == .starting || status == .serving }
}
