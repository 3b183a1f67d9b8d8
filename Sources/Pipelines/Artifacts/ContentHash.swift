import Crypto

/// The content address of an artifact: SHA-256, through swift-crypto (BoringSSL, with the CPU's SHA instructions
/// where it has them: about ten times faster than portable code for the small values artifacts usually are).
public enum ContentHash {
    /// The SHA-256 of `bytes` as 64 lowercase hexadecimal characters.
    public static func sha256(_ bytes: [UInt8]) -> String {
        let digest = SHA256.hash(data: bytes)
        return String(unsafeUninitializedCapacity: 64) { text in
            var index = 0
            for byte in digest {
                text[index] = hexDigits[Int(byte >> 4)]
                text[index + 1] = hexDigits[Int(byte & 0x0f)]
                index += 2
            }
            return 64
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
