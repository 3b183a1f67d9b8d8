import Synchronization
import Testing

@testable import Pipelines

/// Counts the calls of a batched step's body and the sizes of their batches.
final class BatchLog: Sendable {
    private let sizes = Mutex<[Int]>([])
    var batches: [Int] { sizes.withLock { $0 } }
    func record(_ size: Int) { sizes.withLock { $0.append(size) } }
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

    /// The batcher's state: a call to an idle step runs at once, calls behind a running batch gather until they fill
    /// it, their timer expires or the running batch ends; a timer of a batch that has gone finds nothing.
    @Test func gatheringRunsAtOnceWhenIdleAndGathersBehindARunningBatch() throws {
        /// The batch an action runs, if it runs one.
        func batch(_ action: BatchGathering<Int>.Action) -> [Int]? {
            if case .run(let calls) = action { calls } else { nil }
        }
        /// The generation of the timer an action starts, if it starts one.
        func timer(_ action: BatchGathering<Int>.Action) -> UInt64? {
            if case .startTimer(let generation) = action { generation } else { nil }
        }
        var gathering = BatchGathering<Int>()
        #expect(batch(gathering.join(1, maxSize: 3)) == [1], "an idle step runs a call at once")
        let first = try #require(timer(gathering.join(2, maxSize: 3)), "a call behind a running batch starts a timer")
        let third = gathering.join(3, maxSize: 3)
        #expect(batch(third) == nil && timer(third) == nil, "the second call of a batch starts no timer")
        #expect(batch(gathering.join(4, maxSize: 3)) == [2, 3, 4], "a full batch runs at once")
        #expect(gathering.running == 2 && gathering.expire(first) == nil)
        let second = try #require(timer(gathering.join(5, maxSize: 3)))
        #expect(gathering.finish() == [5])
        #expect(gathering.expire(second) == nil && gathering.running == 2)
        #expect(gathering.finish() == nil && gathering.finish() == nil && gathering.running == 0)
        #expect(batch(gathering.join(6, maxSize: 3)) == [6])
        let last = try #require(timer(gathering.join(7, maxSize: 3)))
        #expect(gathering.expire(last) == [7] && gathering.running == 2 && gathering.pending.isEmpty)
    }

    /// Eight concurrent runs behind a running batch, batches of four: two calls of the body, each run its own output
    /// and its own step run with `batch_size` 4 in its metadata.
    @Test func runsBehindARunningBatchAreGatheredIntoFullBatches() async throws {
        let log = BatchLog()
        let occupied = Gate()
        let release = Gate()
        let square = Step("square", batch: .init(maxSize: 4, maxWait: .seconds(3600))) { (values: [Int]) in
            log.record(values.count)
            #expect(RunContext.current == nil)
            // Every batch runs until all eight runs have been in one, so that each gathers behind a running one.
            if values == [-1] { await occupied.openUp() }
            if log.batches.dropFirst().reduce(0, +) == 8 {
                await release.openUp()
            } else {
                await release.pass()
            }
            return values.map { $0 * $0 }
        }
        let occupying = Task { try await square(-1) }
        await occupied.pass()
        let pipeline = Pipeline("squares") { (value: Int) in try await square(value) }
        let tracker = RecordingTracker()
        let results = await runConcurrently(pipeline, Array(0..<8), capture: .batch, tracker: tracker)
        #expect(try await occupying.value == 1)
        #expect(try results.map { try $0.outcome.get() } == (0..<8).map { $0 * $0 })
        #expect(log.batches == [1, 4, 4])
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

    /// Calls that gathered behind a running batch run as one when it ends.
    @Test func theBatchGatheredBehindARunningOneRunsWhenItEnds() async throws {
        let log = BatchLog()
        let occupied = Gate()
        let release = Gate()
        let double = Step("double", batch: .init(maxSize: 1000, maxWait: .seconds(3600))) { (values: [Int]) in
            log.record(values.count)
            if values == [-1] {
                await occupied.openUp()
                await release.pass()
            }
            return values.map { $0 * 2 }
        }
        let occupying = Task { try await double(-1) }
        await occupied.pass()
        async let first = double(1)
        async let second = double(2)
        async let third = double(3)
        let batcher = try #require(double.batcher)
        while batcher.pendingCalls < 3 { await Task.yield() }
        await release.openUp()
        #expect(try await [first, second, third] == [2, 4, 6])
        #expect(try await occupying.value == -2)
        #expect(log.batches == [1, 3])
    }

    /// A call behind a batch that does not end runs `maxWait` after it joined, beside it.
    @Test func aCallBehindARunningBatchRunsAfterItsWait() async throws {
        let occupied = Gate()
        let release = Gate()
        let double = Step("double", batch: .init(maxSize: 1000, maxWait: .milliseconds(20))) { (values: [Int]) in
            if values == [-1] {
                await occupied.openUp()
                await release.pass()
            } else {
                await release.openUp()
            }
            return values.map { $0 * 2 }
        }
        let occupying = Task { try await double(-1) }
        await occupied.pass()
        // The running batch ends only once this call's batch has run: without its timer, neither would.
        #expect(try await double(5) == 10)
        #expect(try await occupying.value == -2)
    }

    /// A batch started by a call whose task is cancelled does not see that cancellation: it runs on its own.
    @Test func aCancelledCallDoesNotCancelItsBatch() async throws {
        let sawCancellation = Mutex<[Bool]>([])
        let negate = Step("negate", batch: .init(maxSize: 2, maxWait: .seconds(3600))) { (values: [Int]) in
            sawCancellation.withLock { $0.append(Task.isCancelled) }
            return values.map { -$0 }
        }
        let call = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await negate(2)
        }
        #expect(try await call.value == -2)
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
        let occupied = Gate()
        let release = Gate()
        let flaky = Step("flaky", batch: .init(maxSize: 3, maxWait: .seconds(3600)), retry: .attempts(2)) {
            (values: [Int]) in
            if values == [-1] {
                await occupied.openUp()
                await release.pass()
                return [0]
            }
            let attempt = attempts.withLock { count in
                count += 1
                return count
            }
            if attempt == 1 { throw Rejected() }
            await release.openUp()
            return values.map { $0 + 1 }
        }
        // A batch runs, so that the three runs gather into the next one.
        let occupying = Task { try await flaky(-1) }
        await occupied.pass()
        let pipeline = Pipeline("flaky") { (value: Int) in try await flaky(value) }
        let tracker = RecordingTracker()
        let results = await runConcurrently(pipeline, [1, 2, 3], capture: .realtime, tracker: tracker)
        #expect(try await occupying.value == 0)
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
        let occupied = Gate()
        let release = Gate()
        let broken = Step("broken", batch: .init(maxSize: 2, maxWait: .seconds(3600))) { (values: [Int]) in
            if values == [-1] {
                await occupied.openUp()
                await release.pass()
                return [0]
            }
            await release.openUp()
            if throwing { throw Rejected() }
            return [values[0]]
        }
        // A batch runs, so that the two runs gather into the next one.
        let occupying = Task { try await broken(-1) }
        await occupied.pass()
        let pipeline = Pipeline("broken") { (value: Int) in try await broken(value) }
        let tracker = RecordingTracker()
        let results = await runConcurrently(pipeline, [1, 2], capture: .batch, tracker: tracker)
        #expect(try await occupying.value == 0)
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
