import Synchronization

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
/// A batch runs in a task of its own, outside every run, so that cancelling one run does not cancel its batch and no
/// run's context leaks into the body. Several batches may run at once.
@usableFromInline final class StepBatcher<Item: Sendable, Output: Sendable>: Sendable {
    /// Told that attempt `attempt` of the caller's batch failed with the error after `micros` (the first attempt's
    /// counted from when the call joined), and that the batch is tried again.
    @usableFromInline typealias RetryObserver = @Sendable (_ attempt: Int, _ error: any Error, _ micros: Int64) -> Void

    private struct Call {
        let item: Item
        /// When the call joined its batch (``Timestamps/monotonicMicros()``).
        let joined: Int64
        let continuation: CheckedContinuation<BatchOutcome<Output>, Never>
        let observer: RetryObserver?
    }

    /// The batch being gathered; `generation` tells the timer of an earlier batch that its batch has gone.
    private struct State {
        var pending: [Call] = []
        var generation: UInt64 = 0

        /// What to do after a call joined, outside the lock.
        enum Action {
            case none
            /// The call opened a batch: start its timer.
            case startTimer(generation: UInt64)
            /// The batch is full: run it.
            case run([Call])
        }

        mutating func join(_ call: Call, maxSize: Int) -> Action {
            pending.append(call)
            if pending.count >= maxSize { return .run(take()) }
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
    }

    /// Adds `item` to the batch being gathered and returns what its batch gave it.
    /// - Parameter observer: told of each failed attempt of the batch that is tried again.
    @usableFromInline func submit(_ item: Item, observer: RetryObserver?) async -> BatchOutcome<Output> {
        await withCheckedContinuation { continuation in
            let call = Call(
                item: item, joined: Timestamps.monotonicMicros(), continuation: continuation, observer: observer)
            switch state.withLock({ $0.join(call, maxSize: policy.maxSize) }) {
            case .none:
                break
            case .startTimer(let generation):
                let wait = policy.maxWait
                Task.detached {
                    if wait > .zero { try? await Task.sleep(for: wait) }
                    guard let batch = self.state.withLock({ $0.expire(generation) }) else { return }
                    await self.run(batch)
                }
            case .run(let batch):
                Task.detached { await self.run(batch) }
            }
        }
    }

    /// Calls the body on the batch, tried again as the retry policy says, and hands each call its outcome.
    private func run(_ batch: [Call]) async {
        let items = batch.map(\.item)
        var attempt = 1
        // When the attempt started, for calls past their first attempt.
        var started = Timestamps.monotonicMicros()
        func micros(_ call: Call, now: Int64) -> Int64 { now - (attempt == 1 ? call.joined : started) }
        while true {
            let output: Result<[Output], any Error>
            do {
                let outputs = try await body(items)
                guard outputs.count == batch.count else {
                    throw BatchOutputCountMismatch(step: name, inputs: batch.count, outputs: outputs.count)
                }
                output = .success(outputs)
            } catch {
                output = .failure(error)
            }
            let now = Timestamps.monotonicMicros()
            switch output {
            case .success(let outputs):
                for (call, output) in zip(batch, outputs) {
                    call.continuation.resume(
                        returning: BatchOutcome(
                            output: .success(output), batchSize: batch.count, attempt: attempt,
                            micros: micros(call, now: now)))
                }
                return
            case .failure(let error) where !retry.retries(after: attempt):
                for call in batch {
                    call.continuation.resume(
                        returning: BatchOutcome(
                            output: .failure(error), batchSize: batch.count, attempt: attempt,
                            micros: micros(call, now: now)))
                }
                return
            case .failure(let error):
                for call in batch { call.observer?(attempt, error, micros(call, now: now)) }
                await retry.wait(after: attempt)
                attempt += 1
                started = Timestamps.monotonicMicros()
            }
        }
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
