/// Why some bytes are not one JSON value, with the byte offset where parsing stopped.
public struct JSONParseError: Error, Sendable, Hashable, CustomStringConvertible {
    public let message: String
    public let offset: Int
    public var description: String { "invalid JSON at byte \(offset): \(message)" }
}

extension JSONValue {
    /// Parses one JSON value (RFC 8259) from UTF-8 bytes; whitespace around it is allowed, anything else is not.
    ///
    /// Integers that fit in `Int64` become ``JSONValue/int(_:)``, other numbers ``JSONValue/double(_:)``. A
    /// duplicate object key keeps its last value. Nesting deeper than 512 levels is refused.
    /// - Throws: ``JSONParseError``.
    public init(parsing bytes: some Collection<UInt8>) throws {
        let array = bytes as? [UInt8] ?? Array(bytes)
        self = try array.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(buffer)
            let value = try parser.parseValue(depth: 0)
            parser.skipWhitespace()
            guard parser.index == buffer.count else { throw parser.error("unexpected bytes after the value") }
            return value
        }
    }
}

extension JSONValue {
    /// Checks that `bytes` are one JSON value as ``init(parsing:)`` reads them (same grammar, numbers and nesting
    /// limit), without making the value: for readers that pass JSON on.
    /// - Throws: ``JSONParseError``.
    public static func check(_ bytes: [UInt8]) throws {
        _ = try JSONTape(bytes)
    }
}

/// A JSON object whose members are located but not parsed: a member's value is parsed only when it is asked for.
/// For readers that know the shape they expect (lineage events, the store's lines) and need neither a dictionary per
/// object nor the members they skip. The whole document is checked and located in one pass (``JSONTape``) when it is
/// read; nested objects are found on the tape, never scanned again.
///
/// - Important: Valid only inside the closure it is handed to: never keep one.
public struct RawJSONObject {
    private let document: LocatedDocument
    /// The object's node on the tape.
    private let node: Int

    private init(document: LocatedDocument, node: Int) {
        self.document = document
        self.node = node
    }

    /// Checks the JSON object in `bytes` (whitespace around it allowed) and calls `body` with it.
    /// - Throws: ``JSONParseError`` when `bytes` are not one JSON object, or what `body` throws.
    public static func withObject<T>(
        _ bytes: some Collection<UInt8>, _ body: (RawJSONObject) throws -> T
    )
        throws -> T
    {
        let tape = try JSONTape(bytes as? [UInt8] ?? Array(bytes))
        let document = LocatedDocument(tape)
        return try body(try RawJSONObject(document, object: 0, or: "not a JSON object"))
    }

    /// The object at `node`.
    /// - Throws: ``JSONParseError`` with `message` when the node is something else.
    private init(_ document: LocatedDocument, object node: Int, or message: String = "expected an object") throws {
        guard case .object = document[node] else {
            throw JSONParseError(message: message, offset: document.tape.bytes(of: node).lowerBound)
        }
        self.init(document: document, node: node)
    }

    /// The member names, in the order they came.
    public var keys: [String] { document.tape.members(of: node).map(\.name) }

    private func valueNode(_ key: StaticString) -> Int? {
        document.member(key, of: node)
    }

    /// The member's value, parsed; `nil` when absent.
    public func value(_ key: StaticString) throws -> JSONValue? {
        valueNode(key).map { document.tape.value(at: $0) }
    }

    /// The member's value when it is a string, its escapes resolved; `nil` when absent or `null`. (Without a
    /// ``JSONValue`` in between: the decoders read most of their members this way.)
    /// - Throws: ``JSONParseError`` when it is something else.
    public func optionalString(_ key: StaticString) throws -> String? {
        guard let value = valueNode(key) else { return nil }
        return try document.tape.optionalString(at: value)
    }

    /// The member's value when it is an integer; `nil` when absent or `null`.
    /// - Throws: ``JSONParseError`` when it is something else.
    public func optionalInt64(_ key: StaticString) throws -> Int64? {
        guard let value = valueNode(key) else { return nil }
        return try document.tape.optionalInt64(at: value)
    }

    /// ``value(_:)``, through `repeated`: a value written as the one before it is not parsed again.
    public func value(_ key: StaticString, as repeated: RepeatedJSON) -> JSONValue? {
        guard let node = valueNode(key) else { return nil }
        let tape = document.tape
        return tape.bytes.withUnsafeBufferPointer { bytes in
            repeated.value(writtenAs: UnsafeBufferPointer(rebasing: bytes[tape.bytes(of: node)])) {
                tape.value(at: node)
            }
        }
    }

    /// The member's value as it is written, byte for byte; `nil` when absent.
    public func rawValue(_ key: StaticString) -> [UInt8]? {
        valueNode(key).map { Array(document.tape.bytes[document.tape.bytes(of: $0)]) }
    }

    /// The member, an object; `nil` when absent or `null`.
    /// - Throws: ``JSONParseError`` when it is something else.
    public func withObject<T>(_ key: StaticString, _ body: (RawJSONObject) throws -> T) throws -> T? {
        guard let value = valueNode(key) else { return nil }
        if case .null = document[value] { return nil }
        return try body(try RawJSONObject(document, object: value))
    }

    /// The member, an array of objects, each handed to `body`; `nil` when absent or `null`.
    /// - Throws: ``JSONParseError`` when it is not an array of objects.
    public func withObjects<T>(_ key: StaticString, _ body: (RawJSONObject) throws -> T) throws -> [T]? {
        guard let value = valueNode(key) else { return nil }
        switch document[value] {
        case .null: return nil
        case .array(let count, _):
            var results: [T] = []
            results.reserveCapacity(count)
            var element = value + 1
            for _ in 0..<count {
                results.append(try body(try RawJSONObject(document, object: element)))
                element = document.tape.next(after: element)
            }
            return results
        default:
            throw JSONParseError(message: "expected an array", offset: document.tape.bytes(of: value).lowerBound)
        }
    }
}

/// A tape shared by the readers of one document (a decoder and its containers, a raw object and its members).
final class LocatedDocument {
    let tape: JSONTape
    /// Where the next member lookup starts: the name node after the member found last, and its object.
    private var resume = (object: -1, key: -1)

    init(_ tape: JSONTape) {
        self.tape = tape
    }

    subscript(node: Int) -> JSONTape.Node { tape[node] }

    /// The value node of the member named `name` of the object at `object` (the last one, if the name repeats).
    /// Members asked for in the order they are written are each found at the first name compared.
    func member(_ name: StaticString, of object: Int) -> Int? {
        name.withUTF8Buffer { member(named: $0, ascii: name.isASCII, of: object) }
    }

    /// ``member(_:of:)`` for a name known only at run time.
    func member(_ name: String, of object: Int) -> Int? {
        var name = name
        return name.withUTF8 { name in member(named: name, ascii: !name.contains { $0 >= 0x80 }, of: object) }
    }

    private func member(named name: UnsafeBufferPointer<UInt8>, ascii: Bool, of object: Int) -> Int? {
        let start = resume.object == object ? resume.key : object + 1
        if ascii, tape.isDistinctName(start, of: object, writtenAs: name) {
            resume = (object, tape.next(after: start + 1))
            return start + 1
        }
        guard !tape.lacksMember(named: name, ascii: ascii, of: object),
            let found = tape.member(named: name, ascii: ascii, of: object, from: start)
        else { return nil }
        resume = (object, tape.next(after: found))
        return found
    }
}

private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    func error(_ message: String) -> JSONParseError {
        JSONParseError(message: message, offset: index)
    }

    @inline(__always)
    mutating func skipWhitespace() {
        // Compact JSON (what Sluice writes) has none: one comparison says so.
        guard index < bytes.count, bytes[index] <= 0x20 else { return }
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth < 512 else { throw error("nested too deeply") }
        skipWhitespace()
        guard index < bytes.count else { throw error("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character")
        }
    }

    mutating func literal(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
            throw error("expected \(word)")
        }
        index += count
    }

    @inline(__always)
    mutating func expect(_ byte: UInt8) throws {
        if index < bytes.count, bytes[index] == byte {
            index += 1
            return
        }
        try expectAfterWhitespace(byte)
    }

    private mutating func expectAfterWhitespace(_ byte: UInt8) throws {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == byte else {
            throw error("expected '\(Character(Unicode.Scalar(byte)))'")
        }
        index += 1
    }

    /// Consumes `byte` after optional whitespace if it is next.
    @inline(__always)
    mutating func take(_ byte: UInt8) -> Bool {
        skipWhitespace()
        if index < bytes.count, bytes[index] == byte {
            index += 1
            return true
        }
        return false
    }

    private mutating func parseObject(depth: Int) throws -> JSONValue {
        index += 1
        if take(UInt8(ascii: "}")) { return .object([:]) }
        // Members are collected first and hashed into a dictionary of the right size once: growing it member by
        // member rehashed it at every power of two.
        var members: [(String, JSONValue)] = []
        repeat {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a key") }
            let key = try parseString()
            try expect(UInt8(ascii: ":"))
            members.append((key, try parseValue(depth: depth + 1)))
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "}"))
        // A repeated key keeps its last value, as before.
        return .object(Dictionary(members, uniquingKeysWith: { _, last in last }))
    }

    private mutating func parseArray(depth: Int) throws -> JSONValue {
        index += 1
        var elements: [JSONValue] = []
        if take(UInt8(ascii: "]")) { return .array(elements) }
        repeat {
            elements.append(try parseValue(depth: depth + 1))
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "]"))
        return .array(elements)
    }

    /// Moves past the bytes of a string that need no attention (not `"`, `\\` or a control character), eight at a
    /// time, up to the first one that does (or to the last 8 bytes of the buffer), and ORs them into `highBits` (bit 7
    /// set: non-ASCII bytes passed, to be validated).
    private mutating func skipPlainStringBytes(_ highBits: inout UInt8) {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        while index + 8 <= bytes.count {
            let word = UInt64(littleEndian: UnsafeRawPointer(bytes.baseAddress! + index).loadUnaligned(as: UInt64.self))
            // A byte is zero in `word ^ (c * ones)` where it equals c; (x - ones) & ~x & highs flags such bytes, and
            // (word - 0x20 * ones) & ~word & highs flags bytes below 0x20. A borrow may flag a byte falsely, but only
            // above a byte flagged rightly: the lowest flag is the first byte that needs attention.
            let quote = word ^ (0x22 * ones)
            let backslash = word ^ (0x5C * ones)
            let special =
                ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((word &- 0x20 &* ones) & ~word)
            let flags = special & highs
            if flags != 0 {
                let plain = flags.trailingZeroBitCount / 8
                if word & ((1 &<< (8 * plain)) &- 1) & highs != 0 { highBits |= 0x80 }
                index += plain
                return
            }
            if word & highs != 0 { highBits |= 0x80 }
            index += 8
        }
    }

    mutating func parseString() throws -> String {
        index += 1
        let start = index
        // Fast path: no escapes.
        var highBits: UInt8 = 0
        skipPlainStringBytes(&highBits)
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let utf8 = UnsafeBufferPointer(rebasing: bytes[start..<index])
                // ASCII needs no validation (and the generic validating initialiser is slow).
                let text = highBits < 0x80 ? String(decoding: utf8, as: UTF8.self) : try validated(utf8, at: start)
                index += 1
                return text
            }
            highBits |= byte
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("control character in a string") }
            index += 1
        }
        var scratch = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return try scratch.withUnsafeBufferPointer { try validated($0, at: start) }
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw error("unexpected end") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(escape)
                case UInt8(ascii: "b"): scratch.append(0x08)
                case UInt8(ascii: "f"): scratch.append(0x0C)
                case UInt8(ascii: "n"): scratch.append(0x0A)
                case UInt8(ascii: "r"): scratch.append(0x0D)
                case UInt8(ascii: "t"): scratch.append(0x09)
                case UInt8(ascii: "u"): try appendEscapedScalar(to: &scratch)
                default: throw error("unknown escape")
                }
            default:
                if byte < 0x20 { throw error("control character in a string") }
                scratch.append(byte)
                index += 1
            }
        }
        throw error("unterminated string")
    }

    private func validated(_ utf8: UnsafeBufferPointer<UInt8>, at start: Int) throws -> String {
        guard let text = String(validating: utf8, as: UTF8.self) else {
            throw JSONParseError(message: "string is not valid UTF-8", offset: start)
        }
        return text
    }

    private mutating func hex4() throws -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("unexpected end") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("bad \\u escape")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    private mutating func appendEscapedScalar(to scratch: inout [UInt8]) throws {
        var code = try hex4()
        if (0xD800..<0xDC00).contains(code) {
            // A high surrogate must be followed by an escaped low surrogate.
            guard index + 2 <= bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
            else { throw error("lone surrogate") }
            index += 2
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw error("lone surrogate") }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00..<0xE000).contains(code) {
            throw error("lone surrogate")
        }
        guard let scalar = Unicode.Scalar(code) else { throw error("bad \\u escape") }
        scratch.append(contentsOf: String(Character(scalar)).utf8)
    }

    private mutating func parseNumber() throws -> JSONValue {
        switch try readNumber() {
        case .int(let number): .int(number)
        case .double(let number): .double(number)
        }
    }

    enum Number {
        case int(Int64)
        case double(Double)
    }

    /// Integers that fit in `Int64` as such, other numbers as `Double`; a number too large for a `Double` is refused.
    @inline(__always)
    mutating func readNumber() throws -> Number {
        if let integer = readPlainInteger() { return .int(integer) }
        return try readAnyNumber()
    }

    /// The number here when it is a plain integer (no sign, leading zero, fraction or exponent) of at most 18 digits,
    /// read as it is scanned (most numbers of an event: times, sizes, counts); `nil`, moving nowhere, for any other.
    @inline(__always)
    private mutating func readPlainInteger() -> Int64? {
        var position = index
        var value: Int64 = 0
        while position < bytes.count, position - index < 19 {
            let digit = bytes[position] &- UInt8(ascii: "0")
            guard digit < 10 else { break }
            value = value &* 10 &+ Int64(digit)
            position += 1
        }
        let count = position - index
        guard count > 0, count <= 18, count == 1 || bytes[index] != UInt8(ascii: "0") else { return nil }
        if position < bytes.count {
            let next = bytes[position]
            if next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E") { return nil }
        }
        index = position
        return value
    }

    /// ``readNumber()`` for any number.
    private mutating func readAnyNumber() throws -> Number {
        let (start, isInteger) = try scanNumber()
        if isInteger, let integer = integer(from: start) { return .int(integer) }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let number = Double(text), number.isFinite else {
            throw JSONParseError(message: "number out of range", offset: start)
        }
        return .double(number)
    }

    /// The integer scanned from `start` to here (an optional minus and digits), if it fits in `Int64`.
    private func integer(from start: Int) -> Int64? {
        let negative = bytes[start] == UInt8(ascii: "-")
        let digits = negative ? start + 1 : start
        // 18 digits or fewer cannot overflow: no check per digit (a timestamp has 16).
        if index - digits <= 18 {
            var value: Int64 = 0
            for position in digits..<index { value = value &* 10 &+ Int64(bytes[position] &- UInt8(ascii: "0")) }
            return negative ? -value : value
        }
        var magnitude: UInt64 = 0
        for position in digits..<index {
            let (tens, overflowed) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, carried) = tens.addingReportingOverflow(UInt64(bytes[position] &- UInt8(ascii: "0")))
            if overflowed || carried { return nil }
            magnitude = sum
        }
        if negative { return magnitude <= 1 << 63 ? Int64(bitPattern: 0 &- magnitude) : nil }
        return magnitude <= UInt64(Int64.max) ? Int64(magnitude) : nil
    }

    /// Moves past a number, checking its grammar; returns where it started and whether it is an integer.
    private mutating func scanNumber() throws -> (start: Int, isInteger: Bool) {
        let start = index
        var isInteger = true
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) else {
            throw error("bad number")
        }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            skipDigits()
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard skipDigits() > 0 else { throw error("bad number") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                index += 1
            }
            guard skipDigits() > 0 else { throw error("bad number") }
        }
        return (start, isInteger)
    }

    // MARK: - Locating without parsing

    /// The members of the object that starts here, each with the byte range of its value, which is checked but not
    /// parsed.
    mutating func scanObject(depth: Int) throws -> [(key: String, range: Range<Int>)] {
        try expect(UInt8(ascii: "{"))
        var members: [(key: String, range: Range<Int>)] = []
        if take(UInt8(ascii: "}")) { return members }
        repeat {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a key") }
            let key = try parseString()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            let start = index
            try skipValue(depth: depth + 1)
            members.append((key, start..<index))
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "}"))
        return members
    }

    /// The byte ranges of the elements of the array that starts here, checked but not parsed.
    mutating func scanArray(depth: Int) throws -> [Range<Int>] {
        try expect(UInt8(ascii: "["))
        var elements: [Range<Int>] = []
        if take(UInt8(ascii: "]")) { return elements }
        repeat {
            skipWhitespace()
            let start = index
            try skipValue(depth: depth + 1)
            elements.append(start..<index)
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "]"))
        return elements
    }

    /// Moves past one value, checking it as ``parseValue(depth:)`` does but building nothing.
    private mutating func skipValue(depth: Int) throws {
        guard depth < 512 else { throw error("nested too deeply") }
        skipWhitespace()
        guard index < bytes.count else { throw error("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            // Like scanObject, without building the member list or the keys.
            index += 1
            if take(UInt8(ascii: "}")) { return }
            repeat {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a key") }
                try skipString()
                try expect(UInt8(ascii: ":"))
                try skipValue(depth: depth + 1)
            } while take(UInt8(ascii: ","))
            try expect(UInt8(ascii: "}"))
        case UInt8(ascii: "["):
            index += 1
            if take(UInt8(ascii: "]")) { return }
            repeat { try skipValue(depth: depth + 1) } while take(UInt8(ascii: ","))
            try expect(UInt8(ascii: "]"))
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try scanNumber()
        default: throw error("unexpected character")
        }
    }

    /// Moves past a string, checking its escapes and, when it has non-ASCII bytes, its UTF-8; returns whether it has
    /// escapes and whether all its bytes are ASCII.
    @discardableResult
    @inline(__always)
    mutating func skipString() throws -> (escaped: Bool, ascii: Bool) {
        index += 1
        let start = index
        var highBits: UInt8 = 0
        // Most strings are plain ASCII: ended by the first byte that needs a look, a quote.
        skipPlainStringBytes(&highBits)
        if index < bytes.count, bytes[index] == UInt8(ascii: "\""), highBits < 0x80 {
            index += 1
            return (false, true)
        }
        return try skipRestOfString(from: start, highBits: highBits)
    }

    /// ``skipString()`` from where its plain bytes end: escapes, non-ASCII bytes, errors.
    private mutating func skipRestOfString(from start: Int, highBits: UInt8) throws -> (escaped: Bool, ascii: Bool) {
        var highBits = highBits
        var escaped = false
        while index < bytes.count {
            skipPlainStringBytes(&highBits)
            guard index < bytes.count else { break }
            let byte = bytes[index]
            highBits |= byte
            switch byte {
            case UInt8(ascii: "\""):
                if highBits >= 0x80 {
                    _ = try validated(UnsafeBufferPointer(rebasing: bytes[start..<index]), at: start)
                }
                index += 1
                return (escaped, highBits < 0x80)
            case UInt8(ascii: "\\"):
                escaped = true
                index += 1
                guard index < bytes.count else { throw error("unexpected end") }
                switch bytes[index] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    index += 1
                    var scratch: [UInt8] = []
                    try appendEscapedScalar(to: &scratch)
                default:
                    // Where parseString reports it: past the escape.
                    index += 1
                    throw error("unknown escape")
                }
            case 0..<0x20: throw error("control character in a string")
            default: index += 1
            }
        }
        throw error("unterminated string")
    }

    @discardableResult
    private mutating func skipDigits() -> Int {
        let start = index
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        return index - start
    }
}

// MARK: - A located document

/// A JSON document checked and located in one pass: one node per value, in document order, each string or number
/// only located or read in place, each value's bytes known. What ``JSONValueDecoder`` decodes from: a request's input
/// becomes its type without a tree of ``JSONValue``s (no dictionary per object, no string per member name).
struct JSONTape {
    enum Node {
        case null
        case bool(Bool)
        case int(Int64)
        case double(Double)
        /// The bytes between the quotes; `escaped` when they hold escapes to resolve.
        case string(Range<Int>, escaped: Bool)
        /// `end` is the index of the node after the container's last descendant.
        case array(count: Int, end: Int)
        /// `distinctNames`: no member name is written twice (as bytes; escaped names count as repeated).
        case object(count: Int, end: Int, distinctNames: Bool)
    }

    /// A node as the tape keeps it, 24 bytes: its kind, where it is written (quotes and brackets included), and its
    /// payload (a number's value; a container's count and end). One array of these, where a node and its place were
    /// two arrays (and two appends per value).
    private struct Stored {
        enum Kind: UInt8 {
            case null, `false`, `true`, int, double, string, escapedString, array, object, objectWithDistinctNames
        }
        /// A number's value (a double's bits); a container's count in the low and end node in the high 32 bits.
        var payload: UInt64
        var start: UInt32
        var end: UInt32
        /// An object's names, one bit for each (its ``JSONTape/nameHash(_:_:)`` modulo 32): a name whose bit is clear
        /// is none of them.
        var names: UInt32 = 0
        var kind: Kind

        init(_ kind: Kind, payload: UInt64 = 0, start: Int, end: Int) {
            self.kind = kind
            self.payload = payload
            self.start = UInt32(truncatingIfNeeded: start)
            self.end = UInt32(truncatingIfNeeded: end)
        }

        /// A container, its count and end node.
        init(_ kind: Kind, count: Int, endNode: Int, start: Int, end: Int) {
            self.init(
                kind,
                payload: UInt64(UInt32(truncatingIfNeeded: count))
                    | UInt64(UInt32(truncatingIfNeeded: endNode)) << 32, start: start, end: end)
        }

        var endNode: Int { Int(payload >> 32) }

        var node: Node {
            switch kind {
            case .null: .null
            case .false: .bool(false)
            case .true: .bool(true)
            case .int: .int(Int64(bitPattern: payload))
            case .double: .double(Double(bitPattern: payload))
            case .string: .string(Int(start) + 1..<Int(end) - 1, escaped: false)
            case .escapedString: .string(Int(start) + 1..<Int(end) - 1, escaped: true)
            case .array: .array(count: Int(UInt32(truncatingIfNeeded: payload)), end: endNode)
            case .object, .objectWithDistinctNames:
                .object(
                    count: Int(UInt32(truncatingIfNeeded: payload)), end: endNode,
                    distinctNames: kind == .objectWithDistinctNames)
            }
        }

        /// The bytes between a string's quotes.
        var text: Range<Int> { Int(start) + 1..<Int(end) - 1 }
    }

    /// The largest document a tape takes: where a value is written is kept in 32 bits.
    static let maximumSize = Int(UInt32.max) - 1

    let bytes: [UInt8]
    private var stored: [Stored] = []
    /// Whether every string of the document (member names included) is ASCII as written.
    private var isASCII = true

    /// The document `null`.
    static let null = JSONTape(bytes: Array("null".utf8), stored: [Stored(.null, start: 0, end: 4)])

    private init(bytes: [UInt8], stored: [Stored]) {
        self.bytes = bytes
        self.stored = stored
    }

    /// Checks `bytes` as ``JSONValue/init(parsing:)`` does (same grammar, numbers, nesting limit and errors), and
    /// refuses a document larger than ``maximumSize``.
    /// - Throws: ``JSONParseError``.
    init(_ bytes: [UInt8]) throws {
        guard bytes.count <= Self.maximumSize else {
            throw JSONParseError(message: "document too large", offset: Self.maximumSize)
        }
        self.bytes = bytes
        // Room for a node per 8 bytes and a few more, so that a typical tape is allocated once (a lineage record has one
        // per 10 bytes).
        stored.reserveCapacity(8 + bytes.count / 8)
        try bytes.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(buffer)
            try locate(&parser, depth: 0)
            parser.skipWhitespace()
            guard parser.index == buffer.count else { throw parser.error("unexpected bytes after the value") }
        }
    }

    /// The node at `index`.
    subscript(index: Int) -> Node { stored[index].node }

    /// The index of the node after `index` and its descendants.
    func next(after index: Int) -> Int {
        switch stored[index].kind {
        case .array, .object, .objectWithDistinctNames: stored[index].endNode
        default: index + 1
        }
    }

    /// Where the value of `node` is written in ``bytes``.
    func bytes(of node: Int) -> Range<Int> {
        Int(stored[node].start)..<Int(stored[node].end)
    }

    /// The value node of the member named `name` (UTF-8; `ascii` when all of it is) of the object at `object`, or of
    /// the last one if the name repeats. When the object's names are distinct the search starts at the
    /// name node `start` and wraps around, so that readers asking for members in the order they are written find each
    /// at once.
    func member(
        named name: UnsafeBufferPointer<UInt8>, ascii: Bool, of object: Int, from start: Int
    ) -> Int? {
        let kind = stored[object].kind
        guard kind == .object || kind == .objectWithDistinctNames else { return nil }
        let end = stored[object].endNode
        // Written as ASCII on both sides, names are equal exactly when their bytes are: no String to make.
        let bytewise = isASCII && ascii
        return bytes.withUnsafeBufferPointer { bytes in
            stored.withUnsafeBufferPointer { stored in
                func named(_ key: Int) -> Bool {
                    let escaped = stored[key].kind == .escapedString
                    let text = stored[key].text
                    guard bytewise && !escaped else {
                        return string(text, escaped: escaped, equals: String(decoding: name, as: UTF8.self))
                    }
                    // Most names differ in length: told apart without a call.
                    return text.count == name.count && Self.equal(bytes, text, name, 0..<name.count)
                }
                func after(_ key: Int) -> Int {
                    switch stored[key + 1].kind {
                    case .array, .object, .objectWithDistinctNames: stored[key + 1].endNode
                    default: key + 2
                    }
                }
                guard kind == .objectWithDistinctNames else {
                    var found: Int?
                    var key = object + 1
                    while key < end {
                        if named(key) { found = key + 1 }
                        key = after(key)
                    }
                    return found
                }
                let first = start > object && start < end ? start : object + 1
                var key = first
                while key < end {
                    if named(key) { return key + 1 }
                    key = after(key)
                }
                key = object + 1
                while key < first {
                    if named(key) { return key + 1 }
                    key = after(key)
                }
                return nil
            }
        }
    }

    /// Whether the node `key` is a name of the object at `object`, whose names are distinct, written as the ASCII
    /// `name` without escapes: the one member of that name. (The check ``LocatedDocument`` makes before searching.)
    @inline(__always)
    func isDistinctName(_ key: Int, of object: Int, writtenAs name: UnsafeBufferPointer<UInt8>) -> Bool {
        guard stored[object].kind == .objectWithDistinctNames, key < stored[object].endNode, isASCII,
            stored[key].kind == .string
        else { return false }
        let text = stored[key].text
        return text.count == name.count && bytes.withUnsafeBufferPointer { Self.equal($0, text, name, 0..<name.count) }
    }

    /// Whether the object at `object` certainly has no member named `name` (`ascii` when all of it is): its names are
    /// distinct, hence ASCII and unescaped, and none has the name's bit. `false` says nothing.
    func lacksMember(named name: UnsafeBufferPointer<UInt8>, ascii: Bool, of object: Int) -> Bool {
        ascii && stored[object].kind == .objectWithDistinctNames
            && stored[object].names & 1 &<< (Self.nameHash(name, 0..<name.count) & 31) == 0
    }

    /// Each member's name and value node of the object at `object`, in order.
    func members(of object: Int) -> [(name: String, value: Int)] {
        guard case .object(_, let end, _) = self[object] else { return [] }
        var members: [(name: String, value: Int)] = []
        var key = object + 1
        while key < end {
            guard case .string(let range, let escaped) = self[key] else { break }
            members.append((string(range, escaped: escaped), key + 1))
            key = next(after: key + 1)
        }
        return members
    }

    /// The value at `node`, as ``JSONValue/init(parsing:)`` gives it.
    func value(at node: Int) -> JSONValue {
        switch self[node] {
        case .null: return .null
        case .bool(let flag): return .bool(flag)
        case .int(let number): return .int(number)
        case .double(let number): return .double(number)
        case .string(let range, let escaped): return .string(string(range, escaped: escaped))
        case .array(let count, _):
            var elements: [JSONValue] = []
            elements.reserveCapacity(count)
            var element = node + 1
            for _ in 0..<count {
                elements.append(value(at: element))
                element = next(after: element)
            }
            return .array(elements)
        case .object:
            // A repeated key keeps its last value, as the parser does.
            return .object(
                Dictionary(
                    members(of: node).map { ($0.name, value(at: $0.value)) }, uniquingKeysWith: { _, last in last }))
        }
    }

    /// The string at `node`, its escapes resolved; `nil` when the node is `null`.
    /// - Throws: ``JSONParseError`` when it is something else.
    func optionalString(at node: Int) throws -> String? {
        switch stored[node].kind {
        case .string: return string(stored[node].text, escaped: false)
        case .escapedString: return string(stored[node].text, escaped: true)
        case .null: return nil
        default: throw JSONParseError(message: "expected a string", offset: Int(stored[node].start))
        }
    }

    /// The integer at `node`; `nil` when the node is `null`.
    /// - Throws: ``JSONParseError`` when it is something else.
    func optionalInt64(at node: Int) throws -> Int64? {
        switch stored[node].kind {
        case .int: return Int64(bitPattern: stored[node].payload)
        case .null: return nil
        default: throw JSONParseError(message: "expected an integer", offset: Int(stored[node].start))
        }
    }

    /// The string at `range` (a ``Node/string(_:escaped:)``), its escapes resolved.
    func string(_ range: Range<Int>, escaped: Bool) -> String {
        bytes.withUnsafeBufferPointer { buffer in
            let utf8 = UnsafeBufferPointer(rebasing: buffer[range])
            guard escaped else { return String(decoding: utf8, as: UTF8.self) }
            var parser = JSONParser(buffer)
            parser.index = range.lowerBound - 1
            // Checked when located: cannot fail.
            return (try? parser.parseString()) ?? String(decoding: utf8, as: UTF8.self)
        }
    }

    /// Whether the string at `range` is `key`, as Swift compares strings (Unicode canonical equivalence).
    func string(_ range: Range<Int>, escaped: Bool, equals key: String) -> Bool {
        if escaped { return string(range, escaped: true) == key }
        var key = key
        let (sameBytes, bothASCII) = key.withUTF8 { keyBytes in
            bytes.withUnsafeBufferPointer { buffer in
                let text = UnsafeBufferPointer(rebasing: buffer[range])
                if keyBytes.elementsEqual(text) { return (true, true) }
                return (false, keyBytes.allSatisfy { $0 < 0x80 } && text.allSatisfy { $0 < 0x80 })
            }
        }
        // ASCII is equal only byte for byte; other text may be equal written otherwise (a precomposed "é" and "e"
        // with a combining accent).
        return sameBytes || (!bothASCII && string(range, escaped: false) == key)
    }

    private mutating func locate(_ parser: inout JSONParser, depth: Int) throws {
        guard depth < 512 else { throw parser.error("nested too deeply") }
        parser.skipWhitespace()
        guard parser.index < parser.bytes.count else { throw parser.error("unexpected end") }
        let start = parser.index
        switch parser.bytes[start] {
        case UInt8(ascii: "{"):
            let at = stored.count
            stored.append(Stored(.object, start: start, end: start))
            // One bit per name, by a hash of its bytes: a name whose bit is already set is compared with the names
            // before it.
            var seen: UInt64 = 0
            var distinctNames = true
            var count = 0
            parser.index += 1
            if !parser.take(UInt8(ascii: "}")) {
                repeat {
                    parser.skipWhitespace()
                    guard parser.index < parser.bytes.count, parser.bytes[parser.index] == UInt8(ascii: "\"") else {
                        throw parser.error("expected a key")
                    }
                    let key = stored.count
                    let plain = try locateString(&parser)
                    // An escaped or non-ASCII name may equal one written otherwise.
                    if !plain { distinctNames = false }
                    if distinctNames {
                        let bit: UInt64 = 1 &<< Self.nameHash(parser.bytes, stored[key].text)
                        if seen & bit != 0 { distinctNames = !repeatsName(key, of: at, in: parser.bytes) }
                        seen |= bit
                    }
                    try parser.expect(UInt8(ascii: ":"))
                    try locate(&parser, depth: depth + 1)
                    count += 1
                } while parser.take(UInt8(ascii: ","))
                try parser.expect(UInt8(ascii: "}"))
            }
            stored[at] = Stored(
                distinctNames ? .objectWithDistinctNames : .object, count: count, endNode: stored.count, start: start,
                end: parser.index)
            stored[at].names = UInt32(truncatingIfNeeded: seen) | UInt32(truncatingIfNeeded: seen >> 32)
        case UInt8(ascii: "["):
            let at = stored.count
            stored.append(Stored(.array, start: start, end: start))
            var count = 0
            parser.index += 1
            if !parser.take(UInt8(ascii: "]")) {
                repeat {
                    try locate(&parser, depth: depth + 1)
                    count += 1
                } while parser.take(UInt8(ascii: ","))
                try parser.expect(UInt8(ascii: "]"))
            }
            stored[at] = Stored(.array, count: count, endNode: stored.count, start: start, end: parser.index)
        case UInt8(ascii: "\""): try locateString(&parser)
        case UInt8(ascii: "t"):
            try parser.literal("true")
            stored.append(Stored(.true, start: start, end: parser.index))
        case UInt8(ascii: "f"):
            try parser.literal("false")
            stored.append(Stored(.false, start: start, end: parser.index))
        case UInt8(ascii: "n"):
            try parser.literal("null")
            stored.append(Stored(.null, start: start, end: parser.index))
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            switch try parser.readNumber() {
            case .int(let number):
                stored.append(Stored(.int, payload: UInt64(bitPattern: number), start: start, end: parser.index))
            case .double(let number):
                stored.append(Stored(.double, payload: number.bitPattern, start: start, end: parser.index))
            }
        default: throw parser.error("unexpected character")
        }
    }

    /// A number below 64 from a member name's length and three of its bytes.
    @inline(__always)
    private static func nameHash(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> UInt32 {
        guard let first = range.first else { return 0 }
        let mixed =
            UInt32(truncatingIfNeeded: range.count) &* 0x9E37_79B1 ^ UInt32(bytes[first]) &* 0x85EB_CA6B
            ^ UInt32(bytes[range.upperBound - 1]) &* 0xC2B2_AE35 ^ UInt32(bytes[first + range.count / 2]) &* 0x27D4_EB2F
        return mixed >> 26
    }

    /// Whether the name at node `key` (just located, a member of the object at `object`) is written like an earlier
    /// member's, or either is escaped.
    private func repeatsName(_ key: Int, of object: Int, in bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let name = stored[key].text
        var earlier = object + 1
        while earlier < key {
            guard stored[earlier].kind == .string else { return true }
            if Self.equal(bytes, stored[earlier].text, bytes, name) { return true }
            earlier = next(after: earlier + 1)
        }
        return false
    }

    /// Whether `first` in `firstBytes` and `second` in `secondBytes` hold the same bytes.
    @inline(__always)
    private static func equal(
        _ firstBytes: UnsafeBufferPointer<UInt8>, _ first: Range<Int>, _ secondBytes: UnsafeBufferPointer<UInt8>,
        _ second: Range<Int>
    ) -> Bool {
        let count = first.count
        guard count == second.count else { return false }
        guard count > 0, let firstBase = firstBytes.baseAddress, let secondBase = secondBytes.baseAddress else {
            return true
        }
        let one = UnsafeRawPointer(firstBase + first.lowerBound)
        let other = UnsafeRawPointer(secondBase + second.lowerBound)
        // Member names are a few bytes: compared a word at a time, the last word overlapping the one before it.
        func same<Word: FixedWidthInteger>(_: Word.Type, at offset: Int) -> Bool {
            one.loadUnaligned(fromByteOffset: offset, as: Word.self)
                == other.loadUnaligned(fromByteOffset: offset, as: Word.self)
        }
        if count >= 8 {
            var offset = 0
            while offset + 8 < count {
                guard same(UInt64.self, at: offset) else { return false }
                offset += 8
            }
            return same(UInt64.self, at: count - 8)
        }
        if count >= 4 { return same(UInt32.self, at: 0) && same(UInt32.self, at: count - 4) }
        for offset in 0..<count where !same(UInt8.self, at: offset) { return false }
        return true
    }

    /// Returns whether the string is ASCII and has no escapes.
    @discardableResult
    private mutating func locateString(_ parser: inout JSONParser) throws -> Bool {
        let start = parser.index
        let (escaped, ascii) = try parser.skipString()
        if !ascii { isASCII = false }
        stored.append(Stored(escaped ? .escapedString : .string, start: start, end: parser.index))
        return ascii && !escaped
    }
}
