import HeapModule

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Deadlines for many waits at once, on one thread of its own: ``schedule(_:after:)`` files a token, and the thread,
/// asleep until the earliest deadline, hands each token whose deadline passed to `expire`.
///
/// For per-call timeouts at thousands of calls a second: a sleeping task per call costs two tasks and a libdispatch
/// timer each (a wake-up of libdispatch's manager thread per call); a deadline filed here costs a lock and a heap
/// insertion, and wakes the thread only when it is earlier than every other. A token whose wait ended before its
/// deadline stays filed until then, and the one who reads `expire` ignores it: at most (calls per second × timeout)
/// tokens of 16 bytes are filed.
public final class DeadlineScheduler: @unchecked Sendable {
    // @unchecked Sendable: `deadlines` and `stopped` are read and written only with `mutex` held.
    private struct Deadline: Comparable {
        var nanoseconds: UInt64
        var token: UInt64
        static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var deadlines = Heap<Deadline>()
    private var stopped = false
    private let expire: @Sendable ([UInt64]) -> Void
    private var thread: DedicatedThread?

    /// Starts the thread, named `name`.
    /// - Parameter expire: called on the thread with the tokens whose deadlines passed, in deadline order.
    /// - Throws: ``ThreadStartError`` if the system refuses the thread.
    public init(name: String, expire: @escaping @Sendable ([UInt64]) -> Void) throws {
        self.expire = expire
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
        thread = try DedicatedThread.start(name: name) { [self] in run() }
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Files `token` to expire `delay` from now.
    public func schedule(_ token: UInt64, after delay: Duration) {
        let components = delay.components
        let nanoseconds =
            Self.now() + UInt64(max(0, components.seconds)) * 1_000_000_000
            + UInt64(max(0, components.attoseconds / 1_000_000_000))
        pthread_mutex_lock(mutex)
        let earliest = deadlines.min.map { nanoseconds < $0.nanoseconds } ?? true
        deadlines.insert(Deadline(nanoseconds: nanoseconds, token: token))
        pthread_mutex_unlock(mutex)
        if earliest { pthread_cond_signal(condition) }
    }

    /// Ends the thread; tokens still filed never expire. Not from `expire`; a second call does nothing.
    public func stop() {
        pthread_mutex_lock(mutex)
        let first = !stopped
        stopped = true
        pthread_mutex_unlock(mutex)
        guard first else { return }
        pthread_cond_signal(condition)
        thread?.join()
    }

    private func run() {
        pthread_mutex_lock(mutex)
        while !stopped {
            guard let earliest = deadlines.min else {
                pthread_cond_wait(condition, mutex)
                continue
            }
            let now = Self.now()
            guard earliest.nanoseconds <= now else {
                var until = timespec(
                    tv_sec: Int(earliest.nanoseconds / 1_000_000_000),
                    tv_nsec: Int(earliest.nanoseconds % 1_000_000_000))
                pthread_cond_timedwait(condition, mutex, &until)
                continue
            }
            var expired: [UInt64] = []
            while let next = deadlines.min, next.nanoseconds <= now { expired.append(deadlines.removeMin().token) }
            pthread_mutex_unlock(mutex)
            expire(expired)
            pthread_mutex_lock(mutex)
        }
        pthread_mutex_unlock(mutex)
    }

    /// `CLOCK_MONOTONIC` in nanoseconds, the clock the thread's waits use.
    private static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
