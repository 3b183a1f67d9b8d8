import Crypto
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
    /// A consumed value that is, bit for bit, a value the run produced (a step's output handed on to the next step:
    /// the same storage) takes that artifact's hash without being serialised again.
    ///
    /// - Important: The artifacts of one run must be resolved in the order of their events' `seq`, as the run
    ///   emitted them: a consumer finds its producer only when the producer was resolved first.
    public func resolve() -> ArtifactRef {
        let scratch = CanonicalScratch()
        let found = resolve(in: scratch)
        var ref = ArtifactRef(
            id: id, type: found.type, sha256: found.digest.map { ContentHash.hex($0) }, size: found.size,
            producedBy: found.producedBy, error: found.error)
        if found.inlined { ref.inlineJSON = scratch.withBytes { Array($0) } }
        return ref
    }

    /// What resolving found.
    struct Resolution {
        let type: String
        /// `nil` when the value cannot be encoded (see `error`).
        let digest: SHA256.Digest?
        let size: Int
        let producedBy: String?
        let error: String?
        /// Whether the value travels inline: then its canonical bytes are what the scratch holds.
        let inlined: Bool
    }

    /// ``resolve()`` with the canonical bytes left in `scratch` (when `inlined`), for a writer to copy: nothing is
    /// allocated per artifact but what the ledger keeps.
    func resolve(in scratch: CanonicalScratch) -> Resolution {
        let type = TypeNames.name(of: Swift.type(of: value))
        if role == .consumed, let producer = ledger.producer(sharingStorageWith: value) {
            return Resolution(
                type: type, digest: producer.digest, size: producer.size, producedBy: producer.id, error: nil,
                inlined: false)
        }
        let hashed: (digest: SHA256.Digest, size: Int)
        do {
            hashed = try CanonicalJSON.encode(value, in: scratch) { (ContentHash.digest($0), $0.count) }
        } catch {
            return Resolution(type: type, digest: nil, size: 0, producedBy: nil, error: "\(error)", inlined: false)
        }
        switch role {
        case .produced:
            ledger.register(value, digest: hashed.digest, size: hashed.size, as: id)
        case .consumed:
            // An equal value in storage of its own: found by its content.
            if let producer = ledger.producer(of: hashed.digest) {
                return Resolution(
                    type: type, digest: producer.digest, size: producer.size, producedBy: producer.id, error: nil,
                    inlined: false)
            }
        }
        return Resolution(
            type: type, digest: hashed.digest, size: hashed.size, producedBy: nil, error: nil,
            inlined: hashed.size <= ledger.inlineLimit)
    }
}

/// The artifacts one run produced so far: how a consumer finds its producer.
///
/// A consumer is matched first by storage (the very value a step produced, compared bit for bit: the ledger keeps
/// the produced values, so their storage cannot be freed and reused meanwhile), then by content hash. A value
/// produced twice in a run is attributed to the latest producer it matches.
final class ArtifactLedger: Sendable {
    struct Producer {
        let id: String
        let digest: SHA256.Digest
        let size: Int
    }

    private struct Entry {
        let value: any Encodable & Sendable
        let producer: Producer
    }

    private struct Produced {
        /// In the order produced; only the latest ``ArtifactLedger/storageMatchWindow`` are compared by storage.
        var entries: [Entry] = []
        /// The latest producer of each content.
        var byDigest: [SHA256.Digest: Producer] = [:]
    }

    /// How many of the latest produced values a consumer is compared with by storage: a value handed on is one of the
    /// last few produced, and a run of thousands of step runs must not compare each input with all of them (an input
    /// not matched so is still found by its content).
    static let storageMatchWindow = 64

    let inlineLimit: Int
    /// Resolution runs on one thread at a time per run (the tracker's); the lock only makes that safe to share.
    private let produced: Mutex<Produced>

    init(inlineLimit: Int) {
        self.inlineLimit = inlineLimit
        // Room for a typical run's outputs at once, rather than growing both by doubling from one.
        var produced = Produced()
        produced.entries.reserveCapacity(8)
        produced.byDigest.reserveCapacity(8)
        self.produced = Mutex(produced)
    }

    func register(_ value: any Encodable & Sendable, digest: SHA256.Digest, size: Int, as id: String) {
        let producer = Producer(id: id, digest: digest, size: size)
        produced.withLock { produced in
            produced.entries.append(Entry(value: value, producer: producer))
            produced.byDigest[digest] = producer
        }
    }

    /// The latest producer, among the last ``storageMatchWindow``, of a value with the same storage as `value`.
    func producer(sharingStorageWith value: any Encodable & Sendable) -> Producer? {
        produced.withLock { produced in
            produced.entries.suffix(Self.storageMatchWindow).last { sameBits($0.value, value) }?.producer
        }
    }

    /// The latest producer of a value whose canonical JSON has this SHA-256.
    func producer(of digest: SHA256.Digest) -> Producer? {
        produced.withLock { $0.byDigest[digest] }
    }
}

/// Whether two values are of the same type and have the same bits: then they are the same value, sharing any
/// storage they refer to. Values that merely compare equal may answer `false`.
private func sameBits(_ first: any Encodable & Sendable, _ second: any Encodable & Sendable) -> Bool {
    guard ObjectIdentifier(type(of: first)) == ObjectIdentifier(type(of: second)) else { return false }
    // Both values opened as they are (of one type, so of one size): no dynamic cast of one to the other's type.
    func withBits<Value>(of value: Value, _ body: (UnsafeRawBufferPointer) -> Bool) -> Bool {
        var value = value
        return withUnsafeBytes(of: &value, body)
    }
    return withBits(of: first) { left in withBits(of: second) { right in left.elementsEqual(right) } }
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
