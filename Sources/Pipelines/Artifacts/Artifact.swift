import Synchronization

/// A reference to an artifact as lineage records it: which value, of what type, with what content.
///
/// `sha256` is the digest of the value's canonical JSON (``CanonicalJSON``), so equal values have equal hashes
/// wherever they were produced. Lineage edges follow hashes: a step consumed the artifact of its run whose hash it
/// was given, and `producedBy` names that artifact.
public struct ArtifactRef: Sendable, Hashable {
    /// Unique within the run: `input` for the run's input, `<step run>/out` for a step's output, `<step run>/in<k>`
    /// for a step's k-th input.
    public var id: String
    /// The Swift type's name, for readers.
    public var type: String
    /// The SHA-256 of the canonical JSON, or `nil` when the value cannot be encoded (see `error`).
    public var sha256: String?
    /// Size of the canonical JSON in bytes.
    public var size: Int
    /// The value itself when its canonical JSON is at most the capture's inline limit and no earlier artifact of the
    /// run carries it already; `nil` otherwise.
    public var value: JSONValue?
    /// For a step's input or the run's output: the id of the artifact of this run it is (by hash), if any.
    public var producedBy: String?
    /// Why the value could not be encoded (a non-finite number, for example); `nil` when it was.
    public var error: String?

    public init(
        id: String, type: String, sha256: String?, size: Int, value: JSONValue? = nil, producedBy: String? = nil,
        error: String? = nil
    ) {
        self.id = id
        self.type = type
        self.sha256 = sha256
        self.size = size
        self.value = value
        self.producedBy = producedBy
        self.error = error
    }
}

/// Canonical JSON of a value: object keys sorted by their UTF-8 bytes, no insignificant whitespace, integers as
/// integers, other numbers in Swift's shortest round-trip form. Written by Sluice itself, so it is stable.
public enum CanonicalJSON {
    /// - Throws: `EncodingError` when the value cannot be encoded (a non-finite `Double`, for example).
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        bytes(of: try JSONValueEncoder.encode(value))
    }

    /// The canonical bytes of a JSON tree.
    public static func bytes(of tree: JSONValue) -> [UInt8] {
        var writer = JSONWriter()
        writer.value(tree)
        return writer.bytes
    }
}

// MARK: - Pending artifacts

/// A value a run produced or consumed, before it is serialised: the runner hands these to the tracker inside
/// ``PendingEvent``s, and the tracker resolves them (serialises, hashes, finds lineage edges) off the critical path
/// in REALTIME or before the response in BATCH.
public struct PendingArtifact: Sendable {
    /// Whether a step produced the value (an output, or the run's input) or consumed it (a step's input, the run's
    /// output).
    public enum Role: Sendable {
        case produced
        case consumed
    }

    public let id: String
    public let role: Role
    public let value: any Encodable & Sendable
    let ledger: ArtifactLedger

    /// Serialises and hashes the value and finds its producer in the run.
    ///
    /// - Important: The artifacts of one run must be resolved in the order of their events' `seq`, as the run
    ///   emitted them: a consumer finds its producer only when the producer was resolved first.
    public func resolve() -> ArtifactRef {
        let typeName = TypeNames.name(of: Swift.type(of: value))
        let tree: JSONValue
        do {
            tree = try JSONValueEncoder.encode(value)
        } catch {
            return ArtifactRef(id: id, type: typeName, sha256: nil, size: 0, error: "\(error)")
        }
        let json = CanonicalJSON.bytes(of: tree)
        let sha256 = SHA256.hex(json)
        var ref = ArtifactRef(id: id, type: typeName, sha256: sha256, size: json.count)
        switch role {
        case .produced:
            ledger.register(sha256, as: id)
            if json.count <= ledger.inlineLimit { ref.value = tree }
        case .consumed:
            ref.producedBy = ledger.producer(of: sha256)
            if ref.producedBy == nil && json.count <= ledger.inlineLimit { ref.value = tree }
        }
        return ref
    }
}

/// The artifacts one run produced so far, by hash: how a consumer finds its producer.
///
/// A value produced twice in a run (two steps with equal outputs) is attributed to the latest producer.
final class ArtifactLedger: Sendable {
    let inlineLimit: Int
    private let producers = Mutex<[String: String]>([:])

    init(inlineLimit: Int) {
        self.inlineLimit = inlineLimit
    }

    func register(_ sha256: String, as id: String) {
        producers.withLock { $0[sha256] = id }
    }

    func producer(of sha256: String) -> String? {
        producers.withLock { $0[sha256] }
    }
}

/// Type names as lineage records them, computed once per type: `String(describing:)` costs about a microsecond.
enum TypeNames {
    private static let names = Mutex<[ObjectIdentifier: String]>([:])

    static func name(of type: any Any.Type) -> String {
        let key = ObjectIdentifier(type)
        if let name = names.withLock({ $0[key] }) { return name }
        let name = String(describing: type)
        names.withLock { names in
            if names.count >= 4096 { names.removeAll() }
            names[key] = name
        }
        return name
    }
}
