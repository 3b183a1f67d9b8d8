/// A typed step of a pipeline: a named, versioned async function whose inputs and output are artifacts.
///
/// ```swift
/// let tokenize = Step("tokenize") { (review: Review) in review.text.split(separator: " ").map(String.init) }
/// let score = Step("score", version: 2, cache: true, retry: .attempts(3)) { (tokens: [String]) in model.score(tokens) }
/// let merge = Step("merge") { (left: [Double], right: [Double]) in zip(left, right).map(+) }
/// let predict = Step("predict", batch: .init(maxSize: 32, maxWait: .milliseconds(2))) { (images: [Image]) in
///     model.predict(images)    // one output per image, in order
/// }
/// ```
/// Calling a step inside a tracked run records a step run: its inputs, output, timings, logs and metadata, as the
/// run's capture configuration says. Outside a run, or in a memory-only run, it calls the body directly (with its
/// retries). Either way a failure is thrown as a ``StepError``.
///
/// A batched step is called like any other, with one value per input, but its body takes one array per input: the
/// calls of concurrent runs gathered into one batch (``BatchPolicy``). Each run gets its own output and records its
/// own step run.
public struct Step<each Input: Codable & Sendable, Output: Codable & Sendable>: Sendable {
    /// The step's name: recorded on its step runs and part of its cache key.
    public let name: String
    /// Part of the cache key: bump it when the step's behaviour changes.
    public let version: Int
    /// Whether the step's output may be reused for equal inputs where the capture configuration caches.
    public let cache: Bool
    public let retry: RetryPolicy
    /// The step's work on one value per input; for a batched step, a call that joins a batch.
    @usableFromInline let body: @Sendable (repeat each Input) async throws -> Output
    /// A batched step's batches, which retry themselves; `nil` for a plain step.
    @usableFromInline let batcher: StepBatcher<(repeat each Input), Output>?
    /// How often one call of `body` is tried: the step's policy, or once for a batched step, whose batch is retried.
    @usableFromInline let callRetry: RetryPolicy

    /// - Parameters:
    ///   - name: the step's name.
    ///   - version: part of the cache key.
    ///   - cache: opt in to caching (BATCH and REALTIME cache; OFF and memory-only never do).
    ///   - retry: how often to try, and the wait between tries.
    ///   - body: the step's work.
    public init(
        _ name: String, version: Int = 1, cache: Bool = false, retry: RetryPolicy = .none,
        _ body: @escaping @Sendable (repeat each Input) async throws -> Output
    ) {
        self.name = name
        self.version = version
        self.cache = cache
        self.retry = retry
        self.body = body
        batcher = nil
        callRetry = retry
    }

    /// A batched step: its body takes one array per input, the values of a batch of calls, and returns one output per
    /// call, in order.
    /// - Parameters:
    ///   - name: the step's name.
    ///   - version: recorded on its step runs.
    ///   - batch: how many calls a batch holds at most, and how long a call waits behind a running batch.
    ///   - retry: how often a batch is tried, and the wait between tries; every call of the batch waits for it.
    ///   - body: the step's work on a batch.
    @inlinable
    public init(
        _ name: String, version: Int = 1, batch: BatchPolicy, retry: RetryPolicy = .none,
        _ body: @escaping @Sendable (repeat [each Input]) async throws -> [Output]
    ) {
        let batcher = StepBatcher<(repeat each Input), Output>(name: name, policy: batch, retry: retry) { rows in
            try await body(repeat each columns(rows))
        }
        self.name = name
        self.version = version
        self.cache = false
        self.retry = retry
        self.batcher = batcher
        self.body = { (input: repeat each Input) in
            try await batcher.submit((repeat each input), observer: nil).output.get()
        }
        callRetry = .none
    }

    /// Runs the step on `input`, as a step run of the current tracked run if there is one.
    /// - Throws: ``StepError`` wrapping what the body threw on its last attempt.
    @inlinable
    public func callAsFunction(_ input: repeat each Input) async throws -> Output {
        if let context = RunContext.current { return try await runTracked(in: context, repeat each input) }
        // Untracked (memory-only, or outside a run): the body and its retries, inlined into the caller.
        var attempt = 1
        while true {
            do {
                return try await body(repeat each input)
            } catch {
                guard callRetry.retries(after: attempt) else {
                    throw StepError(step: name, stepRun: nil, underlying: error)
                }
                await callRetry.wait(after: attempt)
                attempt += 1
            }
        }
    }

    /// A step run of the tracked run `context` belongs to. Inlinable, so that the inputs (a parameter pack) are gathered
    /// by code compiled for the step's own types where the pipeline is declared, not by generic code asking the
    /// runtime for their metadata at every call.
    @inlinable
    func runTracked(in context: RunContext, _ input: repeat each Input) async throws -> Output {
        var count = 0
        for _ in repeat each input { count += 1 }
        var inputs: [any Codable & Sendable] = []
        inputs.reserveCapacity(count)
        for value in repeat each input { inputs.append(value) }
        let description = StepDescription(name: name, version: version, cache: cache, retry: retry)
        if let batcher {
            return try await context.run.runBatchedStep(
                description, inputs: inputs, item: (repeat each input), batcher: batcher)
        }
        return try await context.run.runStep(description, inputs: inputs) { try await body(repeat each input) }
    }
}

/// What the runner needs to know of a step, whatever its types.
@usableFromInline struct StepDescription: Sendable {
    let name: String
    let version: Int
    let cache: Bool
    let retry: RetryPolicy

    @usableFromInline
    init(name: String, version: Int, cache: Bool, retry: RetryPolicy) {
        self.name = name
        self.version = version
        self.cache = cache
        self.retry = retry
    }
}
