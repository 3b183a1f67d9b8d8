import Pipelines

/// How names that come from events become parts of paths in the store. Nothing an event carries reaches the file
/// system without passing through here.
enum StoreNames {
    /// A path component for `name` (a pipeline's name): letters, digits, `-`, `_` and `.` stay as they are; any
    /// other byte becomes `%XX`; a name that is empty, `.` or `..`, or that starts with `.`, gets its dots encoded
    /// too. Names whose encoding exceeds `maximumLength` bytes are cut and end with `~` and 16 hex digits of the
    /// SHA-256 of the whole name, so that two long names never share a directory.
    static func component(_ name: String, maximumLength: Int = 120) -> String {
        var encoded: [UInt8] = []
        encoded.reserveCapacity(name.utf8.count)
        let encodeDots = name.isEmpty || name.utf8.first == UInt8(ascii: ".")
        for byte in name.utf8 {
            if isPlain(byte), !(encodeDots && byte == UInt8(ascii: ".")) {
                encoded.append(byte)
            } else {
                encoded.append(UInt8(ascii: "%"))
                encoded.append(hexDigits[Int(byte >> 4)])
                encoded.append(hexDigits[Int(byte & 0x0f)])
            }
        }
        if encoded.isEmpty { return "%" }
        if encoded.count > maximumLength {
            let digest = ContentHash.sha256(Array(name.utf8))
            encoded = Array(encoded.prefix(maximumLength - 17)) + Array("~".utf8) + Array(digest.utf8.prefix(16))
        }
        return String(decoding: encoded, as: UTF8.self)
    }

    /// Whether `text` is a SHA-256 as Sluice writes it: 64 lowercase hexadecimal digits.
    static func isSHA256(_ text: String) -> Bool {
        text.utf8.count == 64
            && text.utf8.allSatisfy {
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
            }
    }

    /// The UTC day of `micros` (microseconds since 1970) as `yyyy-mm-dd`.
    static func day(ofMicros micros: Int64) -> String {
        let days = floorDivide(micros, 86_400_000_000)
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
    }

    private static func isPlain(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            true
        default: false
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> Int64 {
        let quotient = value / divisor
        return value % divisor < 0 ? quotient - 1 : quotient
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    private static func civilDate(daysSinceEpoch: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = daysSinceEpoch + 719_468
        let era = floorDivide(shifted, 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
