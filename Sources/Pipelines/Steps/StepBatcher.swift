import Synchronization
import Tracing

/// How a batched step gathers concurrent calls into one call of its body.
///
/// A call to an idle step runs at once; calls that arrive while a batch runs gather into the next one, which runs when
/// that batch ends, when it holds `maxSize` calls, or `maxWait` after its first call, whichever comes first. See
/// docs/capture.md, "Batched steps".
public struct BatchPolicy: Sendable, Hashable {
    /// The most inputs in one call, at least 1.
    public var maxSize: Int
    /// The longest the first call of a batch waits while another batch runs, at least zero: past it, the two run at
    /// once.
    public var maxWait: Duration

    public init(maxSize: Int, maxWait: Duration = .milliseconds(2)) {
        self.maxSize = max(1, maxSize)
        self.maxWait = max(.zero, maxWait)
    }
}

/// What one call of a batched step got from its batch.
@usableFromInline struct BatchOutcome<Output: Sendable>: Sendable {
    /// The call's own output, or what the batch's last attempt threw.
    @usableFromInline let output: Result<Output, any Error>
    /// How many calls the batch held.
    @usableFromInline let batchSize: Int
    /// Which attempt of the batch gave `output`, from 1.
    @usableFromInline let attempt: Int
    /// How long that attempt took for this call, in microseconds: the first from when the call joined its batch.
    @usableFromInline let micros: Int64

    @inlinable init(output: Result<Output, any Error>, batchSize: Int, attempt: Int, micros: Int64) {
        self.output = output
        self.batchSize = batchSize
        self.attempt = attempt
        self.micros = micros
    }
}

/// A batched step's body returned a different number of outputs than it was given inputs.
@usableFromInline struct BatchOutputCountMismatch: Error, CustomStringConvertible {
    let step: String
    let inputs: Int
    let outputs: Int

    @usableFromInline init(step: String, inputs: Int, outputs: Int) {
        self.step = step
        self.inputs = inputs
        self.outputs = outputs
    }

    @usableFromInline var description: String {
        "the batched step '\(step)' returned \(outputs) outputs for \(inputs) inputs"
    }
}

/// The calls of a batched step waiting for their batch, and how many batches run: the batcher's state, whose
/// transitions say what to do outside its lock. Inlinable, as is the batcher, so that both are compiled for the
/// step's own types where the step is declared.
@usableFromInline struct BatchGathering<Call: Sendable>: Sendable {
    @usableFromInline private(set) var pending: [Call] = []
    @usableFromInline private(set) var running = 0
    /// Tells the timer of an earlier batch that its batch has gone.
    @usableFromInline private(set) var generation: UInt64 = 0

    @inlinable init() {}

    /// What to do after a call joined.
    @usableFromInline enum Action: Sendable {
        case none
        /// The call opened a batch that waits for the running one: start its timer.
        case startTimer(generation: UInt64)
        /// Run the batch.
        case run([Call])
    }

    /// Adds `call`: the batch runs at once when no other runs or when it holds `maxSize` calls.
    @inlinable mutating func join(_ call: Call, maxSize: Int) -> Action {
        pending.append(call)
        if running == 0 || pending.count >= maxSize { return .run(take()) }
        return pending.count == 1 ? .startTimer(generation: generation) : .none
    }

    /// The batch of `timer`'s generation, to run beside the others, if it is still gathering.
    @inlinable mutating func expire(_ timer: UInt64) -> [Call]? {
        guard timer == generation, !pending.isEmpty else { return nil }
        return take()
    }

    /// A batch ended: the one gathered meanwhile, if any, runs next.
    @inlinable mutating func finish() -> [Call]? {
        running -= 1
        guard !pending.isEmpty else { return nil }
        return take()
    }

    @inlinable mutating func take() -> [Call] {
        generation &+= 1
        running += 1
        defer { pending = [] }
        return pending
    }
}

/// Gathers the calls of one batched step into batches and calls the step's body once per batch, with the step's
/// retry policy applied to the whole batch.
///
/// Work-conserving: a call to an idle step runs at once, as a batch of one; calls that arrive while a batch runs gather
/// and run together when it ends (or when full, or `maxWait` after the first of them, beside it). The longer the body
/// takes, the larger the batches grow. The call that starts a batch runs it in its own task, outside its run's context
/// (which the body does not see); a batch that follows another, that its timer starts, or whose call's task is
/// cancelled runs in a task of its own.
@usableFromInline final class StepBatcher<Item: Sendable, Output: Sendable>: Sendable {
    /// Told that attempt `attempt` of the caller's batch failed with the error after `micros` (the first attempt's
    /// counted from when the call joined), and that the batch is tried again.
    @usableFromInline typealias RetryObserver = @Sendable (_ attempt: Int, _ error: any Error, _ micros: Int64) -> Void

    @usableFromInline struct Call: Sendable {
        @usableFromInline let item: Item
        /// When the call joined its batch (``Timestamps/monotonicMicros()``).
        @usableFromInline let joined: Int64
        @usableFromInline let continuation: CheckedContinuation<Turn, Never>
        @usableFromInline let observer: RetryObserver?

        @inlinable init(
            item: Item, joined: Int64, continuation: CheckedContinuation<Turn, Never>, observer: RetryObserver?
        ) {
            self.item = item
            self.joined = joined
            self.continuation = continuation
            self.observer = observer
        }
    }

    /// What a call is handed when it resumes: its outcome, or the batch it completed, to run.
    @usableFromInline enum Turn: Sendable {
        case outcome(BatchOutcome<Output>)
        case lead([Call])
    }

    @usableFromInline let name: String
    @usableFromInline let policy: BatchPolicy
    @usableFromInline let retry: RetryPolicy
    @usableFromInline let body: @Sendable ([Item]) async throws -> [Output]
    @usableFromInline let state = Mutex(BatchGathering<Call>())

    @inlinable init(
        name: String, policy: BatchPolicy, retry: RetryPolicy,
        body: @escaping @Sendable ([Item]) async throws -> [Output]
    ) {
        self.name = name
        self.policy = policy
        self.retry = retry
        self.body = body
    }

    /// How many calls wait for a batch to start.
    var pendingCalls: Int { state.withLock { $0.pending.count } }

    /// Adds `item` to the batch being gathered and returns what its batch gave it.
    /// - Parameter observer: told of each failed attempt of the batch that is tried again.
    @inlinable func submit(_ item: Item, observer: RetryObserver?) async -> BatchOutcome<Output> {
        let turn = await withCheckedContinuation { continuation in
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

    /// Calls the body on the batch, tried again as the retry policy says, hands each call its outcome and returns the
    /// last call's (when the batch's last call runs it, `ledByLast`, that call's outcome is not handed over); then
    /// starts the batch gathered meanwhile.
    @inlinable @discardableResult
    func run(_ batch: [Call], ledByLast: Bool) async -> BatchOutcome<Output> {
        let outcome = await call(batch, ledByLast: ledByLast)
        if let next = state.withLock({ $0.finish() }) {
            Task.detached { await self.run(next, ledByLast: false) }
        }
        return outcome
    }

    /// The body on `batch`, with retries: see ``run(_:ledByLast:)``.
    @inlinable func call(_ batch: [Call], ledByLast: Bool) async -> BatchOutcome<Output> {
        let items = batch.map { $0.item }
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

/// The rows of a batch as one array per input: what a batched step's body takes.
@inlinable func columns<each Input>(_ rows: [(repeat each Input)]) -> (repeat [each Input]) {
    let columns = (repeat Column<each Input>(capacity: rows.count))
    for row in rows {
        repeat (each columns).values.append(each row)
    }
    return (repeat (each columns).values)
}

/// One input's values across a batch, filled in place.
@usableFromInline final class Column<Value> {
    @usableFromInline var values: [Value] = []

    @inlinable init(capacity: Int) {
        values.reserveCapacity(capacity)
    }
}
