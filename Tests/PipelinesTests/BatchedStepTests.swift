import Pipelines
import Synchronization
import Testing

/// Counts the calls of a batched step's body and the sizes of their batches.
final class BatchLog: Sendable {
    private let sizes = Mutex<[Int]>([])
    var batches: [Int] { sizes.withLock { $0 } }
    func record(_ size: Int) { sizes.withLock { $0.append(size) } }
}

/// Suspends callers until `count` of them have arrived, then lets them all go.
actor Barrier {
    private let count: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(count: Int) {
        self.count = count
    }

    func arrive() async {
        await withCheckedContinuation { continuation in
            waiting.append(continuation)
            guard waiting.count == count else { return }
            for waiter in waiting { waiter.resume() }
            waiting.removeAll()
        }
    }
}

/// Suspends callers until it is opened.
actor Gate {
    private var open = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func pass() async {
        if open { return }
        await withCheckedContinuation { waiting.append($0) }
    }

    func openUp() {
        open = true
        for waiter in waiting { waiter.resume() }
        waiting.removeAll()
    }
}

@Suite("Batched steps")
struct BatchedStepTests {
    /// Runs `pipeline` on each input concurrently, in one runner, and returns the results in input order.
    func runConcurrently<Input: Sendable, Output: Sendable>(
        _ pipeline: Pipeline<Input, Output>, _ inputs: [Input], capture: CaptureConfiguration, tracker: any Tracker
    ) async -> [RunResult<Output>] {
        let runner = PipelineRunner(tracker: tracker)
        return await withTaskGroup(of: (Int, RunResult<Output>).self) { group in
            for (index, input) in inputs.enumerated() {
                group.addTask {
                    (
                        index,
                        await runner.run(pipeline, input, options: RunOptions(capture: capture, runID: "r\(index)"))
                    )
                }
            }
            var results: [(Int, RunResult<Output>)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    /// Eight concurrent runs, batches of four: two calls of the body, each run its own output and its own step run
    /// with `batch_size` 4 in its metadata.
    @Test func concurrentRunsAreGatheredIntoFullBatches() async throws {
        let log = BatchLog()
        let square = Step("square", batch: .init(maxSize: 4, maxWait: .seconds(30))) { (values: [Int]) in
            log.record(values.count)
            #expect(RunContext.current == nil)
            return values.map { $0 * $0 }
        }
        // Every run is in progress before any reaches the step, so that none of them makes a batch of fewer.
        let barrier = Barrier(count: 8)
        let pipeline = Pipeline("squares") { (value: Int) in
            await barrier.arrive()
            return try await square(value)
        }
        let tracker = RecordingTracker()
        let results = await runConcurrently(pipeline, Array(0..<8), capture: .batch, tracker: tracker)
        #expect(try results.map { try $0.outcome.get() } == (0..<8).map { $0 * $0 })
        #expect(log.batches == [4, 4])
        for index in 0..<8 {
            let events = tracker.events(ofRun: "r\(index)")
            #expect(
                shape(events) == [
                    "run_started", "step_started square#1", "metadata square#1", "step_completed square#1",
                    "run_completed",
                ])
            guard case .metadata(_, let values) = events[2].body else { continue }
            #expect(values == ["batch_size": 4])
            guard case .stepCompleted(_, 1, _, let output?) = events[3].body else {
                Issue.record("no output: \(events[3])")
                continue
            }
            #expect(output.value == .int(Int64(index * index)))
        }
    }

    /// A batch that holds every run in progress waits for no other: three runs, room for a thousand, an hour's wait.
    @Test func aBatchOfEveryRunInProgressRunsAtOnce() async throws {
        let log = BatchLog()
        let double = Step("double", batch: .init(maxSize: 1000, maxWait: .seconds(3600))) { (values: [Int]) in
            log.record(values.count)
            return values.map { $0 * 2 }
        }
        let barrier = Barrier(count: 3)
        let pipeline = Pipeline("doubles") { (value: Int) in
            await barrier.arrive()
            return try await double(value)
        }
        let results = Task {
            await runConcurrently(pipeline, [1, 2, 3], capture: .memoryOnly, tracker: RecordingTracker())
        }
        // A liveness bound, not a speed one: the batch must not wait for its hour.
        let timeout = Task { try await Task.sleep(for: .seconds(60)) }
        let finished = Task {
            let values = await results.value
            timeout.cancel()
            return values
        }
        if case .success = await timeout.result {
            Issue.record("the batch waited for its timer though every run in progress was in it")
            results.cancel()
            return
        }
        #expect(try await finished.value.map { try $0.outcome.get() } == [2, 4, 6])
        #expect(log.batches == [3])
    }

    /// A batch that neither fills nor holds every run in progress is called `maxWait` after its first call.
    @Test func aBatchThatAnotherRunCouldJoinRunsAfterItsWait() async throws {
        let log = BatchLog()
        let double = Step("double", batch: .init(maxSize: 1000, maxWait: .milliseconds(20))) { (values: [Int]) in
            log.record(values.count)
            return values.map { $0 * 2 }
        }
        let gate = Gate()
        let pipeline = Pipeline("doubles") { (value: Int) in
            // The second run waits until the first has its answer: the first's batch cannot fill.
            if value == 2 { await gate.pass() }
            let doubled = try await double(value)
            if value == 1 { await gate.openUp() }
            return doubled
        }
        let results = await runConcurrently(pipeline, [1, 2], capture: .memoryOnly, tracker: RecordingTracker())
        #expect(try results.map { try $0.outcome.get() } == [2, 4])
        #expect(log.batches == [1, 1])
    }

    /// A batch completed by a call whose task is cancelled does not see that cancellation: it runs on its own.
    @Test func aCancelledCallDoesNotCancelItsBatch() async throws {
        let sawCancellation = Mutex<[Bool]>([])
        let negate = Step("negate", batch: .init(maxSize: 2, maxWait: .seconds(3600))) { (values: [Int]) in
            sawCancellation.withLock { $0.append(Task.isCancelled) }
            return values.map { -$0 }
        }
        let gate = Gate()
        let first = Task { try await negate(1) }
        let second = Task {
            await gate.pass()
            return try await negate(2)
        }
        second.cancel()
        await gate.openUp()
        #expect(try await first.value == -1)
        #expect(try await second.value == -2)
        #expect(sawCancellation.withLock { $0 } == [false])
    }

    /// A step with several inputs takes one array per input; outside a run it is called like any step.
    @Test func aStepOfSeveralInputsTakesOneArrayPerInput() async throws {
        let join = Step("join", batch: .init(maxSize: 2, maxWait: .seconds(30))) { (words: [String], counts: [Int]) in
            zip(words, counts).map { String(repeating: $0, count: $1) }
        }
        async let first = join("ab", 2)
        async let second = join("c", 3)
        #expect(try await [first, second] == ["abab", "ccc"])
    }

    /// A failed attempt is retried as a batch: each run records the failed attempt and the one that succeeded.
    @Test func aRetryRetriesTheWholeBatch() async throws {
        let attempts = Mutex(0)
        let flaky = Step("flaky", batch: .init(maxSize: 3, maxWait: .seconds(30)), retry: .attempts(2)) {
            (values: [Int]) in
            let attempt = attempts.withLock { count in
                count += 1
                return count
            }
            if attempt == 1 { throw Rejected() }
            return values.map { $0 + 1 }
        }
        let barrier = Barrier(count: 3)
        let pipeline = Pipeline("flaky") { (value: Int) in
            await barrier.arrive()
            return try await flaky(value)
        }
        let tracker = RecordingTracker()
        let results = await runConcurrently(pipeline, [1, 2, 3], capture: .realtime, tracker: tracker)
        #expect(try results.map { try $0.outcome.get() } == [2, 3, 4])
        #expect(attempts.withLock { $0 } == 2)
        for index in 0..<3 {
            let events = tracker.events(ofRun: "r\(index)")
            #expect(
                shape(events) == [
                    "run_started", "step_started flaky#1", "step_failed flaky#1", "step_started flaky#1",
                    "metadata flaky#1", "step_completed flaky#1", "run_completed",
                ])
            guard case .stepFailed(_, 1, _, let error, true) = events[2].body,
                case .stepStarted(_, 2, _) = events[3].body, case .stepCompleted(_, 2, _, _) = events[5].body
            else {
                Issue.record("attempts are not numbered 1 then 2: \(events)")
                continue
            }
            #expect(error.code == "invalid_input")
        }
    }

    /// A batch that fails fails every run of it with the step's failure; a body that returns the wrong number of
    /// outputs is such a failure.
    @Test(arguments: [true, false])
    func aFailedBatchFailsEveryRunOfIt(throwing: Bool) async throws {
        let broken = Step("broken", batch: .init(maxSize: 2, maxWait: .seconds(30))) { (values: [Int]) in
            if throwing { throw Rejected() }
            return [values[0]]
        }
        let barrier = Barrier(count: 2)
        let pipeline = Pipeline("broken") { (value: Int) in
            await barrier.arrive()
            return try await broken(value)
        }
        let tracker = RecordingTracker()
        let results = await runConcurrently(pipeline, [1, 2], capture: .batch, tracker: tracker)
        for (index, result) in results.enumerated() {
            guard case .failure(let error) = result.outcome else {
                Issue.record("run \(index) of a failed batch succeeded")
                continue
            }
            #expect(error.step == "broken")
            if throwing {
                #expect(error.code == "invalid_input")
            } else {
                #expect(error.code == "step_failed")
                #expect(error.message == "the batched step 'broken' returned 1 outputs for 2 inputs")
            }
            let events = tracker.events(ofRun: "r\(index)")
            #expect(shape(Array(events.suffix(3))) == ["metadata broken#1", "step_failed broken#1", "run_failed"])
        }
    }
}
