#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Clock readings for events, durations and deadlines, in microseconds, without Foundation.
public enum Timestamps {
    /// Wall-clock time since 1970: an event's `ts`, and what a request's deadline is compared with.
    public static func wallMicros() -> Int64 {
        read(CLOCK_REALTIME)
    }

    /// A monotonic reading: durations are differences of two of these.
    public static func monotonicMicros() -> Int64 {
        read(CLOCK_MONOTONIC)
    }

    private static func read(_ clock: clockid_t) -> Int64 {
        var now = timespec()
        clock_gettime(clock, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1_000
    }
}
