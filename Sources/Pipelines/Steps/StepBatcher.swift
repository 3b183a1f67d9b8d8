import Synchronization
import Tracing

/// How a batched step gathers concurrent calls into one call of its body.
///
/// A batch is called when it holds `maxSize` inputs, or `maxWait` after its first input arrived, whichever comes
/// first. See docs/capture.md, "Batched steps".
public struct BatchPolicy: Sendable, Hashable {
    /// The most inputs in one call, at least 1.
    public var maxSize: Int
    /// The longest the first input of a batch waits for others, at least zero.
    public var maxWait: Duration

    public init(maxSize: Int, maxWait: Duration = .milliseconds(2)) {
        self.maxSize = max(1, maxSize)
        self.maxWait = max(.zero, maxWait)
    }
}

/// What one call of a batched step got from its batch.
@usableFromInline struct BatchOutcome<Output: Sendable>: Sendable {
    /// The call's own output, or what the batch's last attempt threw.
    let output: Result<Output, any Error>
    /// How many calls the batch held.
    let batchSize: Int
    /// Which attempt of the batch gave `output`, from 1.
    let attempt: Int
    /// How long that attempt took for this call, in microseconds: the first from when the call joined its batch.
    let micros: Int64
}

/// A batched step's body returned a different number of outputs than it was given inputs.
struct BatchOutputCountMismatch: Error, CustomStringConvertible {
    let step: String
    let inputs: Int
    let outputs: Int

    var description: String {
        "the batched step '\(step)' returned \(outputs) outputs for \(inputs) inputs"
    }
}

/// Gathers the calls of one batched step into batches and calls the step's body once per batch, with the step's
/// retry policy applied to the whole batch.
///
/// A batch is called when it is full, when every run in progress in the process is waiting in it (no other run could
/// join it: ``RunsInProgress``), or `maxWait` after its first call, whichever comes first. The call that completes a
/// batch runs it in its own task (outside its run's context, which the body does not see); a batch that its timer
/// ends, or whose last call's task is cancelled, runs in a task of its own. Several batches may run at once.
@usableFromInline final class StepBatcher<Item: Sendable, Output: Sendable>: Sendable {
    /// Told that attempt `attempt` of the caller's batch failed with the error after `micros` (the first attempt's
    /// counted from when the call joined), and that the batch is tried again.
    @usableFromInline typealias RetryObserver = @Sendable (_ attempt: Int, _ error: any Error, _ micros: Int64) -> Void

    private struct Call {
        let item: Item
        /// When the call joined its batch (``Timestamps/monotonicMicros()``).
        let joined: Int64
        let continuation: CheckedContinuation<Turn, Never>
        let observer: RetryObserver?
    }

    /// What a call is handed when it resumes: its outcome, or the batch it completed, to run.
    private enum Turn {
        case outcome(BatchOutcome<Output>)
        case lead([Call])
    }

    /// The batch being gathered; `generation` tells the timer of an earlier batch that its batch has gone.
    private struct State {
        var pending: [Call] = []
        var generation: UInt64 = 0

        /// What to do after a call joined, outside the lock.
        enum Action {
            case none
            /// The call opened a batch that waits for others: start its timer.
            case startTimer(generation: UInt64)
            /// The call completed the batch: run it.
            case run([Call])
        }

        /// Adds `call`; the batch is complete at `maxSize` calls, or when it holds every one of `inProgress` runs
        /// (0: not counted).
        mutating func join(_ call: Call, maxSize: Int, inProgress: Int) -> Action {
            pending.append(call)
            if pending.count >= maxSize || (inProgress > 0 && pending.count >= inProgress) { return .run(take()) }
            return pending.count == 1 ? .startTimer(generation: generation) : .none
        }

        /// The batch of `timer`'s generation, if it is still gathering.
        mutating func expire(_ timer: UInt64) -> [Call]? {
            guard timer == generation, !pending.isEmpty else { return nil }
            return take()
        }

        private mutating func take() -> [Call] {
            generation &+= 1
            defer { pending = [] }
            return pending
        }
    }

    let name: String
    let policy: BatchPolicy
    let retry: RetryPolicy
    private let body: @Sendable ([Item]) async throws -> [Output]
    private let state = Mutex(State())

    init(
        name: String, policy: BatchPolicy, retry: RetryPolicy,
        body: @escaping @Sendable ([Item]) async throws -> [Output]
    ) {
        self.name = name
        self.policy = policy
        self.retry = retry
        self.body = body
        RunsInProgress.startCounting()
    }

    /// Adds `item` to the batch being gathered and returns what its batch gave it.
    /// - Parameter observer: told of each failed attempt of the batch that is tried again.
    @usableFromInline func submit(_ item: Item, observer: RetryObserver?) async -> BatchOutcome<Output> {
        let inProgress = RunsInProgress.count
        let turn = await withCheckedContinuation { continuation in
            let call = Call(
                item: item, joined: Timestamps.monotonicMicros(), continuation: continuation, observer: observer)
            switch state.withLock({ $0.join(call, maxSize: policy.maxSize, inProgress: inProgress) }) {
            case .none:
                break
            case .startTimer(let generation):
                let wait = policy.maxWait
                Task.detached {
                    if wait > .zero { try? await Task.sleep(for: wait) }
                    guard let batch = self.state.withLock({ $0.expire(generation) }) else { return }
                    await self.run(batch, ledByLast: false)
                }
            case .run(let batch) where Task.isCancelled:
                // Its task's cancellation is not the batch's.
                Task.detached { await self.run(batch, ledByLast: false) }
            case .run(let batch):
                continuation.resume(returning: .lead(batch))
            }
        }
        switch turn {
        case .outcome(let outcome):
            return outcome
        case .lead(let batch):
            // Outside the caller's run: the body serves every run of the batch.
            return await RunContext.$current.withValue(nil) {
                await ServiceContext.withValue(.topLevel) { await run(batch, ledByLast: true) }
            }
        }
    }

    /// Calls the body on the batch, tried again as the retry policy says, and hands each call its outcome, and returns
    /// the last call's; when the batch's last call runs it (`ledByLast`), that call's outcome is not handed over.
    @discardableResult
    private func run(_ batch: [Call], ledByLast: Bool) async -> BatchOutcome<Output> {
        let items = batch.map(\.item)
        var attempt = 1
        // When the attempt started, for calls past their first attempt.
        var started = Timestamps.monotonicMicros()
        func micros(_ call: Call, now: Int64) -> Int64 { now - (attempt == 1 ? call.joined : started) }
        func finish(_ outputs: Result<[Output], any Error>) -> BatchOutcome<Output> {
            let now = Timestamps.monotonicMicros()
            func outcome(_ index: Int) -> BatchOutcome<Output> {
                BatchOutcome(
                    output: outputs.map { $0[index] }, batchSize: batch.count, attempt: attempt,
                    micros: micros(batch[index], now: now))
            }
            for index in batch.indices.dropLast() {
                batch[index].continuation.resume(returning: .outcome(outcome(index)))
            }
            let last = outcome(batch.count - 1)
            if !ledByLast { batch[batch.count - 1].continuation.resume(returning: .outcome(last)) }
            return last
        }
        while true {
            do {
                let outputs = try await body(items)
                guard outputs.count == batch.count else {
                    throw BatchOutputCountMismatch(step: name, inputs: batch.count, outputs: outputs.count)
                }
                return finish(.success(outputs))
            } catch {
                guard retry.retries(after: attempt) else { return finish(.failure(error)) }
                let now = Timestamps.monotonicMicros()
                for call in batch { call.observer?(attempt, error, micros(call, now: now)) }
                await retry.wait(after: attempt)
                attempt += 1
                started = Timestamps.monotonicMicros()
            }
        }
    }
}

/// How many runs are in progress in the process (tracked runs and ``Pipeline/run(_:)``), counted once a batched step
/// exists: a batch that holds as many calls as there are runs in progress waits for no other.
@usableFromInline enum RunsInProgress {
    private static let counting = Atomic<Bool>(false)
    private static let running = Atomic<Int>(0)

    static func startCounting() {
        counting.store(true, ordering: .relaxed)
    }

    /// The runs in progress, or 0 when they are not counted.
    static var count: Int { running.load(ordering: .relaxed) }

    /// Counts a run that starts, if runs are counted; returns whether it did, for ``end()``.
    @usableFromInline static func begin() -> Bool {
        guard counting.load(ordering: .relaxed) else { return false }
        running.add(1, ordering: .relaxed)
        return true
    }

    /// A run that ``begin()`` counted has ended.
    @usableFromInline static func end() {
        running.subtract(1, ordering: .relaxed)
    }
}

/// The rows of a batch as one array per input: what a batched step's body takes.
func columns<each Input>(_ rows: [(repeat each Input)]) -> (repeat [each Input]) {
    let columns = (repeat Column<each Input>(capacity: rows.count))
    for row in rows {
        repeat (each columns).values.append(each row)
    }
    return (repeat (each columns).values)
}

/// One input's values across a batch, filled in place.
final class Column<Value> {
    var values: [Value] = []

    init(capacity: Int) {
        values.reserveCapacity(capacity)
    }
}
