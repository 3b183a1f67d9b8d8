import Crypto

/// The content address of an artifact: SHA-256, through swift-crypto (BoringSSL, with the CPU's SHA instructions
/// where it has them: about ten times faster than portable code for the small values artifacts usually are).
public enum ContentHash {
    /// The SHA-256 of `bytes` as 64 lowercase hexadecimal characters, or the first `digits` of them.
    public static func sha256(_ bytes: [UInt8], digits: Int = 64) -> String {
        hex(SHA256.hash(data: bytes), digits: digits)
    }

    /// The SHA-256 of `bytes`.
    static func digest(_ bytes: UnsafeBufferPointer<UInt8>) -> SHA256.Digest {
        SHA256.hash(data: UnsafeRawBufferPointer(bytes))
    }

    /// `digest` as 64 lowercase hexadecimal characters, or the first `digits` of them.
    static func hex(_ digest: SHA256.Digest, digits: Int = 64) -> String {
        precondition((0...64).contains(digits), "a SHA-256 has 64 hexadecimal digits")
        return String(unsafeUninitializedCapacity: digits) { text in
            var index = 0
            for byte in digest where index < digits {
                text[index] = hexDigits[Int(byte >> 4)]
                if index + 1 < digits { text[index + 1] = hexDigits[Int(byte & 0x0f)] }
                index += 2
            }
            return digits
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
