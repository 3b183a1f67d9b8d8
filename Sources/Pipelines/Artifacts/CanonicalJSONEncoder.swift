/// Canonical JSON of a value: object members sorted by key (UTF-8 byte order), no insignificant whitespace, integers
/// as integers, other numbers in Swift's shortest round-trip form, only `"`, `\` and control characters escaped.
///
/// Written by Sluice itself, straight from the value's `Encodable` conformance into bytes (no intermediate tree), so
/// an artifact's hash does not depend on Foundation's formatting and costs few allocations.
public enum CanonicalJSON {
    /// The canonical bytes of `value`.
    /// - Throws: `EncodingError.invalidValue` for a non-finite floating-point number or an integer beyond `Int64`,
    ///   or whatever the value's `encode(to:)` throws.
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        let output = ByteSink()
        try write(value, to: output, codingPath: [])
        return output.bytes
    }

    /// Encodes `value` into `scratch`, replacing what it held, and calls `body` with the canonical bytes: how a tracker
    /// writing many artifacts encodes them without a buffer of its own per value.
    /// - Throws: as ``encode(_:)``; `body` is then not called.
    static func encode<Result>(
        _ value: some Encodable, in scratch: CanonicalScratch, _ body: (UnsafeBufferPointer<UInt8>) -> Result
    ) throws -> Result {
        scratch.sink.writer.truncate(to: 0)
        scratch.sink.writer.startPiece()
        try write(value, to: scratch.sink, codingPath: [])
        return scratch.sink.writer.withBytes(body)
    }

    /// The canonical bytes of a JSON tree.
    public static func bytes(of tree: JSONValue) -> [UInt8] {
        var writer = JSONWriter()
        writer.value(tree)
        return writer.bytes
    }
}

// MARK: - Output

/// A buffer reused by canonical encodings (``CanonicalJSON/encode(_:in:_:)``). One thread at a time.
final class CanonicalScratch {
    fileprivate let sink = ByteSink()

    /// Calls `body` with the bytes of the last encoding.
    func withBytes<Result>(_ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
        sink.writer.withBytes(body)
    }
}

/// The bytes being written; shared by the encoders of one value.
private final class ByteSink {
    // Unchecked: only the encoders of one value, on one thread, one access at a time, ever touch it; dynamic
    // exclusivity checks were a quarter of the cost of encoding.
    @exclusivity(unchecked) var writer = JSONWriter(capacity: 128)
    var bytes: [UInt8] { writer.bytes }
    var count: Int { writer.count }
}

/// Writes one value: leaves directly, anything else through an encoder that is finished when the value's
/// `encode(to:)` returns. The coding path is built only when needed, since building it allocates.
private func write<Value: Encodable>(
    _ value: Value, to sink: ByteSink, codingPath: @autoclosure () -> [any CodingKey]
) throws {
    // Leaves and arrays of leaves, the common artifacts, skip the encoder machinery. Comparing metatypes is much
    // cheaper than a failed dynamic cast; the bit casts are between identical types.
    if Value.self == String.self {
        sink.writer.string(unsafeBitCast(value, to: String.self))
    } else if Value.self == Int.self {
        sink.writer.int(Int64(unsafeBitCast(value, to: Int.self)))
    } else if Value.self == Bool.self {
        sink.writer.bool(unsafeBitCast(value, to: Bool.self))
    } else if Value.self == Double.self {
        try sink.writer.finite(unsafeBitCast(value, to: Double.self), codingPath())
    } else if Value.self == [String].self {
        sink.writer.array { out in for text in unsafeBitCast(value, to: [String].self) { out.string(text) } }
    } else if Value.self == [Int].self {
        sink.writer.array { out in for number in unsafeBitCast(value, to: [Int].self) { out.int(Int64(number)) } }
    } else if Value.self == [Double].self, unsafeBitCast(value, to: [Double].self).allSatisfy(\.isFinite) {
        sink.writer.array { out in for number in unsafeBitCast(value, to: [Double].self) { out.double(number) } }
    } else {
        let encoder = ByteEncoder(sink: sink, codingPath: codingPath())
        try value.encode(to: encoder)
        encoder.finish()
    }
}

extension JSONWriter {
    fileprivate mutating func finite(_ number: Double, _ codingPath: [any CodingKey]) throws {
        guard number.isFinite else {
            throw EncodingError.invalidValue(
                number, EncodingError.Context(codingPath: codingPath, debugDescription: "\(number) is not valid JSON"))
        }
        double(number)
    }

    fileprivate mutating func exact(_ number: some BinaryInteger, _ codingPath: [any CodingKey]) throws {
        guard let exact = Int64(exactly: number) else {
            throw EncodingError.invalidValue(
                number, EncodingError.Context(codingPath: codingPath, debugDescription: "\(number) exceeds Int64"))
        }
        int(exact)
    }
}

// MARK: - Encoder

/// The encoder of one non-leaf value. Its container's members are written to the sink as they come, each without
/// separators, and their spans recorded; ``finish()`` rewrites that region as `{...}` with the members sorted by key
/// (or `[...]` in order). A nested container asked for later (`nestedContainer`, `superEncoder`) writes to a sink of
/// its own and is copied in at the end, so interleaved members still come out whole.
private final class ByteEncoder: Encoder {
    enum Shape {
        case none
        case object
        case array
        case single
    }

    /// A member's bytes: a span of the sink, or a nested encoder finished later.
    enum Piece {
        case span(Range<Int>)
        case deferred(ByteEncoder)
    }

    let sink: ByteSink
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    // Unchecked, like ByteSink.writer: one value's encoders run on one thread, one access at a time.
    @exclusivity(unchecked) private(set) var shape = Shape.none
    private let start: Int
    @exclusivity(unchecked) var members: [(key: String, piece: Piece)] = []
    @exclusivity(unchecked) var elements: [Piece] = []

    init(sink: ByteSink, codingPath: [any CodingKey]) {
        self.sink = sink
        self.codingPath = codingPath
        self.start = sink.count
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if shape == .none {
            shape = .object
            // Room for a typical object's members at once, rather than growing the array member by member.
            members.reserveCapacity(8)
        }
        return KeyedEncodingContainer(KeyedByteContainer<Key>(encoder: self))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if shape == .none { shape = .array }
        return UnkeyedByteContainer(encoder: self)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        if shape == .none { shape = .single }
        return SingleByteContainer(encoder: self)
    }

    /// Writes a member's value to the sink and records its span.
    func record(_ write: () throws -> Void) rethrows -> Piece {
        let begin = sink.count
        sink.writer.startPiece()
        try write()
        return .span(begin..<sink.count)
    }

    /// A nested encoder on a sink of its own, for containers filled after this call returns.
    func deferred(_ codingPath: [any CodingKey]) -> ByteEncoder {
        ByteEncoder(sink: ByteSink(), codingPath: codingPath)
    }

    /// Turns what was written since `start` into the value's JSON.
    func finish() {
        switch shape {
        case .single:
            return
        case .none where sink.count == start:
            // A type that encoded nothing is an empty object, as Foundation writes it.
            sink.writer.startPiece()
            sink.writer.object { _ in }
            return
        case .none:
            return
        case .object:
            // Insertion sort (objects are small), stable: of a key encoded twice the later value is kept, as
            // Foundation keeps it.
            for index in members.indices.dropFirst() {
                var position = index
                let member = members[index]
                while position > 0, utf8Precedes(member.key, members[position - 1].key) {
                    members[position] = members[position - 1]
                    position -= 1
                }
                members[position] = member
            }
            rewrite { out, written in
                out.object { out in
                    for (index, member) in members.enumerated()
                    where index + 1 == members.count || members[index + 1].key != member.key {
                        out.key(named: member.key)
                        write(member.piece, from: written, to: &out)
                    }
                }
            }
        case .array:
            rewrite { out, written in
                out.array { out in
                    for element in elements { write(element, from: written, to: &out) }
                }
            }
        }
    }

    /// Replaces what was written since `start` by what `body` writes, given a copy of it (on the stack when small).
    private func rewrite(_ body: (inout JSONWriter, UnsafeBufferPointer<UInt8>) -> Void) {
        let length = sink.count - start
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: length) { copy in
            sink.writer.withBytes { written in
                _ = copy.initialize(fromContentsOf: UnsafeBufferPointer(rebasing: written[start...]))
            }
            sink.writer.truncate(to: start)
            sink.writer.startPiece()
            body(&sink.writer, UnsafeBufferPointer(copy))
        }
    }

    /// Writes a member's or element's value: its span of `written` (what was written from `start` on), or the
    /// nested encoder's bytes.
    private func write(_ piece: Piece, from written: UnsafeBufferPointer<UInt8>, to out: inout JSONWriter) {
        switch piece {
        case .span(let span):
            out.raw(UnsafeBufferPointer(rebasing: written[(span.lowerBound - start)..<(span.upperBound - start)]))
        case .deferred(let encoder):
            encoder.finish()
            encoder.sink.writer.withBytes { out.raw($0) }
        }
    }
}

// MARK: - Containers

private struct KeyedByteContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: ByteEncoder
    var codingPath: [any CodingKey] { encoder.codingPath }

    private func member(_ key: Key, _ write: (inout JSONWriter) throws -> Void) rethrows {
        let piece = try encoder.record { try write(&encoder.sink.writer) }
        encoder.members.append((key.stringValue, piece))
    }

    mutating func encodeNil(forKey key: Key) throws { member(key) { $0.null() } }
    mutating func encode(_ value: Bool, forKey key: Key) throws { member(key) { $0.bool(value) } }
    mutating func encode(_ value: String, forKey key: Key) throws { member(key) { $0.string(value) } }
    mutating func encode(_ value: Double, forKey key: Key) throws {
        try member(key) { try $0.finite(value, codingPath + [key]) }
    }
    mutating func encode(_ value: Float, forKey key: Key) throws {
        try member(key) { try $0.finite(Double(value), codingPath + [key]) }
    }
    mutating func encode(_ value: Int, forKey key: Key) throws { member(key) { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int8, forKey key: Key) throws { member(key) { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int16, forKey key: Key) throws { member(key) { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int32, forKey key: Key) throws { member(key) { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int64, forKey key: Key) throws { member(key) { $0.int(value) } }
    mutating func encode(_ value: UInt, forKey key: Key) throws {
        try member(key) { try $0.exact(value, codingPath + [key]) }
    }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { member(key) { $0.int(Int64(value)) } }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { member(key) { $0.int(Int64(value)) } }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { member(key) { $0.int(Int64(value)) } }
    mutating func encode(_ value: UInt64, forKey key: Key) throws {
        try member(key) { try $0.exact(value, codingPath + [key]) }
    }
    mutating func encode(_ value: some Encodable, forKey key: Key) throws {
        let piece = try encoder.record { try write(value, to: encoder.sink, codingPath: codingPath + [key]) }
        encoder.members.append((key.stringValue, piece))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        let nested = encoder.deferred(codingPath + [key])
        encoder.members.append((key.stringValue, .deferred(nested)))
        return nested.container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let nested = encoder.deferred(codingPath + [key])
        encoder.members.append((key.stringValue, .deferred(nested)))
        return nested.unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let nested = encoder.deferred(codingPath)
        encoder.members.append(("super", .deferred(nested)))
        return nested
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let nested = encoder.deferred(codingPath + [key])
        encoder.members.append((key.stringValue, .deferred(nested)))
        return nested
    }
}

private struct UnkeyedByteContainer: UnkeyedEncodingContainer {
    let encoder: ByteEncoder
    var codingPath: [any CodingKey] { encoder.codingPath }
    var count: Int { encoder.elements.count }

    private var nextPath: [any CodingKey] { codingPath + [IndexKey(intValue: count)] }

    private func element(_ write: (inout JSONWriter) throws -> Void) rethrows {
        encoder.elements.append(try encoder.record { try write(&encoder.sink.writer) })
    }

    mutating func encodeNil() throws { element { $0.null() } }
    mutating func encode(_ value: Bool) throws { element { $0.bool(value) } }
    mutating func encode(_ value: String) throws { element { $0.string(value) } }
    mutating func encode(_ value: Double) throws {
        let path = nextPath
        try element { try $0.finite(value, path) }
    }
    mutating func encode(_ value: Float) throws {
        let path = nextPath
        try element { try $0.finite(Double(value), path) }
    }
    mutating func encode(_ value: Int) throws { element { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int8) throws { element { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int16) throws { element { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int32) throws { element { $0.int(Int64(value)) } }
    mutating func encode(_ value: Int64) throws { element { $0.int(value) } }
    mutating func encode(_ value: UInt) throws {
        let path = nextPath
        try element { try $0.exact(value, path) }
    }
    mutating func encode(_ value: UInt8) throws { element { $0.int(Int64(value)) } }
    mutating func encode(_ value: UInt16) throws { element { $0.int(Int64(value)) } }
    mutating func encode(_ value: UInt32) throws { element { $0.int(Int64(value)) } }
    mutating func encode(_ value: UInt64) throws {
        let path = nextPath
        try element { try $0.exact(value, path) }
    }
    mutating func encode(_ value: some Encodable) throws {
        let encoder = encoder
        let index = count
        encoder.elements.append(
            try encoder.record {
                try write(value, to: encoder.sink, codingPath: encoder.codingPath + [IndexKey(intValue: index)])
            })
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type
    ) -> KeyedEncodingContainer<NestedKey> {
        let nested = encoder.deferred(nextPath)
        encoder.elements.append(.deferred(nested))
        return nested.container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let nested = encoder.deferred(nextPath)
        encoder.elements.append(.deferred(nested))
        return nested.unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let nested = encoder.deferred(nextPath)
        encoder.elements.append(.deferred(nested))
        return nested
    }
}

private struct SingleByteContainer: SingleValueEncodingContainer {
    let encoder: ByteEncoder
    var codingPath: [any CodingKey] { encoder.codingPath }
    mutating func encodeNil() throws { encoder.sink.writer.null() }
    mutating func encode(_ value: Bool) throws { encoder.sink.writer.bool(value) }
    mutating func encode(_ value: String) throws { encoder.sink.writer.string(value) }
    mutating func encode(_ value: Double) throws { try encoder.sink.writer.finite(value, codingPath) }
    mutating func encode(_ value: Float) throws { try encoder.sink.writer.finite(Double(value), codingPath) }
    mutating func encode(_ value: Int) throws { encoder.sink.writer.int(Int64(value)) }
    mutating func encode(_ value: Int8) throws { encoder.sink.writer.int(Int64(value)) }
    mutating func encode(_ value: Int16) throws { encoder.sink.writer.int(Int64(value)) }
    mutating func encode(_ value: Int32) throws { encoder.sink.writer.int(Int64(value)) }
    mutating func encode(_ value: Int64) throws { encoder.sink.writer.int(value) }
    mutating func encode(_ value: UInt) throws { try encoder.sink.writer.exact(value, codingPath) }
    mutating func encode(_ value: UInt8) throws { encoder.sink.writer.int(Int64(value)) }
    mutating func encode(_ value: UInt16) throws { encoder.sink.writer.int(Int64(value)) }
    mutating func encode(_ value: UInt32) throws { encoder.sink.writer.int(Int64(value)) }
    mutating func encode(_ value: UInt64) throws { try encoder.sink.writer.exact(value, codingPath) }
    mutating func encode(_ value: some Encodable) throws {
        try write(value, to: encoder.sink, codingPath: codingPath)
    }
}
