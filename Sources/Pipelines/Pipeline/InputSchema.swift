/// The JSON Schema (2020-12) of a `Decodable` type, found by letting the type decode itself from a probe that records
/// what it asks for: the keys it decodes (required, or optional with `decodeIfPresent`), the element of an array, and
/// the kind of each value. For documents that describe a pipeline's input, such as the gateway's OpenAPI document.
///
/// What the probe cannot see is left open (`{}`: any JSON value): a dictionary's values and ``JSONValue``; and a type whose
/// `init(from:)` refuses the probe's stand-ins (an enum of strings refuses `""`) or that nests more than 16 deep (a
/// recursive one) leaves the whole schema open.
public enum InputSchema {
    /// The schema of `type` as a JSON value.
    public static func of<T: Decodable>(_ type: T.Type) -> JSONValue {
        let node = SchemaNode()
        do {
            _ = try probe(type, into: node, depth: 0)
            return node.schema
        } catch {
            return .object([:])
        }
    }
}

/// What one value turned out to be while its type decoded it.
private final class SchemaNode {
    enum Shape {
        case unknown
        case scalar(String)
        case object(properties: [(String, SchemaNode)], required: [String])
        case array(items: SchemaNode)
    }

    var shape = Shape.unknown
    var nullable = false
    /// Of an object: the keys asked whether they are null, which only optional members are.
    var optionalKeys: Set<String> = []

    var schema: JSONValue {
        var schema: [String: JSONValue]
        switch shape {
        case .unknown:
            return .object([:])
        case .scalar(let type):
            schema = ["type": .string(type)]
        case .object(let properties, let required):
            schema = [
                "type": .string("object"),
                "properties": .object(Dictionary(properties.map { ($0.0, $0.1.schema) }, uniquingKeysWith: { $1 })),
            ]
            if !required.isEmpty { schema["required"] = .array(required.map(JSONValue.string)) }
        case .array(let items):
            schema = ["type": .string("array"), "items": items.schema]
        }
        if nullable, case .string(let type)? = schema["type"] {
            schema["type"] = .array([.string(type), .string("null")])
        }
        return .object(schema)
    }
}

private struct SchemaProbe: Decoder {
    let node: SchemaNode
    let depth: Int
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        switch node.shape {
        case .object: break
        default: node.shape = .object(properties: [], required: [])
        }
        return KeyedDecodingContainer(KeyedProbe<Key>(node: node, depth: depth))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let items = SchemaNode()
        node.shape = .array(items: items)
        return UnkeyedProbe(items: items, depth: depth)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueProbe(node: node, depth: depth)
    }
}

/// Decodes a stand-in of `type` into `node`: the scalars directly, anything else by its own `init(from:)`.
private func probe<T: Decodable>(_ type: T.Type, into node: SchemaNode, depth: Int) throws -> T {
    if let value = scalar(type, into: node) { return value }
    if type == JSONValue.self { return JSONValue.null as! T }
    guard depth < 16 else { throw SchemaProbeTooDeep() }
    return try T(from: SchemaProbe(node: node, depth: depth + 1))
}

/// A stand-in for the JSON scalars' Swift types, with their schema type written to `node`; `nil` for other types.
private func scalar<T>(_ type: T.Type, into node: SchemaNode) -> T? {
    let value: Any
    switch type {
    case is String.Type: (node.shape, value) = (.scalar("string"), "")
    case is Bool.Type: (node.shape, value) = (.scalar("boolean"), false)
    case is Double.Type: (node.shape, value) = (.scalar("number"), 0.0)
    case is Float.Type: (node.shape, value) = (.scalar("number"), Float(0))
    case let integer as any FixedWidthInteger.Type: (node.shape, value) = (.scalar("integer"), integer.init(0))
    default: return nil
    }
    return value as? T
}

/// A type nested deeper than the probe goes (a recursive type): its schema is left open.
private struct SchemaProbeTooDeep: Error {}

private struct KeyedProbe<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let node: SchemaNode
    let depth: Int
    var codingPath: [any CodingKey] { [] }
    var allKeys: [Key] { [] }

    func contains(_ key: Key) -> Bool { true }

    private func add(_ key: Key, required: Bool) -> SchemaNode {
        let child = SchemaNode()
        guard case .object(var properties, var names) = node.shape else { return child }
        properties.append((key.stringValue, child))
        if required { names.append(key.stringValue) }
        node.shape = .object(properties: properties, required: names)
        return child
    }

    /// Asked only of optional members (by `decodeIfPresent`'s default implementation, before it decodes them).
    func decodeNil(forKey key: Key) throws -> Bool {
        node.optionalKeys.insert(key.stringValue)
        return false
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        let optional = node.optionalKeys.contains(key.stringValue)
        let child = add(key, required: !optional)
        child.nullable = optional
        return try probe(type, into: child, depth: depth)
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        let child = add(key, required: false)
        child.nullable = true
        return try probe(type, into: child, depth: depth)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        try SchemaProbe(node: add(key, required: true), depth: depth + 1).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try SchemaProbe(node: add(key, required: true), depth: depth + 1).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { SchemaProbe(node: SchemaNode(), depth: depth + 1) }
    func superDecoder(forKey key: Key) throws -> any Decoder { SchemaProbe(node: SchemaNode(), depth: depth + 1) }
}

/// An array of one element: its schema is the items'.
private struct UnkeyedProbe: UnkeyedDecodingContainer {
    let items: SchemaNode
    let depth: Int
    var codingPath: [any CodingKey] { [] }
    var count: Int? { 1 }
    var currentIndex = 0
    var isAtEnd: Bool { currentIndex > 0 }

    mutating func decodeNil() throws -> Bool { false }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        currentIndex += 1
        return try probe(type, into: items, depth: depth)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        currentIndex += 1
        return try SchemaProbe(node: items, depth: depth + 1).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        currentIndex += 1
        return try SchemaProbe(node: items, depth: depth + 1).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder { SchemaProbe(node: SchemaNode(), depth: depth + 1) }
}

private struct SingleValueProbe: SingleValueDecodingContainer {
    let node: SchemaNode
    let depth: Int
    var codingPath: [any CodingKey] { [] }

    func decodeNil() -> Bool {
        node.nullable = true
        return false
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T { try probe(type, into: node, depth: depth) }
}
