/// Decodes `Decodable` values from JSON bytes through Sluice's own parser: how a worker reads a request's input
/// without Foundation's `JSONDecoder`, which costs several microseconds a request. The bytes are checked and located
/// in one pass (``JSONTape``); a member's name is compared in place and a value is read only when it is decoded.
///
/// Numbers convert where no precision is lost (an integral double decodes as `Int`, any integer as `Double`); a
/// missing key or a wrong type throws the `DecodingError` Foundation would, with the coding path. A repeated object
/// key keeps its last value.
public enum JSONValueDecoder {
    /// - Throws: ``JSONParseError`` for bytes that are not JSON, `DecodingError` for JSON that is not a `T`.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        let document = LocatedDocument(try JSONTape(bytes))
        return try TapeDecoder(document: document, node: 0, codingPath: []).decodeValue(type)
    }
}

private struct TapeDecoder: Decoder {
    let document: LocatedDocument
    let node: Int
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let count, _, _) = document[node] else {
            throw mismatch([String: JSONValue].self, document[node], codingPath)
        }
        return KeyedDecodingContainer(
            KeyedTapeContainer<Key>(document: document, object: node, count: count, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let count, _) = document[node] else {
            throw mismatch([JSONValue].self, document[node], codingPath)
        }
        return UnkeyedTapeContainer(document: document, array: node, count: count, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleTapeContainer(document: document, node: node, codingPath: codingPath)
    }

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        try leaf(type, document, node, codingPath)
    }
}

// MARK: - Leaves

private func mismatch(_ type: Any.Type, _ value: JSONTape.Node, _ codingPath: [any CodingKey]) -> DecodingError {
    if case .null = value {
        return .valueNotFound(type, .init(codingPath: codingPath, debugDescription: "null where \(type) belongs"))
    }
    return .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "not a \(type)"))
}

private func leafString(
    _ value: JSONTape.Node, _ document: LocatedDocument, _ codingPath: @autoclosure () -> [any CodingKey]
) throws -> String {
    guard case .string(let range, let escaped) = value else { throw mismatch(String.self, value, codingPath()) }
    return document.tape.string(range, escaped: escaped)
}

private func leafBool(_ value: JSONTape.Node, _ codingPath: @autoclosure () -> [any CodingKey]) throws -> Bool {
    guard case .bool(let flag) = value else { throw mismatch(Bool.self, value, codingPath()) }
    return flag
}

private func leafDouble(_ value: JSONTape.Node, _ codingPath: @autoclosure () -> [any CodingKey]) throws -> Double {
    switch value {
    case .double(let number): return number
    case .int(let number): return Double(number)
    default: throw mismatch(Double.self, value, codingPath())
    }
}

private func leafInteger<Number: FixedWidthInteger>(
    _ type: Number.Type, _ value: JSONTape.Node, _ codingPath: @autoclosure () -> [any CodingKey]
) throws -> Number {
    let exact: Number?
    let written: String
    switch value {
    case .int(let number): (exact, written) = (Number(exactly: number), "\(number)")
    case .double(let number): (exact, written) = (Number(exactly: number), "\(number)")
    default: throw mismatch(type, value, codingPath())
    }
    guard let exact else {
        throw DecodingError.dataCorrupted(
            .init(codingPath: codingPath(), debugDescription: "\(written) does not fit in \(type)"))
    }
    return exact
}

/// The value at `node`: leaves directly (a metatype check, much cheaper than a dynamic cast), anything else through
/// `init(from:)`. The coding path is built only for an error or an `init(from:)`: a member's path is its container's
/// and its key, and appending them for every leaf decoded would allocate an array each time.
private func leaf<T: Decodable>(
    _ type: T.Type, _ document: LocatedDocument, _ node: Int, _ codingPath: @autoclosure () -> [any CodingKey]
) throws -> T {
    let value = document[node]
    if T.self == String.self { return unsafeBitCast(try leafString(value, document, codingPath()), to: T.self) }
    if T.self == Int.self { return unsafeBitCast(try leafInteger(Int.self, value, codingPath()), to: T.self) }
    if T.self == Double.self { return unsafeBitCast(try leafDouble(value, codingPath()), to: T.self) }
    if T.self == Bool.self { return unsafeBitCast(try leafBool(value, codingPath()), to: T.self) }
    return try T(from: TapeDecoder(document: document, node: node, codingPath: codingPath()))
}

// MARK: - Containers

private struct KeyedTapeContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let document: LocatedDocument
    /// The object's node; its members follow it, each a key node and a value node.
    let object: Int
    let codingPath: [any CodingKey]
    /// Member values by name, for objects too large to search member by member (a dictionary being decoded).
    private let index: [String: Int]?

    /// Objects with more members than this are indexed by name once; smaller ones are searched.
    private static var searchedMembers: Int { 16 }

    init(document: LocatedDocument, object: Int, count: Int, codingPath: [any CodingKey]) {
        self.document = document
        self.object = object
        self.codingPath = codingPath
        if count > Self.searchedMembers {
            var index: [String: Int] = [:]
            index.reserveCapacity(count)
            for (name, value) in document.tape.members(of: object) { index[name] = value }
            self.index = index
        } else {
            index = nil
        }
    }

    var allKeys: [Key] { document.tape.members(of: object).compactMap { Key(stringValue: $0.name) } }

    /// The value node of the member named `name` (the last one, if the name repeats).
    private func valueNode(_ name: String) -> Int? {
        if let index { return index[name] }
        return document.member(name, of: object)
    }

    func contains(_ key: Key) -> Bool { valueNode(key.stringValue) != nil }

    private func member(_ key: Key) throws -> Int {
        guard let node = valueNode(key.stringValue) else {
            throw DecodingError.keyNotFound(
                key, .init(codingPath: codingPath, debugDescription: "no member '\(key.stringValue)'"))
        }
        return node
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        if case .null = document[try member(key)] { return true }
        return false
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try leaf(type, document, member(key), codingPath + [key])
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let node = valueNode(key.stringValue) else { return nil }
        if case .null = document[node] { return nil }
        return try leaf(type, document, node, codingPath + [key])
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try TapeDecoder(document: document, node: member(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try TapeDecoder(document: document, node: member(key), codingPath: codingPath + [key]).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        decoder(forMember: "super", codingPath)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        decoder(forMember: key.stringValue, codingPath + [key])
    }

    /// A decoder of the member, or of `null` when it is absent.
    private func decoder(forMember name: String, _ path: [any CodingKey]) -> any Decoder {
        guard let node = valueNode(name) else {
            return TapeDecoder(document: LocatedDocument(.null), node: 0, codingPath: path)
        }
        return TapeDecoder(document: document, node: node, codingPath: path)
    }
}

private struct UnkeyedTapeContainer: UnkeyedDecodingContainer {
    let document: LocatedDocument
    let codingPath: [any CodingKey]
    let elementCount: Int
    private(set) var currentIndex = 0
    /// The node of the element at `currentIndex`.
    private var node: Int

    init(document: LocatedDocument, array: Int, count: Int, codingPath: [any CodingKey]) {
        self.document = document
        self.codingPath = codingPath
        elementCount = count
        node = array + 1
    }

    var count: Int? { elementCount }
    var isAtEnd: Bool { currentIndex >= elementCount }

    /// The element's node; moves past it.
    private mutating func next(_ type: Any.Type) throws -> Int {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                type, .init(codingPath: codingPath, debugDescription: "the array has only \(elementCount) elements"))
        }
        defer {
            currentIndex += 1
            node = document.tape.next(after: node)
        }
        return node
    }

    /// The coding path of the element at `currentIndex`.
    private var elementPath: [any CodingKey] { codingPath + [IndexKey(intValue: currentIndex)] }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, case .null = document[node] else { return false }
        _ = try next(JSONValue.self)
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (index, parent) = (currentIndex, codingPath)
        let node = try next(type)
        return try leaf(type, document, node, parent + [IndexKey(intValue: index)])
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        let path = elementPath
        return try TapeDecoder(document: document, node: next([String: JSONValue].self), codingPath: path)
            .container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let path = elementPath
        return try TapeDecoder(document: document, node: next([JSONValue].self), codingPath: path).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let path = elementPath
        return TapeDecoder(document: document, node: try next(JSONValue.self), codingPath: path)
    }
}

private struct SingleTapeContainer: SingleValueDecodingContainer {
    let document: LocatedDocument
    let node: Int
    let codingPath: [any CodingKey]

    private var value: JSONTape.Node { document[node] }

    func decodeNil() -> Bool {
        if case .null = value { return true }
        return false
    }

    func decode(_ type: Bool.Type) throws -> Bool { try leafBool(value, codingPath) }
    func decode(_ type: String.Type) throws -> String { try leafString(value, document, codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try leafDouble(value, codingPath) }
    func decode(_ type: Float.Type) throws -> Float { Float(try leafDouble(value, codingPath)) }
    func decode(_ type: Int.Type) throws -> Int { try leafInteger(type, value, codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try leafInteger(type, value, codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try leafInteger(type, value, codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try leafInteger(type, value, codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try leafInteger(type, value, codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try leafInteger(type, value, codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try leafInteger(type, value, codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try leafInteger(type, value, codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try leafInteger(type, value, codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try leafInteger(type, value, codingPath) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try leaf(type, document, node, codingPath) }
}
