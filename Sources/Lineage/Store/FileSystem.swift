#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A file-system call that failed, naming the path and the system's reason.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }

    init(_ what: String, path: String, errno code: Int32 = errno) {
        message = "\(what) \(path): \(String(cString: strerror(code)))"
    }

    init(message: String) {
        self.message = message
    }
}

/// The few POSIX file operations the store needs, with errors that name the path. All of them block: call them
/// from a thread of your own, never from Swift's cooperative pool.
enum FileSystem {
    /// Creates `path` and its missing parents (mode 0755); each directory created is made durable in its parent.
    static func makeDirectories(_ path: String) throws {
        if directoryExists(path) { return }
        let parent = parentDirectory(of: path)
        if !parent.isEmpty, parent != path { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0, errno != EEXIST { throw StoreError("cannot create directory", path: path) }
        if !parent.isEmpty { try syncDirectory(parent) }
    }

    static func directoryExists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    static func fileExists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// The size of the file `path` in bytes.
    static func size(_ path: String) throws -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { throw StoreError("cannot read the size of", path: path) }
        return Int(info.st_size)
    }

    /// The names in directory `path` (without `.` and `..`); empty when it does not exist.
    static func list(_ path: String) throws -> [String] {
        guard let directory = opendir(path) else {
            if errno == ENOENT { return [] }
            throw StoreError("cannot list", path: path)
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// The bytes of `path` from byte `offset` on, at most `limit` of them.
    static func readFile(_ path: String, from offset: Int = 0, limit: Int = .max) throws -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StoreError("cannot open", path: path) }
        defer { close(descriptor) }
        if offset > 0, lseek(descriptor, off_t(offset), SEEK_SET) < 0 { throw StoreError("cannot seek in", path: path) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let wanted = min(chunk.count, limit - bytes.count)
            if wanted == 0 { return bytes }
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, wanted) }
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError("cannot read", path: path)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// Writes `bytes` to a new file `path` (replacing nothing: it must not exist), durably.
    static func writeNewFile(_ path: String, _ bytes: [UInt8]) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw StoreError("cannot create", path: path) }
        defer { close(descriptor) }
        try writeAll(descriptor, bytes[...], path: path)
        guard fsync(descriptor) == 0 else { throw StoreError("cannot sync", path: path) }
    }

    static func writeAll(_ descriptor: Int32, _ bytes: ArraySlice<UInt8>, path: String) throws {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                write(descriptor, buffer.baseAddress! + written, buffer.count - written)
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError("cannot write", path: path)
            }
            written += count
        }
    }

    /// Removes the file `path` if it exists.
    static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw StoreError("cannot remove", path: path) }
    }

    static func rename(_ from: String, to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw StoreError("cannot rename to \(to):", path: from) }
    }

    static func syncDirectory(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StoreError("cannot open directory", path: path) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw StoreError("cannot sync directory", path: path) }
    }

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

/// A file opened for appending, with its size.
final class AppendFile {
    let path: String
    private let descriptor: Int32
    private(set) var size: Int
    private var pending: [UInt8] = []
    private var unsynced = false

    /// Opens (or creates) `path` for appending.
    init(path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw StoreError("cannot open", path: path) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            close(descriptor)
            throw StoreError("cannot stat", path: path)
        }
        size = Int(info.st_size)
    }

    deinit { close(descriptor) }

    /// Queues `line` and a newline; they reach the file at the next ``flush()``, or once ``flushBytes`` are queued.
    func append(line: [UInt8]) throws {
        pending.append(contentsOf: line)
        pending.append(UInt8(ascii: "\n"))
        size += line.count + 1
        if pending.count >= Self.flushBytes { try flush() }
    }

    /// Bytes queued at most before they are written. A materializer keeps a segment open per partition (and day and
    /// pipeline), each with its queue allocated: at a megabyte each, a 1M backlog over 128 partitions faulted in about
    /// a third more pages (docs/benchmarks.md).
    static let flushBytes = 64 << 10

    /// Writes what is queued.
    func flush() throws {
        guard !pending.isEmpty else { return }
        try FileSystem.writeAll(descriptor, pending[...], path: path)
        pending.removeAll(keepingCapacity: true)
        unsynced = true
    }

    /// Writes what is queued and makes the file durable.
    func sync() throws {
        try flush()
        guard unsynced else { return }
        guard fsync(descriptor) == 0 else { throw StoreError("cannot sync", path: path) }
        unsynced = false
    }
}

/// Cuts a torn last line (a write a crash interrupted): everything after the file's last newline is removed.
/// - Returns: the file's size afterwards.
@discardableResult
func repairTornTail(_ path: String) throws -> Int {
    let bytes = try FileSystem.readFile(path)
    guard let last = bytes.last, last != UInt8(ascii: "\n") else { return bytes.count }
    let keep = (bytes.lastIndex(of: UInt8(ascii: "\n")) ?? -1) + 1
    guard truncate(path, off_t(keep)) == 0 else { throw StoreError("cannot truncate", path: path) }
    return keep
}
