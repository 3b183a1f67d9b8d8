import Pipelines
import Synchronization
import Testing

struct Rejected: CodedError, CustomStringConvertible {
    var code: String { "invalid_input" }
    var description: String { "text is empty" }
}

struct Flaky: Error, CustomStringConvertible {
    let attempt: Int
    var description: String { "flaked on attempt \(attempt)" }
}

/// Counts calls across tasks.
final class Counter: Sendable {
    private let value = Mutex(0)
    func next() -> Int {
        value.withLock {
            $0 += 1
            return $0
        }
    }
    var current: Int { value.withLock { $0 } }
}

@Suite("Running pipelines: DAGs, failures, retries, caching")
struct RunnerTests {
    @Test func fanOutAndFanInRecordTheirEdges() async throws {
        let split = Step("split") { (text: String) in text.split(separator: " ").map(String.init) }
        let lengths = Step("lengths") { (words: [String]) in words.map(\.count) }
        let upper = Step("upper") { (words: [String]) in words.map { $0.uppercased() } }
        let join = Step("join") { (counts: [Int], words: [String]) in zip(words, counts).map { "\($0)=\($1)" } }
        let pipeline = Pipeline("fan") { (text: String) in
            let words = try await split(text)
            async let counts = lengths(words)
            async let shouted = upper(words)
            return try await join(counts, shouted)
        }
        let (result, events) = await track(pipeline, "a bb ccc", capture: .batch)
        #expect(try result.outcome.get() == ["A=1", "BB=2", "CCC=3"])

        var produced: [String: String] = [:]  // artifact id -> step run
        var edges: Set<String> = []
        for event in events {
            switch event.body {
            case .stepStarted(let step, _, let inputs):
                for input in inputs { edges.insert("\(input.producedBy ?? "?") -> \(step.id)") }
            case .stepCompleted(let step, _, _, let output?):
                produced[output.id] = step.id
            default: break
            }
        }
        #expect(
            edges == [
                "input -> split#1", "split#1/out -> lengths#1", "split#1/out -> upper#1",
                "lengths#1/out -> join#1", "upper#1/out -> join#1",
            ])
        #expect(produced.count == 4)
        // Fan-in keeps the order of the step's parameters.
        guard
            case .stepStarted(_, _, let joinInputs) = events.first(where: { shape([$0]) == ["step_started join#1"] })?
                .body
        else {
            Issue.record("join#1 started without its inputs: \(events)")
            return
        }
        #expect(joinInputs.map(\.id) == ["join#1/in0", "join#1/in1"])
        #expect(joinInputs.map(\.producedBy) == ["lengths#1/out", "upper#1/out"])
    }

    /// A consumer is found by storage (the value handed on) and, failing that, by canonical bytes: an equal value
    /// built anew still names its producer, a different one names none, and the hashes agree either way.
    @Test func consumedValuesFindTheirProducerBySameStorageOrEqualBytes() async throws {
        let words = Step("words") { (text: String) in text.split(separator: " ").map(String.init) }
        let count = Step("count") { (words: [String]) in words.count }
        let pipeline = Pipeline("producers") { (text: String) in
            let handedOn = try await words(text)
            // The same content in storage of its own, then content no step produced.
            let rebuilt = handedOn.map { String($0.utf8.map { Character(UnicodeScalar($0)) }) }
            return try await count(handedOn) + count(rebuilt) + count(handedOn + ["x"])
        }
        let (result, events) = await track(pipeline, "a bb", capture: .batch)
        #expect(try result.outcome.get() == 7)
        var outputs: [String: String] = [:]  // step run -> sha256
        var consumed: [(producedBy: String?, sha256: String?)] = []
        for event in events {
            switch event.body {
            case .stepCompleted(let step, _, _, let output?): outputs[step.id] = output.sha256
            case .stepStarted(let step, _, let inputs) where step.step == "count":
                consumed.append((inputs[0].producedBy, inputs[0].sha256))
            default: break
            }
        }
        #expect(consumed.map(\.producedBy) == ["words#1/out", "words#1/out", nil])
        #expect(consumed[0].sha256 == outputs["words#1"] && consumed[1].sha256 == outputs["words#1"])
        #expect(consumed[2].sha256 != nil && consumed[2].sha256 != outputs["words#1"])
    }

    /// A value handed on long after it was produced (past the ledger's storage window) still names its producer,
    /// found by its content.
    @Test func aValueHandedOnManyStepsLaterStillFindsItsProducer() async throws {
        let label = Step("label") { (number: Int) in "value \(number)" }
        let length = Step("length") { (text: String) in text.count }
        let pipeline = Pipeline("late") { (count: Int) in
            var labels: [String] = []
            for number in 0..<count { labels.append(try await label(number)) }
            return try await length(labels[0])
        }
        let (result, events) = await track(pipeline, 100, capture: .batch)
        #expect(try result.outcome.get() == 7)
        let lengthInputs = events.compactMap { event -> [ArtifactRef]? in
            if case .stepStarted(let step, _, let inputs) = event.body, step.step == "length" { inputs } else { nil }
        }
        #expect(lengthInputs.first?.first?.producedBy == "label#1/out")
    }

    @Test func aFailingStepFailsTheRunAndStopsDownstreamSteps() async throws {
        let downstream = Counter()
        let check = Step("check") { (text: String) in
            if text.isEmpty { throw Rejected() }
            return text
        }
        let after = Step("after") { (text: String) in
            _ = downstream.next()
            return text.count
        }
        let pipeline = Pipeline("checked") { (text: String) in try await after(check(text)) }
        for capture in [CaptureConfiguration.batch, .realtime, .off, .memoryOnly] {
            let (result, events) = await track(pipeline, "", capture: capture)
            guard case .failure(let error) = result.outcome else {
                Issue.record("the run must fail in \(capture.label)")
                continue
            }
            #expect(error == ErrorDetail(code: "invalid_input", message: "text is empty", step: "check"))
            if capture.isMemoryOnly {
                #expect(events.isEmpty)
            } else {
                #expect(shape(events) == ["run_started", "step_started check#1", "step_failed check#1", "run_failed"])
                guard case .stepFailed(_, _, _, let stepError, let retrying) = events[2].body,
                    case .runFailed(_, let runError) = events[3].body
                else { continue }
                #expect(stepError.code == "invalid_input")
                #expect(!retrying)
                #expect(runError == error)
            }
        }
        #expect(downstream.current == 0)
    }

    @Test func anErrorWithoutACodeIsAStepFailure() async throws {
        let broken = Step("broken") { (_: Int) -> Int in throw Flaky(attempt: 1) }
        let pipeline = Pipeline("broken") { (value: Int) in try await broken(value) }
        let (result, _) = await track(pipeline, 1, capture: .realtime)
        guard case .failure(let error) = result.outcome else {
            Issue.record("expected .failure, got \(String(describing: result.outcome))")
            return
        }
        #expect(error == ErrorDetail(code: "step_failed", message: "flaked on attempt 1", step: "broken"))
        // Untracked, the same failure is thrown as a StepError.
        await #expect(throws: StepError.self) { try await pipeline.run(1) }
    }

    @Test func retriesRecordEveryAttempt() async throws {
        let attempts = Counter()
        let flaky = Step("flaky", retry: .attempts(3)) { (value: Int) in
            let attempt = attempts.next()
            if attempt < 3 { throw Flaky(attempt: attempt) }
            return value * 2
        }
        let pipeline = Pipeline("flaky") { (value: Int) in try await flaky(value) }
        let (result, events) = await track(pipeline, 21, capture: .batch)
        #expect(try result.outcome.get() == 42)
        #expect(
            shape(events) == [
                "run_started",
                "step_started flaky#1", "step_failed flaky#1",
                "step_started flaky#1", "step_failed flaky#1",
                "step_started flaky#1", "step_completed flaky#1",
                "run_completed",
            ])
        let failures = events.compactMap { event -> String? in
            guard case .stepFailed(_, let attempt, _, let error, let retrying) = event.body else { return nil }
            return "\(attempt) \(retrying) \(error.message)"
        }
        #expect(failures == ["1 true flaked on attempt 1", "2 true flaked on attempt 2"])
        guard case .stepCompleted(_, let attempt, _, _) = events[6].body else {
            Issue.record("expected .stepCompleted, got \(String(describing: events[6].body))")
            return
        }
        #expect(attempt == 3)
    }

    @Test func exhaustedRetriesFailTheRunWithTheLastError() async throws {
        let attempts = Counter()
        let hopeless = Step("hopeless", retry: .attempts(2, backoffMilliseconds: 1)) { (_: Int) -> Int in
            throw Flaky(attempt: attempts.next())
        }
        let pipeline = Pipeline("hopeless") { (value: Int) in try await hopeless(value) }
        let (result, events) = await track(pipeline, 1, capture: .off)
        #expect(attempts.current == 2)
        guard case .failure(let error) = result.outcome else {
            Issue.record("expected .failure, got \(String(describing: result.outcome))")
            return
        }
        #expect(error.message == "flaked on attempt 2")
        #expect(events.filter { $0.type == .stepFailed }.count == 2)
        // Memory-only retries too.
        _ = await track(pipeline, 1, capture: .memoryOnly)
        #expect(attempts.current == 4)
    }

    @Test(arguments: [
        (CaptureConfiguration.batch, true), (.realtime, true), (.off, false), (.memoryOnly, false),
    ])
    func cachingFollowsTheMode(capture: CaptureConfiguration, caches: Bool) async throws {
        let calls = Counter()
        let expensive = Step("expensive", version: 3, cache: true) { (value: Int) in
            _ = calls.next()
            return value * value
        }
        let pipeline = Pipeline("cached") { (value: Int) in try await expensive(value) }
        let cache = StepCache()
        let (first, _) = await track(pipeline, 7, capture: capture, cache: cache)
        let (second, events) = await track(pipeline, 7, capture: capture, cache: cache)
        #expect(try first.outcome.get() == 49)
        #expect(try second.outcome.get() == 49)
        #expect(calls.current == (caches ? 1 : 2))
        if caches {
            #expect(shape(events) == ["run_started", "step_cached expensive#1", "run_completed"])
            guard case .stepCached(let step, let inputs, let output?, let source) = events[1].body else {
                Issue.record("expected .stepCached, got \(String(describing: events[1].body))")
                return
            }
            #expect(step.version == 3)
            #expect(source == CachedStepRun(runID: try #require(first.runID), stepRun: "expensive#1"))
            #expect(inputs.first?.producedBy == "input")
            #expect(output.value == 49)
            guard case .runCompleted(_, let runOutput?) = events[2].body else {
                Issue.record("expected .runCompleted, got \(String(describing: events[2].body))")
                return
            }
            #expect(runOutput.producedBy == "expensive#1/out")
        }
        // A different input is not a hit.
        let (third, _) = await track(pipeline, 8, capture: capture, cache: cache)
        #expect(try third.outcome.get() == 64)
        #expect(calls.current == (caches ? 2 : 3))
    }

    @Test func stepsThatDoNotAskAreNeverCached() async throws {
        let calls = Counter()
        let plain = Step("plain") { (value: Int) in calls.next() + value * 0 }
        let pipeline = Pipeline("plain") { (value: Int) in try await plain(value) }
        let cache = StepCache()
        _ = await track(pipeline, 1, capture: .batch, cache: cache)
        _ = await track(pipeline, 1, capture: .batch, cache: cache)
        #expect(calls.current == 2)
        #expect(cache.count == 0)
    }

    @Test func theCacheIsBoundedAndDropsTheLeastRecentlyUsed() async throws {
        let calls = Counter()
        let square = Step("square", cache: true) { (value: Int) in
            _ = calls.next()
            return value * value
        }
        let pipeline = Pipeline("squares") { (value: Int) in try await square(value) }
        let cache = StepCache(capacity: 3)
        for value in [1, 2, 3, 1, 4] { _ = await track(pipeline, value, capture: .realtime, cache: cache) }
        #expect(cache.count == 3)
        #expect(calls.current == 4)  // 1 was a hit
        // 2 was least recently used and dropped; 1 (used again) and 3, 4 are kept.
        for value in [1, 3, 4] { _ = await track(pipeline, value, capture: .realtime, cache: cache) }
        #expect(calls.current == 4)
        _ = await track(pipeline, 2, capture: .realtime, cache: cache)
        #expect(calls.current == 5)
        for value in 10..<1000 { _ = await track(pipeline, value, capture: .realtime, cache: cache) }
        #expect(cache.count == 3)
    }

    @Test func aStepCalledOutsideARunJustRuns() async throws {
        #expect(try await tokenize(Document(text: "a b")) == ["a", "b"])
        #expect(try await textStats.run(Document(text: "x y z")) == Stats(tokens: 3, first: "x", last: "z"))
    }

    @Test func repeatedStepsGetNumberedStepRuns() async throws {
        let double = Step("double") { (value: Int) in value * 2 }
        let pipeline = Pipeline("twice") { (value: Int) in try await double(double(value)) }
        let (result, events) = await track(pipeline, 3, capture: .realtime)
        #expect(try result.outcome.get() == 12)
        #expect(
            shape(events) == [
                "run_started", "step_started double#1", "step_completed double#1", "step_started double#2",
                "step_completed double#2", "run_completed",
            ])
    }

    @Test func unencodableOutputsAreRecordedAsSuch() async throws {
        let divide = Step("divide") { (value: Double) in value / 0 }
        let pipeline = Pipeline("divide") { (value: Double) in try await divide(value) }
        let (result, events) = await track(pipeline, 1, capture: .batch)
        #expect(try result.outcome.get() == .infinity)
        guard case .stepCompleted(_, _, _, let output?) = events[2].body else {
            Issue.record("expected .stepCompleted, got \(String(describing: events[2].body))")
            return
        }
        #expect(output.sha256 == nil)
        #expect(output.error != nil)
        // The event still encodes and decodes.
        #expect(try LineageRecord.decode(LineageRecord.encode([events[2]])) == [events[2]])
    }

    @Test func aStepCalledInsideAStepIsItsOwnStepRunAndItsFailureIsReported() async throws {
        let inner = Step("inner") { (value: Int) -> Int in
            if value < 0 { throw Rejected() }
            return value + 1
        }
        let outer = Step("outer") { (value: Int) in try await inner(value) * 10 }
        let pipeline = Pipeline("nested") { (value: Int) in try await outer(value) }
        let (result, events) = await track(pipeline, 1, capture: .batch)
        #expect(try result.outcome.get() == 20)
        #expect(
            shape(events) == [
                "run_started", "step_started outer#1", "step_started inner#1", "step_completed inner#1",
                "step_completed outer#1", "run_completed",
            ])
        let (failed, failedEvents) = await track(pipeline, -1, capture: .batch)
        guard case .failure(let error) = failed.outcome else {
            Issue.record("expected .failure, got \(String(describing: failed.outcome))")
            return
        }
        #expect(error.step == "inner" && error.code == "invalid_input")
        #expect(
            shape(failedEvents) == [
                "run_started", "step_started outer#1", "step_started inner#1", "step_failed inner#1",
                "step_failed outer#1", "run_failed",
            ])
    }

    @Test func aPipelineRunFromAStepDoesNotJoinTheRun() async throws {
        let inside = Step("inside") { (value: Int) in value * 2 }
        let helper = Pipeline("helper") { (value: Int) in try await inside(value) }
        let caller = Step("caller") { (value: Int) in try await helper.run(value) }
        let pipeline = Pipeline("caller") { (value: Int) in try await caller(value) }
        let (result, events) = await track(pipeline, 4, capture: .realtime)
        #expect(try result.outcome.get() == 8)
        #expect(!shape(events).contains { $0.contains("inside") })
    }

    @Test func nothingIsRecordedAfterTheRunEnds() async throws {
        let leftovers = Mutex<Task<Void, Never>?>(nil)
        let leaky = Step("leaky") { (value: Int) in
            // A task the step does not wait for, logging after the run has ended.
            let context = RunContext.current
            leftovers.withLock {
                $0 = Task {
                    try? await Task.sleep(for: .milliseconds(50))
                    context?.log("late")
                }
            }
            return value
        }
        let pipeline = Pipeline("leaky") { (value: Int) in try await leaky(value) }
        let tracker = RecordingTracker()
        _ = await PipelineRunner(tracker: tracker).run(pipeline, 1, options: RunOptions(capture: .realtime))
        await leftovers.withLock { $0 }?.value
        #expect(tracker.events.last?.type == .runCompleted)
        #expect(!tracker.events.contains { $0.type == .log })
    }
}
