import Foundation

/// A reference to an artifact as lineage records it: which value, of what type, with what content.
///
/// `sha256` is the digest of the value's canonical JSON (keys sorted, no whitespace), so equal values have equal
/// hashes wherever they were produced. Lineage edges follow hashes: a step consumed the artifact whose hash an earlier
/// step of the run produced.
public struct ArtifactRef: Sendable, Hashable, Codable {
    /// Unique within the run: `<step>#<invocation>/out` for an output, `input` for the run's input.
    public var id: String
    /// The Swift type's name, for readers.
    public var type: String
    public var sha256: String
    /// Size of the canonical JSON in bytes.
    public var size: Int
    /// The canonical JSON itself when it is at most the capture's inline limit; `nil` for larger values.
    public var value: JSONValue?
    /// For a step input: the id of the artifact of this run it came from (by hash), if any.
    public var producedBy: String?

    public init(
        id: String, type: String, sha256: String, size: Int, value: JSONValue? = nil, producedBy: String? = nil
    ) {
        self.id = id
        self.type = type
        self.sha256 = sha256
        self.size = size
        self.value = value
        self.producedBy = producedBy
    }

    enum CodingKeys: String, CodingKey {
        case id, type, sha256, size, value
        case producedBy = "produced_by"
    }
}

/// A value a run produced or consumed, before it is serialised: the runner hands these to the tracker, which
/// encodes them off the critical path (REALTIME) or before the response (BATCH).
public struct PendingArtifact: Sendable {
    public let id: String
    public let value: any Encodable & Sendable

    public init(id: String, value: any Encodable & Sendable) {
        self.id = id
        self.value = value
    }

    /// The artifact's canonical JSON.
    /// - Throws: `EncodingError` when the value cannot be encoded (a non-finite `Double`, for example).
    public func canonicalJSON() throws -> [UInt8] {
        try CanonicalJSON.encode(value)
    }

    /// The type's name as lineage records it.
    public var typeName: String { String(describing: Swift.type(of: value)) }

    /// Serialises and hashes the value.
    /// - Parameter inlineLimit: values whose canonical JSON is at most this many bytes travel inline.
    public func reference(inlineLimit: Int) throws -> (ref: ArtifactRef, json: [UInt8]) {
        let json = try canonicalJSON()
        let inline = json.count <= inlineLimit ? try JSONDecoder().decode(JSONValue.self, from: Data(json)) : nil
        let ref = ArtifactRef(id: id, type: typeName, sha256: SHA256.hex(json), size: json.count, value: inline)
        return (ref, json)
    }
}

/// Canonical JSON of a value: keys sorted, no insignificant whitespace, slashes unescaped.
public enum CanonicalJSON {
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }
}
