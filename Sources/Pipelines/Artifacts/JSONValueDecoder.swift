/// Decodes `Decodable` values from JSON bytes through Sluice's own parser (``JSONValue/init(parsing:)``): how a
/// worker reads a request's input without Foundation's `JSONDecoder`, which costs several microseconds a request.
///
/// Numbers convert where no precision is lost (an integral double decodes as `Int`, any integer as `Double`); a
/// missing key or a wrong type throws the `DecodingError` Foundation would, with the coding path.
public enum JSONValueDecoder {
    /// - Throws: ``JSONParseError`` for bytes that are not JSON, `DecodingError` for JSON that is not a `T`.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try decode(type, from: JSONValue(parsing: bytes))
    }

    /// - Throws: `DecodingError` for a value that is not a `T`.
    public static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try TreeDecoder(value: value, codingPath: []).decodeValue(type)
    }
}

private struct TreeDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw mismatch([String: JSONValue].self, value, codingPath) }
        return KeyedDecodingContainer(KeyedTreeContainer<Key>(members: members, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([JSONValue].self, value, codingPath) }
        return UnkeyedTreeContainer(elements: elements, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleTreeContainer(value: value, codingPath: codingPath)
    }

    /// Leaves directly (a metatype check, much cheaper than a dynamic cast), anything else through `init(from:)`.
    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == String.self { return unsafeBitCast(try leafString(value, codingPath), to: T.self) }
        if T.self == Int.self { return unsafeBitCast(try leafInteger(Int.self, value, codingPath), to: T.self) }
        if T.self == Double.self { return unsafeBitCast(try leafDouble(value, codingPath), to: T.self) }
        if T.self == Bool.self { return unsafeBitCast(try leafBool(value, codingPath), to: T.self) }
        return try T(from: self)
    }
}

// MARK: - Leaves

private func mismatch(_ type: Any.Type, _ value: JSONValue, _ codingPath: [any CodingKey]) -> DecodingError {
    if case .null = value {
        return .valueNotFound(type, .init(codingPath: codingPath, debugDescription: "null where \(type) belongs"))
    }
    return .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "not a \(type)"))
}

private func leafString(_ value: JSONValue, _ codingPath: [any CodingKey]) throws -> String {
    guard case .string(let text) = value else { throw mismatch(String.self, value, codingPath) }
    return text
}

private func leafBool(_ value: JSONValue, _ codingPath: [any CodingKey]) throws -> Bool {
    guard case .bool(let flag) = value else { throw mismatch(Bool.self, value, codingPath) }
    return flag
}

private func leafDouble(_ value: JSONValue, _ codingPath: [any CodingKey]) throws -> Double {
    switch value {
    case .double(let number): return number
    case .int(let number): return Double(number)
    default: throw mismatch(Double.self, value, codingPath)
    }
}

private func leafInteger<Number: FixedWidthInteger>(
    _ type: Number.Type, _ value: JSONValue, _ codingPath: [any CodingKey]
) throws -> Number {
    let exact: Number?
    switch value {
    case .int(let number): exact = Number(exactly: number)
    case .double(let number): exact = Number(exactly: number)
    default: throw mismatch(type, value, codingPath)
    }
    guard let exact else {
        throw DecodingError.dataCorrupted(
            .init(codingPath: codingPath, debugDescription: "\(value) does not fit in \(type)"))
    }
    return exact
}

/// One leaf value of any supported type.
private func leaf<T: Decodable>(_ type: T.Type, _ value: JSONValue, _ codingPath: [any CodingKey]) throws -> T {
    try TreeDecoder(value: value, codingPath: codingPath).decodeValue(type)
}

// MARK: - Containers

private struct KeyedTreeContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let members: [String: JSONValue]
    let codingPath: [any CodingKey]

    var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

    private func member(_ key: Key) throws -> JSONValue {
        guard let value = members[key.stringValue] else {
            throw DecodingError.keyNotFound(
                key, .init(codingPath: codingPath, debugDescription: "no member '\(key.stringValue)'"))
        }
        return value
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        if case .null = try member(key) { return true }
        return false
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try leaf(type, member(key), codingPath + [key])
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let value = members[key.stringValue] else { return nil }
        if case .null = value { return nil }
        return try leaf(type, value, codingPath + [key])
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try TreeDecoder(value: member(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try TreeDecoder(value: member(key), codingPath: codingPath + [key]).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        TreeDecoder(value: members["super"] ?? .null, codingPath: codingPath)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        TreeDecoder(value: members[key.stringValue] ?? .null, codingPath: codingPath + [key])
    }
}

private struct UnkeyedTreeContainer: UnkeyedDecodingContainer {
    let elements: [JSONValue]
    let codingPath: [any CodingKey]
    private(set) var currentIndex = 0

    init(elements: [JSONValue], codingPath: [any CodingKey]) {
        self.elements = elements
        self.codingPath = codingPath
    }

    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private mutating func next(_ type: Any.Type) throws -> (JSONValue, [any CodingKey]) {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                type, .init(codingPath: codingPath, debugDescription: "the array has only \(elements.count) elements"))
        }
        defer { currentIndex += 1 }
        return (elements[currentIndex], codingPath + [IndexKey(intValue: currentIndex)])
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, case .null = elements[currentIndex] else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (value, path) = try next(type)
        return try leaf(type, value, path)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        let (value, path) = try next([String: JSONValue].self)
        return try TreeDecoder(value: value, codingPath: path).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (value, path) = try next([JSONValue].self)
        return try TreeDecoder(value: value, codingPath: path).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (value, path) = try next(JSONValue.self)
        return TreeDecoder(value: value, codingPath: path)
    }
}

private struct SingleTreeContainer: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [any CodingKey]

    func decodeNil() -> Bool {
        if case .null = value { return true }
        return false
    }

    func decode(_ type: Bool.Type) throws -> Bool { try leafBool(value, codingPath) }
    func decode(_ type: String.Type) throws -> String { try leafString(value, codingPath) }
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
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try leaf(type, value, codingPath) }
}
