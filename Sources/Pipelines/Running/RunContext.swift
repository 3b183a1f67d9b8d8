import Logging

/// The run a step belongs to, as seen from inside the step: how a step logs and attaches metadata.
///
/// ```swift
/// let score = Step("score") { (tokens: [String]) in
///     RunContext.current?.log("scoring \(tokens.count) tokens")
///     RunContext.current?.addMetadata(["tokens": .int(Int64(tokens.count))])
///     return model.score(tokens)
/// }
/// ```
/// `current` is `nil` outside a tracked run: in memory-only runs and in ``Pipeline/run(_:)`` nothing is recorded, so
/// these calls cost one task-local read. What is kept follows the capture configuration's `logs` and `metadata`.
public struct RunContext: Sendable {
    /// The context of the tracked run (and step run) the current task is in, if any. Child tasks (`async let`, task
    /// groups) inherit it.
    @TaskLocal public static var current: RunContext?

    @usableFromInline let run: RunRecorder
    /// The step run this context is inside (`<step>#<n>`), or `nil` in the pipeline's body outside any step.
    public let stepRun: String?

    init(run: RunRecorder, stepRun: String?) {
        self.run = run
        self.stepRun = stepRun
    }

    public var runID: String { run.runID }
    public var pipeline: String { run.pipeline }
    public var requestID: String? { run.requestID }
    /// The capture configuration the run is tracked with.
    public var configuration: CaptureConfiguration { run.configuration }

    /// Writes a log line to the runner's logger (``PipelineRunner/logger``, with `pipeline`, `run_id`, `request_id` and `step_run` as metadata)
    /// and records it on the current step run (or on the run outside any step) if the `logs` knob keeps it: `all`
    /// keeps every level, `errors` warnings and errors, `off` nothing.
    public func log(_ message: String, level: LogLevel = .info) {
        let swiftLogLevel: Logger.Level =
            switch level {
            case .debug: .debug
            case .info: .info
            case .warning: .warning
            case .error: .error
            }
        if run.logger.logLevel <= swiftLogLevel {
            var logger = run.logger
            logger[metadataKey: "pipeline"] = .string(pipeline)
            logger[metadataKey: "run_id"] = .string(runID)
            if let requestID { logger[metadataKey: "request_id"] = .string(requestID) }
            if let stepRun { logger[metadataKey: "step_run"] = .string(stepRun) }
            logger.log(level: swiftLogLevel, "\(message)")
        }
        guard run.keepsLog(level) else { return }
        run.emit(.log(stepRun: stepRun, level: level, message: message))
    }

    /// Attaches metadata to the current step run (or to the run outside any step), if the `metadata` knob is on.
    public func addMetadata(_ values: [String: JSONValue]) {
        guard run.configuration.metadata else { return }
        run.emit(.metadata(stepRun: stepRun, values: values))
    }

    /// Attaches metadata to the run itself, from inside a step or not, if the `metadata` knob is on.
    public func addRunMetadata(_ values: [String: JSONValue]) {
        guard run.configuration.metadata else { return }
        run.emit(.metadata(stepRun: nil, values: values))
    }
}
