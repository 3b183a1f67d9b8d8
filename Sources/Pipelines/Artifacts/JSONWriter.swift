/// Writes JSON into a byte buffer, in the order it is told: the lineage events' encoder, fast and deterministic.
///
/// Strings are escaped as RFC 8259 requires; non-finite numbers become `null`.
public struct JSONWriter: ~Copyable, Sendable {
    private var buffer: GrowableBytes
    private var first = true
    private var afterKey = false

    public init(capacity: Int = 256) {
        buffer = GrowableBytes(capacity: capacity)
    }

    /// What was written.
    public var bytes: [UInt8] { buffer.array }

    /// How many bytes were written.
    public var count: Int { buffer.count }

    /// Calls `body` with what was written.
    func withBytes<Result>(_ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result { buffer.withBytes(body) }

    // MARK: - Containers

    /// An object whose members `body` writes, each with ``key(_:)`` and a value.
    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        container(UInt8(ascii: "{"), UInt8(ascii: "}"), body)
    }

    /// An array whose elements `body` writes.
    public mutating func array(_ body: (inout JSONWriter) -> Void) {
        container(UInt8(ascii: "["), UInt8(ascii: "]"), body)
    }

    private mutating func container(_ open: UInt8, _ close: UInt8, _ body: (inout JSONWriter) -> Void) {
        beginValue()
        buffer.append(open)
        first = true
        body(&self)
        buffer.append(close)
        first = false
    }

    /// Starts the member `name` of an object: the next value written is its value.
    /// - Precondition: `name` needs no escaping (no quote, backslash or control character): member names written
    ///   in code are copied as they are.
    public mutating func key(_ name: StaticString) {
        // Member names are a few bytes: the name, its quotes, colon and separator written after one capacity check,
        // rather than four appends (each checking the capacity) and a call to `memmove`.
        if name.hasPointerRepresentation {
            // Without `withUTF8Buffer`, whose closure kept the writing below from being inlined.
            write(key: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        } else {
            name.withUTF8Buffer { write(key: $0) }
        }
    }

    @inline(__always)
    private mutating func write(key source: UnsafeBufferPointer<UInt8>) {
        let separated = !first
        buffer.append(atMost: source.count + 4) { out in
            var position = 0
            if separated {
                out[0] = UInt8(ascii: ",")
                position = 1
            }
            out[position] = UInt8(ascii: "\"")
            Self.copyName(source, to: out + position + 1)
            position += 1 + source.count
            out[position] = UInt8(ascii: "\"")
            out[position + 1] = UInt8(ascii: ":")
            return position + 2
        }
        first = false
        afterKey = true
    }

    /// Copies a member name or a short string a word at a time, the last word overlapping the one before it (a name
    /// is a few bytes: byte by byte, or through `memmove`, the copy cost more than the rest of the key).
    @inline(__always)
    private static func copyName(_ name: UnsafeBufferPointer<UInt8>, to out: UnsafeMutablePointer<UInt8>) {
        let count = name.count
        guard count > 0, let base = name.baseAddress else { return }
        let source = UnsafeRawPointer(base)
        let target = UnsafeMutableRawPointer(out)
        func copy<Word: FixedWidthInteger>(_: Word.Type, at offset: Int) {
            target.storeBytes(
                of: source.loadUnaligned(fromByteOffset: offset, as: Word.self), toByteOffset: offset, as: Word.self)
        }
        if count >= 8 {
            var offset = 0
            while offset + 8 < count {
                copy(UInt64.self, at: offset)
                offset += 8
            }
            copy(UInt64.self, at: count - 8)
        } else if count >= 4 {
            copy(UInt32.self, at: 0)
            copy(UInt32.self, at: count - 4)
        } else {
            for offset in 0..<count { copy(UInt8.self, at: offset) }
        }
    }

    /// ``key(_:)`` for a member name known only at run time, escaped as needed.
    public mutating func key(named name: String) {
        if !first { buffer.append(UInt8(ascii: ",")) }
        first = false
        writeString(name)
        buffer.append(UInt8(ascii: ":"))
        afterKey = true
    }

    // MARK: - Values

    public mutating func string(_ value: String) {
        beginValue()
        writeString(value)
    }

    /// `micros` (since 1970) as ``Timestamps/rfc3339(micros:)`` writes it, a string, without making one.
    public mutating func rfc3339(micros: Int64) {
        beginValue()
        let length = Timestamps.rfc3339Length
        var fits = true
        buffer.append(atMost: length + 2) { out in
            out[0] = UInt8(ascii: "\"")
            fits = Timestamps.write(rfc3339Of: micros, to: out + 1)
            out[length + 1] = UInt8(ascii: "\"")
            return fits ? length + 2 : 0
        }
        if !fits { writeString(Timestamps.rfc3339(micros: micros)) }
    }

    public mutating func int(_ value: Int64) {
        beginValue()
        writeDigits(value)
    }

    private mutating func writeDigits(_ value: Int64) {
        let magnitude = value.magnitude
        // How many digits first, then written in place from the last, two at a time: at most 19 digits and a sign.
        var length = 1
        var rest = magnitude
        while rest >= 100 {
            rest /= 100
            length += 2
        }
        if rest >= 10 { length += 1 }
        let negative = value < 0
        let pairs = decimalDigitPairs.utf8Start
        buffer.append(atMost: 20) { out in
            if negative { out[0] = UInt8(ascii: "-") }
            let end = length + (negative ? 1 : 0)
            var remaining = magnitude
            var position = end
            while remaining >= 10 {
                let pair = Int(remaining % 100) * 2
                remaining /= 100
                position -= 2
                out[position] = pairs[pair]
                out[position + 1] = pairs[pair + 1]
            }
            if position > end - length {
                out[position - 1] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remaining)
            }
            return end
        }
    }

    public mutating func double(_ value: Double) {
        beginValue()
        if value.isFinite {
            buffer.append(contentsOf: value.description.utf8)
        } else {
            buffer.append(contentsOf: "null".utf8)
        }
    }

    /// `bytes` as a string of lowercase hexadecimal digits, written in one copy.
    mutating func hex(_ bytes: UnsafeRawBufferPointer) {
        beginValue()
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 2 * bytes.count + 2) { text in
            text[0] = UInt8(ascii: "\"")
            for (index, byte) in bytes.enumerated() {
                text[1 + 2 * index] = Self.hexDigits[Int(byte >> 4)]
                text[2 + 2 * index] = Self.hexDigits[Int(byte & 0x0f)]
            }
            text[text.count - 1] = UInt8(ascii: "\"")
            buffer.append(contentsOf: UnsafeBufferPointer(text))
        }
    }

    public mutating func bool(_ value: Bool) {
        beginValue()
        buffer.append(contentsOf: (value ? "true" : "false").utf8)
    }

    public mutating func null() {
        beginValue()
        buffer.append(contentsOf: "null".utf8)
    }

    /// Writes `json`, which must already be one complete JSON value.
    public mutating func raw(_ json: UnsafeBufferPointer<UInt8>) {
        beginValue()
        buffer.append(contentsOf: json)
    }

    /// Writes `json`, which must already be one complete JSON value. (Not generic: called from other modules, a
    /// generic one ran unspecialised, asking the runtime for metadata at every call.)
    public mutating func raw(_ json: [UInt8]) {
        json.withUnsafeBufferPointer { raw($0) }
    }

    /// `micros / 1000` as a decimal number with up to three fractional digits (`1.234`, `12.0`, `0.005`): a
    /// duration in milliseconds written exactly and without formatting a floating-point number, in the form Swift
    /// gives that `Double` (for any duration a `Double` holds exactly, under 2^53 µs).
    public mutating func milliseconds(micros: Int64) {
        beginValue()
        if micros < 0 { buffer.append(UInt8(ascii: "-")) }
        let magnitude = micros.magnitude
        writeDigits(Int64(magnitude / 1000))
        buffer.append(UInt8(ascii: "."))
        var fraction = Int(magnitude % 1000)
        var digits = 3
        while digits > 1 && fraction % 10 == 0 {
            fraction /= 10
            digits -= 1
        }
        var divisor = digits == 3 ? 100 : digits == 2 ? 10 : 1
        repeat {
            buffer.append(UInt8(ascii: "0") + UInt8(fraction / divisor))
            fraction %= divisor
            divisor /= 10
        } while divisor > 0
    }

    // MARK: - Assembling from pieces

    /// Forgets the container the writer is in: the next value is written without a separator. For code that writes
    /// values one by one and assembles them afterwards.
    mutating func startPiece() {
        first = true
        afterKey = false
    }

    /// Drops everything from byte `count` on.
    mutating func truncate(to count: Int) {
        buffer.truncate(to: count)
    }

    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: null()
        case .bool(let flag): bool(flag)
        case .int(let number): int(number)
        case .double(let number): double(number)
        case .string(let text): string(text)
        case .array(let elements): array { writer in for element in elements { writer.value(element) } }
        case .object(let members):
            // The members sorted with their values: no lookup of each name again.
            let sorted = members.sorted { utf8Precedes($0.key, $1.key) }
            object { writer in
                for (name, member) in sorted {
                    writer.key(named: name)
                    writer.value(member)
                }
            }
        }
    }

    // MARK: - Members

    public mutating func field(_ name: StaticString, _ value: String) {
        key(name)
        string(value)
    }

    public mutating func field(_ name: StaticString, _ value: String?) {
        key(name)
        if let value { string(value) } else { null() }
    }

    public mutating func field(_ name: StaticString, _ value: Int64) {
        key(name)
        int(value)
    }

    public mutating func field(_ name: StaticString, _ value: Int) {
        key(name)
        int(Int64(value))
    }

    public mutating func field(_ name: StaticString, _ value: Double) {
        key(name)
        double(value)
    }

    public mutating func field(_ name: StaticString, _ value: Bool) {
        key(name)
        bool(value)
    }

    // MARK: - Private

    private mutating func beginValue() {
        if afterKey {
            afterKey = false
        } else if !first {
            buffer.append(UInt8(ascii: ","))
        }
        first = false
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private mutating func writeString(_ value: String) {
        var text = value
        text.withUTF8 { utf8 in
            // Most strings (ids, names, hashes) need no escape: the quotes and the bytes after one capacity check.
            guard Self.needsNoEscape(utf8), let source = utf8.baseAddress else {
                buffer.append(UInt8(ascii: "\""))
                writeEscaped(utf8)
                buffer.append(UInt8(ascii: "\""))
                return
            }
            let count = utf8.count
            buffer.append(atMost: count + 2) { out in
                out[0] = UInt8(ascii: "\"")
                if count <= 32 {
                    Self.copyName(utf8, to: out + 1)
                } else {
                    (out + 1).update(from: source, count: count)
                }
                out[count + 1] = UInt8(ascii: "\"")
                return count + 2
            }
        }
    }

    /// Whether no byte of `utf8` needs an escape (and there is at least one): eight bytes at a time, the last word
    /// overlapping the one before it.
    private static func needsNoEscape(_ utf8: UnsafeBufferPointer<UInt8>) -> Bool {
        let count = utf8.count
        guard let base = utf8.baseAddress, count > 0 else { return false }
        guard count >= 8 else {
            for byte in utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                return false
            }
            return true
        }
        let source = UnsafeRawPointer(base)
        var offset = 0
        while offset + 8 < count {
            if mayNeedEscape(source.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) { return false }
            offset += 8
        }
        return !mayNeedEscape(source.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self))
    }

    /// `utf8` with the bytes that need it escaped, between no quotes.
    private mutating func writeEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        // Copy runs of bytes that need no escape at once, finding them eight bytes at a time.
        var clean = 0
        var index = 0
        let count = utf8.count
        if let base = utf8.baseAddress {
            while index + 8 <= count {
                let word = UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
                if Self.mayNeedEscape(word) { break }
                index += 8
            }
        }
        while index < count {
            let byte = utf8[index]
            if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[clean..<index]))
                appendEscaped(byte)
                clean = index + 1
            }
            index += 1
        }
        buffer.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[clean...]))
    }

    /// Whether one of the eight bytes of `word` is below 0x20, a quote or a backslash (it may say yes when none is).
    private static func mayNeedEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let control = (word &- ones &* 0x20) & ~word & highs
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let hasQuote = (quote &- ones) & ~quote & highs
        let hasBackslash = (backslash &- ones) & ~backslash & highs
        return control | hasQuote | hasBackslash != 0
    }

    private mutating func appendEscaped(_ byte: UInt8) {
        buffer.append(UInt8(ascii: "\\"))
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): buffer.append(byte)
        case UInt8(ascii: "\n"): buffer.append(UInt8(ascii: "n"))
        case UInt8(ascii: "\r"): buffer.append(UInt8(ascii: "r"))
        case UInt8(ascii: "\t"): buffer.append(UInt8(ascii: "t"))
        default:
            buffer.append(UInt8(ascii: "u"))
            buffer.append(UInt8(ascii: "0"))
            buffer.append(UInt8(ascii: "0"))
            buffer.append(Self.hexDigits[Int(byte >> 4)])
            buffer.append(Self.hexDigits[Int(byte & 0x0f)])
        }
    }
}

/// "00" to "99", for writing decimal digits two at a time.
let decimalDigitPairs: StaticString =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

/// Whether `first` comes before `second` in UTF-8 byte order: the order of canonical JSON's member names. Compares
/// the bytes in place, where `lexicographicallyPrecedes` over two `UTF8View`s decodes them through an iterator.
func utf8Precedes(_ first: String, _ second: String) -> Bool {
    var first = first
    var second = second
    return first.withUTF8 { left in
        second.withUTF8 { right in
            let common = min(left.count, right.count)
            var index = 0
            while index < common {
                if left[index] != right[index] { return left[index] < right[index] }
                index += 1
            }
            return left.count < right.count
        }
    }
}
