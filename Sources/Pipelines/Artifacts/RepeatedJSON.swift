import Synchronization

/// The last JSON value converted, kept so that the same value next time is not converted again: the runs of a
/// pipeline share one configuration, which the lineage writer, the lineage reader and the store's line writer would
/// otherwise sort or parse for every run. Comparing a value with the one kept is a pointer comparison when both are
/// the same dictionary, and a byte comparison when both come from the same bytes.
///
/// Safe from any thread, but meant for one: a cache shared by threads is a lock they wait for. Holds one value.
public final class RepeatedJSON: Sendable {
    private let last = Mutex<(value: JSONValue, bytes: [UInt8])?>(nil)

    public init() {}

    /// The canonical bytes of `value` (``CanonicalJSON/bytes(of:)``).
    public func bytes(of value: JSONValue) -> [UInt8] {
        if let last = last.withLock({ $0 }), last.value == value { return last.bytes }
        let bytes = CanonicalJSON.bytes(of: value)
        last.withLock { $0 = (value, bytes) }
        return bytes
    }

    /// The value written as `bytes` (checked JSON: the member of a located document), parsed by `parse` unless they
    /// are the bytes of the value kept.
    func value(writtenAs bytes: UnsafeBufferPointer<UInt8>, parse: () -> JSONValue) -> JSONValue {
        if let last = last.withLock({ $0 }), Self.same(last.bytes, bytes) { return last.value }
        let value = parse()
        last.withLock { $0 = (value, Array(bytes)) }
        return value
    }

    /// Whether `kept` holds `bytes`, compared 8 bytes at a time.
    private static func same(_ kept: [UInt8], _ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard kept.count == bytes.count else { return false }
        let other = UnsafeRawBufferPointer(bytes)
        return kept.withUnsafeBytes { kept in
            var offset = 0
            while offset + 8 <= kept.count {
                guard
                    kept.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                        == other.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                else { return false }
                offset += 8
            }
            while offset < kept.count {
                guard kept[offset] == other[offset] else { return false }
                offset += 1
            }
            return true
        }
    }
}
