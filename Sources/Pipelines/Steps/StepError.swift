/// An error a step can throw to choose the code its failure is reported with (`invalid_input`, for example) instead
/// of `step_failed`.
public protocol CodedError: Error {
    /// A short machine-readable code: lowercase words joined by `_`.
    var code: String { get }
}

/// A step threw: what calling a step throws, in every capture mode, wrapping what the step's body threw.
public struct StepError: Error, CustomStringConvertible {
    /// The step's name.
    public let step: String
    /// The step run (`<step>#<n>`), or `nil` when the step ran untracked.
    public let stepRun: String?
    /// What the step's body threw (its last attempt's error when it was retried).
    public let underlying: any Error

    @usableFromInline
    init(step: String, stepRun: String?, underlying: any Error) {
        self.step = step
        self.stepRun = stepRun
        self.underlying = underlying
    }

    /// `step_failed`, the code of a ``CodedError``, or `cancelled` when the step was cancelled.
    public var code: String {
        if underlying is CancellationError { return "cancelled" }
        return (underlying as? any CodedError)?.code ?? "step_failed"
    }
    public var message: String { String(describing: underlying) }
    public var description: String { "step '\(step)' failed: \(message)" }

    /// The failure as lineage and responses report it.
    public var detail: ErrorDetail { ErrorDetail(code: code, message: message, step: step) }
}

extension ErrorDetail: Error {}

extension ErrorDetail {
    /// How a run reports what its body threw: a step's failure with its step, a ``CodedError`` with its code,
    /// cancellation as `cancelled`, anything else as `internal`.
    @usableFromInline
    init(describing error: any Error) {
        switch error {
        case let failure as StepError: self = failure.detail
        case let detail as ErrorDetail: self = detail
        case let notDurable as LineageNotDurable: self = notDurable.detail
        case let coded as any CodedError: self.init(code: coded.code, message: String(describing: coded))
        case is CancellationError: self.init(code: "cancelled", message: "the run was cancelled")
        default: self.init(code: "internal", message: String(describing: error))
        }
    }
}
