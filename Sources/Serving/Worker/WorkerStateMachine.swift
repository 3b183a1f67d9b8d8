import Kafka

/// What a worker's reading lanes, delivery rounds, drains and revokes share: its phase, the slots under
/// `concurrency`, the requests in flight with their partitions' offset watermarks, the tasks waiting for a slot or
/// for requests to end, and the deliveries being retried. A value kept behind a lock; each transition returns what to
/// resume (or which offsets to store) once the lock is released, and ``Worker`` does it. Generic over the consumer and
/// the waiters' continuations so that it is tested without a broker or a task.
struct WorkerStateMachine<Consumer, SlotWaiter, ProgressWaiter> {
    enum Phase: Equatable {
        /// The consumer is being created.
        case starting
        case serving
        /// ``Worker/stop()`` was called, or the service group is shutting down: the phase never changes again.
        case stopping
    }

    /// A wait for a condition on the state that only the end of a request can make true.
    private struct ProgressWait {
        let isDone: @Sendable (WorkerStateMachine) -> Bool
        let waiter: ProgressWaiter
    }

    let concurrency: Int
    private(set) var phase = Phase.starting
    private(set) var consumer: Consumer?
    /// Slots under `concurrency` held by reading lanes and by requests waiting for their acknowledgements.
    private(set) var slotsTaken = 0
    /// Requests taken from the consumer and not yet finished.
    private(set) var requests = 0
    private var watermarks: [TopicPartition: OffsetWatermark] = [:]
    private var slotWaiters: [SlotWaiter] = []
    /// Drains and revokes waiting for requests to end, by id; checked whenever a slot is freed.
    private var progressWaits: [UInt64: ProgressWait] = [:]
    private var nextWaitID: UInt64 = 0
    /// Requests whose delivery is being retried after an error worth retrying.
    private var retrying = 0
    /// While `retrying > 0`: when the first of them failed, or the last acknowledgement since.
    private var lastProgress: ContinuousClock.Instant?

    init(concurrency: Int) {
        self.concurrency = concurrency
    }

    var isStopping: Bool { phase == .stopping }

    /// Requests of `partition` taken and not yet finished (or finished after one still running).
    func inFlight(of partition: TopicPartition) -> Int { watermarks[partition]?.count ?? 0 }

    /// The health status at `now`: `stalled` while serving when deliveries have failed, with nothing acknowledged,
    /// for longer than `stallLimit`.
    func status(at now: ContinuousClock.Instant, stallLimit: Duration) -> WorkerHealth.Status {
        switch phase {
        case .starting: return .starting
        case .stopping: return .stopping
        case .serving:
            if let since = lastProgress, now - since > stallLimit { return .stalled }
            return .serving
        }
    }

    // MARK: - Life

    /// The consumer exists. Returns whether the worker was stopped meanwhile (the consumer is then to stop reading).
    mutating func consumerCreated(_ consumer: Consumer) -> Bool {
        self.consumer = consumer
        if phase == .starting { phase = .serving }
        return phase == .stopping
    }

    /// Stops taking requests. Returns the consumer (to stop reading) and the tasks waiting for a slot (to resume: they
    /// see the stop).
    mutating func stop() -> (consumer: Consumer?, slotWaiters: [SlotWaiter]) {
        phase = .stopping
        defer { slotWaiters.removeAll() }
        return (consumer, slotWaiters)
    }

    // MARK: - Slots

    /// A reading lane asks for a slot: `true` when granted, `false` when stopping, `nil` when every slot is taken
    /// (the lane then waits with ``waitForSlot(_:)``).
    mutating func acquireSlot() -> Bool? {
        if phase == .stopping { return false }
        guard slotsTaken < concurrency else { return nil }
        slotsTaken += 1
        return true
    }

    /// Queues `waiter` for the next freed slot; `false` when there is no need to wait (a slot was freed meanwhile, or
    /// stopping): the caller resumes it and asks again.
    mutating func waitForSlot(_ waiter: SlotWaiter) -> Bool {
        if phase == .stopping || slotsTaken < concurrency { return false }
        slotWaiters.append(waiter)
        return true
    }

    /// Frees `count` slots, ending their requests if they held them. Returns the slot waiters to resume (one per
    /// slot) and the progress waiters whose condition now holds.
    mutating func releaseSlots(
        _ count: Int, endingRequests: Bool
    ) -> (slots: [SlotWaiter], progressed: [ProgressWaiter]) {
        slotsTaken -= count
        if endingRequests { requests -= count }
        let woken = Array(slotWaiters.prefix(count))
        slotWaiters.removeFirst(woken.count)
        return (woken, takeProgressWaitersDone())
    }

    // MARK: - Requests

    /// A request was taken at `offset` of `partition`.
    mutating func begin(_ partition: TopicPartition, offset: Int64) {
        requests += 1
        watermarks[partition, default: OffsetWatermark()].begin(offset)
    }

    /// Requests were answered (acknowledged): a delivery round's, in the order the round reported them. Returns the
    /// offsets to store, by partition. Their slots are freed with ``releaseSlots(_:endingRequests:)``.
    mutating func finish<Finished: Sequence<(partition: TopicPartition, offset: Int64)>>(
        _ finished: Finished, at now: ContinuousClock.Instant
    ) -> [TopicPartition: Int64] {
        // Deliveries are retried: this acknowledgement is progress.
        if lastProgress != nil { lastProgress = now }
        var offsets: [TopicPartition: Int64] = [:]
        // The watermark of the partition being finished is out of the dictionary, put back when the partition
        // changes: finishing through the dictionary's subscript nests three `modify` accessors, and each allocated
        // its frame (three mallocs a request).
        var partition: TopicPartition?
        var watermark: OffsetWatermark?
        for request in finished {
            if request.partition != partition {
                if let partition, let watermark { watermarks[partition] = watermark }
                partition = request.partition
                watermark = watermarks.removeValue(forKey: request.partition)
            }
            if let next = watermark?.finish(request.offset) { offsets[request.partition] = next }
        }
        if let partition, let watermark { watermarks[partition] = watermark }
        return offsets
    }

    /// The partitions are gone (revoked): what of theirs is still running is given up.
    mutating func forget(_ partitions: Set<TopicPartition>) {
        for partition in partitions { watermarks[partition] = nil }
    }

    // MARK: - Waiting for requests to end

    /// An id for ``waitForProgress(id:until:_:cancelled:)``.
    mutating func makeWaitID() -> UInt64 {
        defer { nextWaitID &+= 1 }
        return nextWaitID
    }

    /// Waits until `isDone` holds for the state: `true` when it holds now, `false` when the waiting task is
    /// `cancelled`, `nil` when `waiter` now waits (it is returned by ``releaseSlots(_:endingRequests:)`` once the
    /// condition holds, or by ``cancelProgressWait(id:)``).
    mutating func waitForProgress(
        id: UInt64, until isDone: @escaping @Sendable (WorkerStateMachine) -> Bool, _ waiter: ProgressWaiter,
        cancelled: Bool
    ) -> Bool? {
        if isDone(self) { return true }
        if cancelled { return false }
        progressWaits[id] = ProgressWait(isDone: isDone, waiter: waiter)
        return nil
    }

    /// The wait `id` is given up (its deadline passed, or its task was cancelled): its waiter, if it still waited.
    mutating func cancelProgressWait(id: UInt64) -> ProgressWaiter? {
        progressWaits.removeValue(forKey: id)?.waiter
    }

    private mutating func takeProgressWaitersDone() -> [ProgressWaiter] {
        guard !progressWaits.isEmpty else { return [] }
        let done = progressWaits.filter { $0.value.isDone(self) }
        for id in done.keys { progressWaits[id] = nil }
        return done.values.map(\.waiter)
    }

    // MARK: - Deliveries retried

    /// A delivery failed with an error worth retrying and will be tried again.
    mutating func beginRetrying(at now: ContinuousClock.Instant) {
        if retrying == 0 { lastProgress = now }
        retrying += 1
    }

    /// A delivery that was retried ended (delivered, refused, or given up).
    mutating func endRetrying() {
        retrying -= 1
        if retrying == 0 { lastProgress = nil }
    }
}
