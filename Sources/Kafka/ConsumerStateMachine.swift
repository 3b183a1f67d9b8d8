import DequeModule

/// What a consumer's poll thread, its readers and its rebalance callback share: the buffer of records, the readers
/// waiting for one, the room the poll thread has, the assignment and the pauses, and where the consumer is in its
/// life. A value kept behind a lock; each transition returns what to do once the lock is released (resume a reader,
/// wake the poll thread, pause or resume partitions), and ``ConsumerClient`` does it. Generic over the reader's
/// continuation so that it is tested without a broker or a task.
///
/// The buffer holds at most `capacity` records. When it is full, the poll thread waits for the readers to take it down
/// to `capacity / 2` (``Room/pollThreadWaiting``); if it stays full for the wait's limit, the partitions are paused
/// (``Room/paused``) until the readers have taken it down to half.
struct ConsumerStateMachine<Reader> {
    enum Lifecycle: Equatable {
        /// The poll thread runs.
        case polling
        /// The poll thread is stopping, then the handle closes.
        case shuttingDown
        /// Readers get `nil`; nothing of librdkafka's may be called.
        case closed
    }

    /// Whether the poll thread may fill the buffer.
    enum Room: Equatable {
        case free
        /// The buffer is full: the poll thread waits for the readers to take it down to half.
        case pollThreadWaiting
        /// The buffer stayed full: every assigned partition is paused until it is down to half.
        case paused
    }

    /// What a taken record asks of the consumer besides: the poll thread to be woken (to resume partitions), the
    /// poll thread's wait for room to end.
    struct Wake: Equatable {
        var pollThread = false
        var roomWaiter = false
    }

    /// Where a revoke of partitions is. While its hook runs on the pool the poll thread goes on polling, and drops
    /// the records of those partitions that still arrive; once the hook has finished, the poll thread commits and
    /// unassigns them.
    enum Revocation: Equatable {
        case none
        case hookRunning(Set<TopicPartition>)
        case hookFinished(Set<TopicPartition>)
    }

    /// What a reader gets.
    enum Read {
        /// A record now (`nil`: none will come), and what to wake.
        case now(KafkaMessage?, Wake)
        /// The reader waits: it is resumed by ``ConsumerStateMachine/arrived(_:)`` or ``stopReading()``.
        case waiting
    }

    let capacity: Int
    let resumeLevel: Int
    private(set) var lifecycle = Lifecycle.polling
    /// ``stopReading()`` was called: readers get `nil`, the group membership stays.
    private(set) var readingStopped = false
    private(set) var room = Room.free
    private var buffer = Deque<KafkaMessage>()
    private var readers = Deque<(id: UInt64, reader: Reader)>()
    private var nextReaderID: UInt64 = 0
    private(set) var assignment: Set<TopicPartition> = []
    /// An assignment was received (the group's, possibly empty, or a fixed one): the consumer has joined.
    private(set) var hasJoined = false
    private var pausedByUser: Set<TopicPartition> = []
    /// What librdkafka has paused now; only the poll thread (or the closing thread, once it has stopped) changes it.
    private(set) var pausedNow: Set<TopicPartition> = []
    /// Something that decides the paused set changed: the poll thread reconciles before it polls again.
    private var pauseStale = false
    private(set) var revocation = Revocation.none

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        resumeLevel = self.capacity / 2
    }

    var bufferedCount: Int { buffer.count }
    var isPolling: Bool { lifecycle == .polling }
    var isClosed: Bool { lifecycle == .closed }
    /// Records the poll thread may add now.
    var roomLeft: Int { capacity - buffer.count }

    // MARK: - Records (poll thread)

    /// A record arrived: handed to the first waiting reader (returned, to resume with it), else buffered; dropped
    /// when its partition is being revoked (its next owner reads it).
    mutating func arrived(_ message: KafkaMessage) -> Reader? {
        switch revocation {
        case .hookRunning(let partitions), .hookFinished(let partitions):
            if partitions.contains(message.topicPartition) { return nil }
        case .none: break
        }
        if let waiting = readers.popFirst() { return waiting.reader }
        buffer.append(message)
        return nil
    }

    /// Whether the poll thread should wait for room before it polls again: the buffer is full and the partitions are
    /// not paused for it yet. The poll thread then waits (at most the pause limit) and calls ``roomWaitEnded(timedOut:)``.
    mutating func startWaitingForRoom() -> Bool {
        guard buffer.count >= capacity, room == .free, lifecycle == .polling else { return false }
        room = .pollThreadWaiting
        return true
    }

    /// The poll thread's wait for room ended; if it timed out with the buffer still full, the partitions are to be
    /// paused.
    mutating func roomWaitEnded(timedOut: Bool) {
        if room == .pollThreadWaiting { room = .free }
        if timedOut && buffer.count >= capacity { pauseStale = true }
    }

    /// The partitions to pause and resume so that librdkafka's paused set is what backpressure and the user ask
    /// for, if anything changed; ``pausedNow`` becomes that set. Poll thread only (or the closing thread).
    mutating func reconcilePauses() -> (pause: [TopicPartition], resume: [TopicPartition])? {
        guard pauseStale else { return nil }
        pauseStale = false
        if buffer.count >= capacity {
            room = .paused
        } else if buffer.count <= resumeLevel, room == .paused {
            room = .free
        }
        let wanted = room == .paused ? assignment : pausedByUser.intersection(assignment)
        defer { pausedNow = wanted }
        return (Array(wanted.subtracting(pausedNow)), Array(pausedNow.subtracting(wanted)))
    }

    // MARK: - Readers

    /// A new reader's id, for ``cancel(reader:)``.
    mutating func makeReaderID() -> UInt64 {
        defer { nextReaderID &+= 1 }
        return nextReaderID
    }

    /// The first buffered record, if any, and what taking it wakes.
    mutating func takeBuffered() -> (KafkaMessage, Wake)? {
        guard let message = buffer.popFirst() else { return nil }
        var wake = Wake()
        if buffer.count <= resumeLevel {
            if room == .paused && !pauseStale {
                pauseStale = true
                wake.pollThread = true
            }
            if room == .pollThreadWaiting {
                room = .free
                wake.roomWaiter = true
            }
        }
        return (message, wake)
    }

    /// A reader asks for a record: it gets one now, or `nil` now (reading stopped, closed, or the reader's task is
    /// `cancelled`), or waits.
    mutating func read(_ reader: Reader, id: UInt64, cancelled: Bool) -> Read {
        if readingStopped { return .now(nil, Wake()) }
        if let (message, wake) = takeBuffered() { return .now(message, wake) }
        if lifecycle == .closed || cancelled { return .now(nil, Wake()) }
        readers.append((id, reader))
        return .waiting
    }

    /// The reader `id` stopped waiting (its task was cancelled): returned to resume with `nil`, if it still waited.
    mutating func cancel(reader id: UInt64) -> Reader? {
        guard let index = readers.firstIndex(where: { $0.id == id }) else { return nil }
        return readers.remove(at: index).reader
    }

    /// Readers get `nil` from now on; the waiting ones are returned, to resume with `nil`.
    mutating func stopReading() -> [Reader] {
        readingStopped = true
        return takeReaders()
    }

    private mutating func takeReaders() -> [Reader] {
        defer { readers.removeAll() }
        return readers.map(\.reader)
    }

    // MARK: - Assignment and pauses

    /// Partitions the group assigned: their pause state is reconciled before the next poll.
    mutating func assigned(_ partitions: [TopicPartition]) {
        hasJoined = true
        assignment.formUnion(partitions)
        pauseStale = true
    }

    /// Partitions are being revoked: their buffered records are not handed out any more (their next owner reads them).
    /// `hookOnPool`: the revoke hook runs on the pool while the poll thread polls on; records of these partitions
    /// that arrive meanwhile are dropped, until ``takeFinishedRevocation()``.
    mutating func revoking(_ partitions: Set<TopicPartition>, hookOnPool: Bool) {
        buffer.removeAll { partitions.contains($0.topicPartition) }
        if hookOnPool { revocation = .hookRunning(partitions) }
    }

    /// The revoke hook that runs on the pool has finished. Returns whether to wake the poll thread (to commit and
    /// unassign).
    mutating func revokeHookFinished() -> Bool {
        guard case .hookRunning(let partitions) = revocation else { return false }
        revocation = .hookFinished(partitions)
        return true
    }

    /// The partitions of a revoke whose hook has finished, once: the poll thread (or the closing thread) then
    /// commits and unassigns them, and calls ``revoked(_:)``.
    mutating func takeFinishedRevocation() -> Set<TopicPartition>? {
        guard case .hookFinished(let partitions) = revocation else { return nil }
        revocation = .none
        return partitions
    }

    /// Partitions were revoked. Returns those librdkafka still has paused, to resume (librdkafka keeps a pause
    /// across reassignment).
    mutating func revoked(_ partitions: Set<TopicPartition>) -> [TopicPartition] {
        assignment.subtract(partitions)
        pausedByUser.subtract(partitions)
        defer { pausedNow.subtract(partitions) }
        return Array(pausedNow.intersection(partitions))
    }

    /// A rebalance error took the whole assignment away.
    mutating func assignmentLost() {
        assignment.removeAll()
        pauseStale = true
    }

    /// The user pauses or resumes partitions; the poll thread applies it before it polls again.
    mutating func setPausedByUser(_ partitions: [TopicPartition], _ paused: Bool) {
        if paused { pausedByUser.formUnion(partitions) } else { pausedByUser.subtract(partitions) }
        pauseStale = true
    }

    // MARK: - Shutdown

    /// The first call starts the shutdown (`true`): the poll thread stops at its next turn.
    mutating func beginShutdown() -> Bool {
        guard lifecycle == .polling else { return false }
        lifecycle = .shuttingDown
        return true
    }

    /// The handle is about to be destroyed: the buffer is dropped and the waiting readers are returned, to resume
    /// with `nil`.
    mutating func close() -> [Reader] {
        lifecycle = .closed
        buffer.removeAll()
        return takeReaders()
    }
}
