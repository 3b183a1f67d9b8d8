import Pipelines

/// How names that come from events become parts of paths in the store. Nothing an event carries reaches the file
/// system without passing through here.
enum StoreNames {
    /// A path component for `name` (a pipeline's name): letters, digits, `-`, `_` and `.` stay as they are; any
    /// other byte becomes `%XX`; a name that is empty, `.` or `..`, or that starts with `.`, gets its dots encoded
    /// too. Names whose encoding exceeds `maximumLength` bytes are cut and end with `~` and 16 hex digits of the
    /// SHA-256 of the whole name, so that two long names never share a directory.
    static func component(_ name: String, maximumLength: Int = 120) -> String {
        var encoded: [UInt8] = []
        encoded.reserveCapacity(name.utf8.count)
        let encodeDots = name.isEmpty || name.utf8.first == UInt8(ascii: ".")
        for byte in name.utf8 {
            if isPlain(byte), !(encodeDots && byte == UInt8(ascii: ".")) {
                encoded.append(byte)
            } else {
                encoded.append(UInt8(ascii: "%"))
                encoded.append(hexDigits[Int(byte >> 4)])
                encoded.append(hexDigits[Int(byte & 0x0f)])
            }
        }
        if encoded.isEmpty { return "%" }
        if encoded.count > maximumLength {
            let digest = ContentHash.sha256(Array(name.utf8))
            encoded = Array(encoded.prefix(maximumLength - 17)) + Array("~".utf8) + Array(digest.utf8.prefix(16))
        }
        return String(decoding: encoded, as: UTF8.self)
    }

    /// Whether `text` is a SHA-256 as Sluice writes it: 64 lowercase hexadecimal digits.
    static func isSHA256(_ text: String) -> Bool {
        text.utf8.count == 64
            && text.utf8.allSatisfy {
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0)
            }
    }

    /// The directory, relative to the store's root, of the segments of `pipeline`'s runs started on `day`
    /// (`yyyy-mm-dd`): Hive-style partitions, `runs/pipeline=<name>/date=<day>`, which query engines prune by.
    static func segmentDirectory(pipeline: String, day: String) -> String {
        "runs/pipeline=\(component(pipeline))/date=\(day)"
    }

    /// Every directory of segments in the store at `root`, relative to it: `runs/*/*`, which holds this layout's
    /// and the one before it (`runs/<pipeline>/<yyyy-mm-dd>`, read as it is).
    static func segmentDirectories(root: String) throws -> [String] {
        var found: [String] = []
        for pipeline in try FileSystem.list("\(root)/runs") {
            for day in try FileSystem.list("\(root)/runs/\(pipeline)") { found.append("runs/\(pipeline)/\(day)") }
        }
        return found
    }

    /// Every segment in the store at `root`, relative to it, in a stable order.
    static func segments(root: String) throws -> [String] {
        var found: [String] = []
        for directory in try segmentDirectories(root: root) {
            for name in try FileSystem.list("\(root)/\(directory)") where name.hasSuffix(".jsonl") {
                found.append("\(directory)/\(name)")
            }
        }
        return found
    }

    /// The file name of lineage partition `partition`'s segment whose first line ends at `firstOffset`.
    static func segmentName(partition: Int32, firstOffset: Int64) -> String { "p\(partition)-\(firstOffset).jsonl" }

    /// The first offset in a segment's file name (``segmentName(partition:firstOffset:)``) when it is one of
    /// `partition`'s segments, else `nil`.
    static func firstOffset(ofSegment name: some StringProtocol, partition: Int32) -> Int64? {
        let prefix = "p\(partition)-"
        guard name.hasPrefix(prefix), name.hasSuffix(".jsonl") else { return nil }
        return Int64(name.dropFirst(prefix.count).dropLast(".jsonl".count))
    }

    private static func isPlain(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            true
        default: false
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)
}
