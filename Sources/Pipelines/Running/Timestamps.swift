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

    /// `micros` (since 1970) as RFC 3339 in UTC with six fractional digits, `2026-11-30T21:14:30.123456Z`: what the
    /// store's lines and the JSON logs write (fixed width, so that text order is time order from year 0 to 9999).
    public static func rfc3339(micros: Int64) -> String {
        // Written digit by digit into the string's own storage: this runs for every time of every stored run.
        let written = String(unsafeUninitializedCapacity: rfc3339Length) { buffer in
            write(rfc3339Of: micros, to: buffer.baseAddress!) ? rfc3339Length : 0
        }
        guard written.isEmpty else { return written }
        // Outside four-digit years (only a hostile `ts`): the same fields, the year as it is.
        let (days, microsOfDay) = floorDivide(micros, 86_400_000_000)
        let date = civilDate(daysSinceEpoch: days)
        let seconds = microsOfDay / 1_000_000
        return
            "\(digits(date.year, 4))-\(digits(date.month, 2))-\(digits(date.day, 2))T\(digits(seconds / 3600, 2)):"
            + "\(digits(seconds / 60 % 60, 2)):\(digits(seconds % 60, 2)).\(digits(microsOfDay % 1_000_000, 6))Z"
    }

    /// The length of ``rfc3339(micros:)`` in a four-digit year.
    static var rfc3339Length: Int { 27 }

    /// Writes ``rfc3339(micros:)`` (``rfc3339Length`` bytes) at `output`, unless the year has more than four digits
    /// or is negative: then writes nothing and returns `false`.
    static func write(rfc3339Of micros: Int64, to output: UnsafeMutablePointer<UInt8>) -> Bool {
        let (days, microsOfDay) = floorDivide(micros, 86_400_000_000)
        let date = civilDate(daysSinceEpoch: days)
        guard (0...9999).contains(date.year) else { return false }
        // Two digits at a time (0...99 at `offset`), from a table: a division per digit was most of the cost.
        let pairs = decimalDigitPairs.utf8Start
        func pair(_ value: Int64, at offset: Int) {
            let index = Int(truncatingIfNeeded: value) &* 2
            output[offset] = pairs[index]
            output[offset + 1] = pairs[index + 1]
        }
        let seconds = microsOfDay / 1_000_000
        let fraction = microsOfDay % 1_000_000
        pair(date.year / 100, at: 0)
        pair(date.year % 100, at: 2)
        pair(date.month, at: 5)
        pair(date.day, at: 8)
        pair(seconds / 3600, at: 11)
        pair(seconds / 60 % 60, at: 14)
        pair(seconds % 60, at: 17)
        pair(fraction / 10_000, at: 20)
        pair(fraction / 100 % 100, at: 22)
        pair(fraction % 100, at: 24)
        (output[4], output[7], output[10]) = (UInt8(ascii: "-"), UInt8(ascii: "-"), UInt8(ascii: "T"))
        (output[13], output[16]) = (UInt8(ascii: ":"), UInt8(ascii: ":"))
        (output[19], output[26]) = (UInt8(ascii: "."), UInt8(ascii: "Z"))
        return true
    }

    /// The UTC day of `micros` (since 1970) as `yyyy-mm-dd`.
    public static func day(ofMicros micros: Int64) -> String {
        let (year, month, day) = civilDate(daysSinceEpoch: daysSinceEpoch(ofMicros: micros))
        return Self.day(year: year, month: month, day: day)
    }

    /// The UTC days from 1970-01-01 to the day of `micros` (negative before it).
    public static func daysSinceEpoch(ofMicros micros: Int64) -> Int64 {
        floorDivide(micros, 86_400_000_000).quotient
    }

    private static func day(year: Int64, month: Int64, day: Int64) -> String {
        digits(year, 4) + "-" + digits(month, 2) + "-" + digits(day, 2)
    }

    /// `value` in decimal, zero-padded to `width` digits.
    private static func digits(_ value: Int64, _ width: Int) -> String {
        let text = String(value)
        return text.utf8.count >= width ? text : String(repeating: "0", count: width - text.utf8.count) + text
    }

    /// The quotient rounded down, and the remainder that goes with it (never negative for a positive divisor).
    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let (quotient, remainder) = value.quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    private static func civilDate(daysSinceEpoch: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = daysSinceEpoch + 719_468
        let era = floorDivide(shifted, 146_097).quotient
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func read(_ clock: clockid_t) -> Int64 {
        var now = timespec()
        clock_gettime(clock, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1_000
    }
}
