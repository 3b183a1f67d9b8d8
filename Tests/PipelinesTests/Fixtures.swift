import Logging
import Pipelines
import Synchronization

// MARK: - A three-step pipeline

struct Document: Codable, Sendable, Hashable {
    var text: String
}

struct Stats: Codable, Sendable, Hashable {
    var tokens: Int
    var first: String?
    var last: String?
}

let tokenize = Step("tokenize") { (document: Document) in
    RunContext.current?.log("tokenizing")
    return document.text.split(separator: " ").map(String.init)
}

let count = Step("count") { (tokens: [String]) in
    RunContext.current?.addMetadata(["tokens": .int(Int64(tokens.count))])
    return tokens
}

let summarize = Step("summarize") { (tokens: [String]) in
    Stats(tokens: tokens.count, first: tokens.first, last: tokens.last)
}

let textStats = Pipeline("text-stats") { (document: Document) in
    try await summarize(count(tokenize(document)))
}

/// Rejects a document without words.
let check = Step("check") { (tokens: [String]) in
    guard !tokens.isEmpty else { throw EmptyDocument() }
    return tokens
}

struct EmptyDocument: Error, CustomStringConvertible {
    var description: String { "the document has no words" }
}

/// text-stats with a step that fails on an empty document.
let failingOnEmpty = Pipeline("failing-on-empty") { (document: Document) in
    try await summarize(check(tokenize(document)))
}

/// The (type, step run) of each event, for comparing sequences.
func shape(_ events: [LineageEvent]) -> [String] {
    events.map { event in
        switch event.body {
        case .stepStarted(let step, _, _), .stepCompleted(let step, _, _, _), .stepCached(let step, _, _, _),
            .stepFailed(let step, _, _, _, _):
            "\(event.type.rawValue) \(step.id)"
        case .log(let stepRun, _, _), .metadata(let stepRun, _):
            "\(event.type.rawValue) \(stepRun ?? "run")"
        default:
            event.type.rawValue
        }
    }
}

/// Runs `pipeline` once on a fresh recording tracker and returns the result and its resolved events.
func track<Input, Output>(
    _ pipeline: Pipeline<Input, Output>, _ input: Input, capture: CaptureConfiguration,
    cache: StepCache = StepCache()
) async -> (RunResult<Output>, [LineageEvent]) {
    let tracker = RecordingTracker()
    let result = await PipelineRunner(tracker: tracker, cache: cache).run(
        pipeline, input, options: RunOptions(capture: capture))
    return (result, tracker.events)
}

/// Keeps the events as the runner emits them, unresolved.
final class PendingTracker: Tracker {
    private let state = Mutex<[PendingEvent]>([])
    var events: [PendingEvent] { state.withLock { $0 } }
    func record(_ event: PendingEvent) { state.withLock { $0.append(event) } }
    func record(contentsOf events: [PendingEvent]) { state.withLock { $0.append(contentsOf: events) } }
    func flush(runID: String) async throws {}
}

/// A tracker that records calls and whose flushes wait until released, or fail.
final class GatedTracker: Tracker {
    private struct State {
        var log: [String] = []
        var waiters: [CheckedContinuation<Void, any Error>] = []
        var open = false
    }

    private let state = Mutex(State())
    let failure: TrackingError?
    let recorder = RecordingTracker()

    init(failing failure: TrackingError? = nil) {
        self.failure = failure
    }

    var log: [String] { state.withLock { $0.log } }

    func record(_ event: PendingEvent) {
        state.withLock { $0.log.append(event.type.rawValue) }
        recorder.record(event)
    }

    func flush(runID: String) async throws {
        state.withLock { $0.log.append("flush") }
        if let failure { throw failure }
        try await withCheckedThrowingContinuation { continuation in
            let resume = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resume { continuation.resume() }
        }
    }

    /// Lets every waiting and future flush return.
    func release() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    var waitingFlushes: Int { state.withLock { $0.waiters.count } }
}

/// A swift-log handler that keeps every line it is given, for tests of what reaches a logger.
struct CollectingLogHandler: LogHandler {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
    }

    final class Lines: Sendable {
        let lines = Mutex<[Line]>([])

        func withLock<T>(_ body: (inout [Line]) -> T) -> T { lines.withLock { body(&$0) } }
    }

    let lines: Lines
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let line = Line(
            level: event.level, message: event.message.description,
            metadata: metadata.merging(event.metadata ?? [:]) { _, new in new })
        lines.withLock { $0.append(line) }
    }
}
