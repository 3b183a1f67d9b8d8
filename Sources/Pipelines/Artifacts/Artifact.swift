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
    /// The value's canonical JSON when it travels inline: at most the capture's inline limit, and not on an input
    /// that names its producer (whose artifact carries it); `nil` otherwise.
    public var inlineJSON: [UInt8]?
    /// For a step's input or the run's output: the id of the artifact of this run it is (by hash), if any.
    public var producedBy: String?
    /// Why the value could not be encoded (a non-finite number, for example); `nil` when it was.
    public var error: String?

    public init(
        id: String, type: String, sha256: String?, size: Int, inlineJSON: [UInt8]? = nil, producedBy: String? = nil,
        error: String? = nil
    ) {
        self.id = id
        self.type = type
        self.sha256 = sha256
        self.size = size
        self.inlineJSON = inlineJSON
        self.producedBy = producedBy
        self.error = error
    }

    /// The inline value, parsed.
    public var value: JSONValue? { inlineJSON.flatMap { try? JSONValue(parsing: $0) } }
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
        let json: [UInt8]
        do {
            json = try CanonicalJSON.encode(value)
        } catch {
            return ArtifactRef(id: id, type: typeName, sha256: nil, size: 0, error: "\(error)")
        }
        switch role {
        case .produced:
            let sha256 = ContentHash.sha256(json)
            ledger.register(json, sha256: sha256, as: id)
            return ArtifactRef(
                id: id, type: typeName, sha256: sha256, size: json.count,
                inlineJSON: json.count <= ledger.inlineLimit ? json : nil)
        case .consumed:
            // A value the run produced before is found by its bytes, and needs no hashing again.
            if let producer = ledger.producer(of: json) {
                return ArtifactRef(
                    id: id, type: typeName, sha256: producer.sha256, size: json.count, producedBy: producer.id)
            }
            return ArtifactRef(
                id: id, type: typeName, sha256: ContentHash.sha256(json), size: json.count,
                inlineJSON: json.count <= ledger.inlineLimit ? json : nil)
        }
    }
}

/// The artifacts one run produced so far, by their canonical bytes: how a consumer finds its producer.
///
/// A value produced twice in a run (two steps with equal outputs) is attributed to the latest producer.
final class ArtifactLedger: Sendable {
    let inlineLimit: Int
    private let producers = Mutex<[CanonicalBytes: (id: String, sha256: String)]>([:])

    init(inlineLimit: Int) {
        self.inlineLimit = inlineLimit
    }

    func register(_ json: [UInt8], sha256: String, as id: String) {
        producers.withLock { $0[CanonicalBytes(json)] = (id, sha256) }
    }

    func producer(of json: [UInt8]) -> (id: String, sha256: String)? {
        producers.withLock { $0[CanonicalBytes(json)] }
    }
}

/// Canonical JSON bytes as a dictionary key, hashed in one pass over the buffer.
private struct CanonicalBytes: Hashable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
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
