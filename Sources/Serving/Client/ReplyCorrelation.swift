import DequeModule

/// The state of a ``PipelineClient``: which calls wait for which request ids, what became of the ids answered or given
/// up lately, and which partitions of the reply topic the client reads. Its transitions return what to do outside
/// the client's lock.
///
/// Memory is bounded: at most `maxWaiting` calls wait at once (a call beyond that is refused), and the fate of at
/// most `finishedCapacity` finished ids is remembered (to tell a duplicate or a late response from another client's).
struct ReplyCorrelation<Waiter: Sendable>: Sendable {
    /// What became of a finished request id, for the responses that still come for it.
    enum Fate {
        case answered
        case timedOut
    }

    /// How a response was taken.
    enum Delivery: Sendable {
        /// The response of a waiting call: hand it to `waiter`.
        case deliver(Waiter)
        /// A second response to an answered request (a redelivery after a worker crashed): dropped.
        case duplicate
        /// A response whose call gave up waiting: dropped.
        case late
        /// A response to a request this client did not send (another client's on a shared partition, or one older
        /// than what the client remembers): dropped.
        case unmatched
    }

    /// Whether a call may wait for its response.
    enum Registration: Equatable, Sendable {
        /// It waits; its request names `partition` of the reply topic (`nil`: none); `token` names its wait for
        /// ``expire(_:)``.
        case waiting(partition: Int32?, token: UInt64)
        /// It cannot wait, for `reason`.
        case refused(PipelineClient.Refused.Reason)
    }

    /// Counts of the responses dropped, by why.
    struct Dropped: Equatable, Sendable {
        var duplicates = 0
        var late = 0
        var unmatched = 0
    }

    private struct Waiting: Sendable {
        var waiter: Waiter
        var partition: Int32?
        var token: UInt64
    }

    let maxWaiting: Int
    let finishedCapacity: Int
    private var waiting: [String: Waiting] = [:]
    /// The request id of each waiting call, by its token.
    private var waitingByToken: [UInt64: String] = [:]
    private var lastToken: UInt64 = 0
    private var finished: [String: Fate] = [:]
    private var finishedOrder: Deque<String> = []
    /// The reply partitions this client reads and names in its requests, sorted; `nil` when it reads the whole topic
    /// and names no partition.
    private(set) var partitions: [Int32]?
    private var nextPartition = 0
    private(set) var dropped = Dropped()

    /// - Parameter sharesTopic: whether the client reads only partitions given to it (``assign(_:)``), naming one in
    ///   each request, rather than the whole reply topic.
    init(sharesTopic: Bool, maxWaiting: Int, finishedCapacity: Int = 100_000) {
        self.maxWaiting = maxWaiting
        self.finishedCapacity = finishedCapacity
        partitions = sharesTopic ? [] : nil
    }

    /// Calls waiting for their response.
    var waitingCount: Int { waiting.count }

    /// Registers a call for `id`, choosing its reply partition (in turn among those the client reads).
    mutating func register(_ id: String, waiter: Waiter) -> Registration {
        guard waiting[id] == nil else { return .refused(.duplicateRequestID) }
        guard waiting.count < maxWaiting else { return .refused(.tooManyWaiting(maxWaiting)) }
        var partition: Int32?
        if let partitions {
            guard !partitions.isEmpty else { return .refused(.noReplyPartition) }
            nextPartition = (nextPartition + 1) % partitions.count
            partition = partitions[nextPartition]
        }
        lastToken += 1
        waiting[id] = Waiting(waiter: waiter, partition: partition, token: lastToken)
        waitingByToken[lastToken] = id
        return .waiting(partition: partition, token: lastToken)
    }

    /// Takes a response to `id`.
    mutating func resolve(_ id: String) -> Delivery {
        if let call = waiting.removeValue(forKey: id) {
            waitingByToken.removeValue(forKey: call.token)
            remember(id, .answered)
            return .deliver(call.waiter)
        }
        switch finished[id] {
        case .answered?:
            dropped.duplicates += 1
            return .duplicate
        case .timedOut?:
            dropped.late += 1
            return .late
        case nil:
            dropped.unmatched += 1
            return .unmatched
        }
    }

    /// Ends the wait named by `token`, if it still waits, without a response (it timed out, was cancelled, or its
    /// request could not be sent): a response that still comes counts as late.
    /// - Returns: the call's waiter, when it still waited.
    @discardableResult
    mutating func giveUp(_ token: UInt64) -> Waiter? {
        guard let id = waitingByToken.removeValue(forKey: token) else { return nil }
        remember(id, .timedOut)
        return waiting.removeValue(forKey: id)?.waiter
    }

    /// Ends the waits named by `tokens` (their timeouts passed); a token whose call ended already is ignored.
    /// - Returns: the calls to tell they timed out.
    mutating func expire(_ tokens: [UInt64]) -> [(id: String, waiter: Waiter)] {
        tokens.compactMap { token in
            guard let id = waitingByToken[token], let call = waiting[id] else { return nil }
            giveUp(token)
            return (id, call.waiter)
        }
    }

    /// Adds `added` to the partitions the client reads.
    mutating func assign(_ added: [Int32]) {
        guard var current = partitions else { return }
        current.append(contentsOf: added.filter { !current.contains($0) })
        partitions = current.sorted()
    }

    /// Removes `removed` from the partitions the client reads.
    /// - Returns: the calls that named one of them: their responses will reach another client, so they will never
    ///   come here.
    mutating func revoke(_ removed: [Int32]) -> [(id: String, waiter: Waiter)] {
        guard let current = partitions else { return [] }
        partitions = current.filter { !removed.contains($0) }
        let stranded = waiting.filter { _, call in call.partition.map(removed.contains) ?? false }
        for call in stranded.values { giveUp(call.token) }
        return stranded.map { ($0.key, $0.value.waiter) }
    }

    /// Ends every wait (the client closes).
    mutating func removeAll() -> [(id: String, waiter: Waiter)] {
        defer {
            waiting.removeAll()
            waitingByToken.removeAll()
        }
        return waiting.map { ($0.key, $0.value.waiter) }
    }

    private mutating func remember(_ id: String, _ fate: Fate) {
        if finished.updateValue(fate, forKey: id) == nil { finishedOrder.append(id) }
        if finishedOrder.count > finishedCapacity { finished.removeValue(forKey: finishedOrder.removeFirst()) }
    }
}
