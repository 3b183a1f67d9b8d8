/// Turns any `Encodable` value into a ``JSONValue`` tree without going through text.
///
/// This is the first half of an artifact's canonical JSON (the second is ``JSONWriter/value(_:)``, which sorts keys):
/// both are ours, so the canonical bytes of a value do not depend on Foundation's formatting choices.
/// Non-finite doubles cannot be represented and throw `EncodingError.invalidValue`.
public enum JSONValueEncoder {
    /// The value as a JSON tree.
    /// - Throws: `EncodingError` for a non-finite floating-point number, or whatever the value's `encode(to:)` throws.
    public static func encode(_ value: some Encodable) throws -> JSONValue {
        // Common leaf types skip the encoder machinery.
        switch value {
        case let text as String: return .string(text)
        case let flag as Bool: return .bool(flag)
        case let number as Int: return .int(Int64(number))
        default: break
        }
        let encoder = TreeEncoder(codingPath: [])
        try value.encode(to: encoder)
        return encoder.target.resolved
    }
}

// MARK: - Encoder

/// Where an encoder's result goes: a box, so that nested containers can fill their parent after they are made.
private final class ValueBox {
    var value: JSONValue = .null
    /// The members of an object under construction, or `nil` when this is not an object.
    var members: [String: ValueBox]?
    /// The elements of an array under construction, or `nil` when this is not an array.
    var elements: [ValueBox]?

    /// The finished value, containers resolved recursively.
    var resolved: JSONValue {
        if let members { return .object(members.mapValues(\.resolved)) }
        if let elements { return .array(elements.map(\.resolved)) }
        return value
    }
}

private final class TreeEncoder: Encoder {
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    let target: ValueBox

    init(codingPath: [any CodingKey], box: ValueBox = ValueBox()) {
        self.codingPath = codingPath
        self.target = box
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if target.members == nil { target.members = [:] }
        return KeyedEncodingContainer(KeyedTreeContainer<Key>(box: target, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if target.elements == nil { target.elements = [] }
        return UnkeyedTreeContainer(box: target, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleTreeContainer(box: target, codingPath: codingPath)
    }
}

/// Encodes one value into a box: leaves directly, anything else through a nested encoder. The coding path is built
/// only when it is needed, since building it allocates.
private func encodeValue(
    _ value: some Encodable, into box: ValueBox, codingPath: @autoclosure () -> [any CodingKey]
) throws {
    switch value {
    case let text as String: box.value = .string(text)
    case let flag as Bool: box.value = .bool(flag)
    case let number as Int: box.value = .int(Int64(number))
    case let number as Double: box.value = try finite(number, codingPath())
    case let number as Float: box.value = try finite(Double(number), codingPath())
    default: try value.encode(to: TreeEncoder(codingPath: codingPath(), box: box))
    }
}

private func finite(_ number: Double, _ codingPath: [any CodingKey]) throws -> JSONValue {
    guard number.isFinite else {
        throw EncodingError.invalidValue(
            number, EncodingError.Context(codingPath: codingPath, debugDescription: "\(number) is not valid JSON"))
    }
    return .double(number)
}

private func integer<Number: BinaryInteger>(_ number: Number, _ codingPath: [any CodingKey]) throws -> JSONValue {
    guard let exact = Int64(exactly: number) else {
        // UInt64 values above Int64.max: kept exact as a double would not be, so refused.
        throw EncodingError.invalidValue(
            number, EncodingError.Context(codingPath: codingPath, debugDescription: "\(number) exceeds Int64"))
    }
    return .int(exact)
}

private struct KeyedTreeContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let box: ValueBox
    let codingPath: [any CodingKey]

    private func child(_ key: Key) -> ValueBox {
        let child = ValueBox()
        box.members![key.stringValue] = child
        return child
    }

    mutating func encodeNil(forKey key: Key) throws { child(key).value = .null }
    mutating func encode(_ value: Bool, forKey key: Key) throws { child(key).value = .bool(value) }
    mutating func encode(_ value: String, forKey key: Key) throws { child(key).value = .string(value) }
    mutating func encode(_ value: Double, forKey key: Key) throws {
        child(key).value = try finite(value, codingPath + [key])
    }
    mutating func encode(_ value: Float, forKey key: Key) throws {
        child(key).value = try finite(Double(value), codingPath + [key])
    }
    mutating func encode(_ value: Int, forKey key: Key) throws { child(key).value = .int(Int64(value)) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { child(key).value = .int(Int64(value)) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { child(key).value = .int(Int64(value)) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { child(key).value = .int(Int64(value)) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { child(key).value = .int(value) }
    mutating func encode(_ value: UInt, forKey key: Key) throws {
        child(key).value = try integer(value, codingPath + [key])
    }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { child(key).value = .int(Int64(value)) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { child(key).value = .int(Int64(value)) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { child(key).value = .int(Int64(value)) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws {
        child(key).value = try integer(value, codingPath + [key])
    }
    mutating func encode(_ value: some Encodable, forKey key: Key) throws {
        try encodeValue(value, into: child(key), codingPath: codingPath + [key])
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        let nested = child(key)
        nested.members = [:]
        return KeyedEncodingContainer(KeyedTreeContainer<NestedKey>(box: nested, codingPath: codingPath + [key]))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let nested = child(key)
        nested.elements = []
        return UnkeyedTreeContainer(box: nested, codingPath: codingPath + [key])
    }

    mutating func superEncoder() -> any Encoder {
        TreeEncoder(codingPath: codingPath, box: child(Key(stringValue: "super")!))
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        TreeEncoder(codingPath: codingPath + [key], box: child(key))
    }
}

private struct IndexKey: CodingKey {
    let intValue: Int?
    let stringValue: String
    init(intValue: Int) {
        self.intValue = intValue
        stringValue = String(intValue)
    }
    init?(stringValue: String) { nil }
}

private struct UnkeyedTreeContainer: UnkeyedEncodingContainer {
    let box: ValueBox
    let codingPath: [any CodingKey]
    var count: Int { box.elements!.count }

    private func next() -> ValueBox {
        let child = ValueBox()
        box.elements!.append(child)
        return child
    }

    private var nextPath: [any CodingKey] { codingPath + [IndexKey(intValue: count)] }

    mutating func encodeNil() throws { next().value = .null }
    mutating func encode(_ value: Bool) throws { next().value = .bool(value) }
    mutating func encode(_ value: String) throws { next().value = .string(value) }
    mutating func encode(_ value: Double) throws { next().value = try finite(value, nextPath) }
    mutating func encode(_ value: Float) throws { next().value = try finite(Double(value), nextPath) }
    mutating func encode(_ value: Int) throws { next().value = .int(Int64(value)) }
    mutating func encode(_ value: Int8) throws { next().value = .int(Int64(value)) }
    mutating func encode(_ value: Int16) throws { next().value = .int(Int64(value)) }
    mutating func encode(_ value: Int32) throws { next().value = .int(Int64(value)) }
    mutating func encode(_ value: Int64) throws { next().value = .int(value) }
    mutating func encode(_ value: UInt) throws { next().value = try integer(value, nextPath) }
    mutating func encode(_ value: UInt8) throws { next().value = .int(Int64(value)) }
    mutating func encode(_ value: UInt16) throws { next().value = .int(Int64(value)) }
    mutating func encode(_ value: UInt32) throws { next().value = .int(Int64(value)) }
    mutating func encode(_ value: UInt64) throws { next().value = try integer(value, nextPath) }
    mutating func encode(_ value: some Encodable) throws {
        let index = count
        try encodeValue(value, into: next(), codingPath: codingPath + [IndexKey(intValue: index)])
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type
    ) -> KeyedEncodingContainer<NestedKey> {
        let path = nextPath
        let nested = next()
        nested.members = [:]
        return KeyedEncodingContainer(KeyedTreeContainer<NestedKey>(box: nested, codingPath: path))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let path = nextPath
        let nested = next()
        nested.elements = []
        return UnkeyedTreeContainer(box: nested, codingPath: path)
    }

    mutating func superEncoder() -> any Encoder {
        let path = nextPath
        return TreeEncoder(codingPath: path, box: next())
    }
}

private struct SingleTreeContainer: SingleValueEncodingContainer {
    let box: ValueBox
    let codingPath: [any CodingKey]

    mutating func encodeNil() throws { box.value = .null }
    mutating func encode(_ value: Bool) throws { box.value = .bool(value) }
    mutating func encode(_ value: String) throws { box.value = .string(value) }
    mutating func encode(_ value: Double) throws { box.value = try finite(value, codingPath) }
    mutating func encode(_ value: Float) throws { box.value = try finite(Double(value), codingPath) }
    mutating func encode(_ value: Int) throws { box.value = .int(Int64(value)) }
    mutating func encode(_ value: Int8) throws { box.value = .int(Int64(value)) }
    mutating func encode(_ value: Int16) throws { box.value = .int(Int64(value)) }
    mutating func encode(_ value: Int32) throws { box.value = .int(Int64(value)) }
    mutating func encode(_ value: Int64) throws { box.value = .int(value) }
    mutating func encode(_ value: UInt) throws { box.value = try integer(value, codingPath) }
    mutating func encode(_ value: UInt8) throws { box.value = .int(Int64(value)) }
    mutating func encode(_ value: UInt16) throws { box.value = .int(Int64(value)) }
    mutating func encode(_ value: UInt32) throws { box.value = .int(Int64(value)) }
    mutating func encode(_ value: UInt64) throws { box.value = try integer(value, codingPath) }
    mutating func encode(_ value: some Encodable) throws { try encodeValue(value, into: box, codingPath: codingPath) }
}
