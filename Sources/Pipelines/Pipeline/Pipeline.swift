/// A pipeline: a name, a typed input and output, a body that calls steps, and (optionally) its capture
/// configuration in code.
///
/// ```swift
/// let sentiment = Pipeline("sentiment", capture: .realtime(flushOnStepEnd: false)) { (review: Review) in
///     let tokens = try await tokenize(review)
///     return try await label(score(tokens))
/// }
/// let verdict = try await sentiment.run(Review(text: "great"))        // in process, untracked
/// let result = await PipelineRunner(tracker: tracker).run(sentiment, Review(text: "great"))   // tracked
/// ```
/// Nothing in a pipeline is about serving: the worker runs it through a ``PipelineRunner``.
public struct Pipeline<Input: Codable & Sendable, Output: Codable & Sendable>: Sendable {
    public let name: String
    /// The capture configuration set in code, if any: stronger than the environment, weaker than run-config YAML
    /// and `--capture` (``ResolvedCapture/resolve(commandLine:runConfig:code:environment:)``).
    public let capture: CaptureConfiguration?
    let body: @Sendable (Input) async throws -> Output

    public init(
        _ name: String, capture: CaptureConfiguration? = nil, _ body: @escaping @Sendable (Input) async throws -> Output
    ) {
        self.name = name
        self.capture = capture
        self.body = body
    }

    /// Runs the pipeline in process without tracking anything, as memory-only does.
    /// - Throws: ``StepError`` when a step fails, or what the body threw.
    public func run(_ input: Input) async throws -> Output {
        // Inside a tracked run (a pipeline run from a step), steps must not join that run.
        if RunContext.current == nil { return try await body(input) }
        return try await RunContext.$current.withValue(nil) { try await body(input) }
    }
}
