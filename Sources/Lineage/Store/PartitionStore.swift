import Pipelines

#if canImport(Glibc)
    import Glibc
#endif

/// Where artifact values live in a store: `artifacts/<first two hex digits>/<sha256>`.
enum ArtifactFiles {
    static func relativePath(of sha256: String) -> String {
        "artifacts/\(sha256.prefix(2))/\(sha256)"
    }
}

/// How segments roll: a segment takes lines until it holds `maxLines` lines or `maxBytes` bytes (a line is never
/// split, and lines closed at one offset stay in one segment).
public struct SegmentLimits: Sendable, Hashable {
    public var maxBytes: Int
    public var maxLines: Int

    public init(maxBytes: Int = 64 << 20, maxLines: Int = 100_000) {
        self.maxBytes = maxBytes
        self.maxLines = maxLines
    }
}

/// The files of one lineage partition in a store: its segments under `runs/`, and the artifacts its lines name.
///
/// One writer per partition (a partition has one owner in the materializers' group). Opening it repairs torn last
/// lines and finds the last line written (``lastWritten``); ``append(_:)`` skips a run at or below it, so a
/// restart that re-reads the log writes each run once.
final class PartitionStore {
    let root: String
    let partition: Int32
    let limits: SegmentLimits
    /// The position of the last line written to this partition's segments, `nil` for none.
    private(set) var lastWritten: StorePosition?
    /// The current segment of each directory (`runs/pipeline=<name>/date=<day>`) that is not open, with its line count once
    /// known.
    private var closedSegments: [String: (path: String, lines: Int?)] = [:]
    private var open: [String: Segment] = [:]
    /// Segments kept open at most: older days' segments are closed when more are open.
    private static let maxOpenSegments = 32
    private var dirtyDirectories: Set<String> = []
    /// The lines written since the last sync, in order.
    private var appended: [WrittenLine] = []
    /// The canonical JSON of the configuration written last: the runs of a pipeline share one.
    private let configurations = RepeatedJSON()
    /// The directory of the line written last, with its pipeline and day (since 1970): the runs of a pipeline on one
    /// day share it, and naming it took 2 % of a run's work.
    private var lastDirectory: (pipeline: String, day: Int64, path: String)?

    private final class Segment {
        let file: AppendFile
        /// The file's path relative to the store's root.
        let relativePath: String
        var lines: Int
        var lastUsed = 0
        init(file: AppendFile, root: String, lines: Int) {
            self.file = file
            relativePath = String(file.path.dropFirst(root.count + 1))
            self.lines = lines
        }
    }

    /// Opens the partition's part of the store at `root`, repairing torn last lines.
    /// - Throws: ``StoreError`` when the store cannot be read or repaired.
    init(root: String, partition: Int32, limits: SegmentLimits) throws {
        self.root = root
        self.partition = partition
        self.limits = limits
        for relative in try StoreNames.segmentDirectories(root: root) {
            let directory = "\(root)/\(relative)"
            var latest: (path: String, firstOffset: Int64)?
            for name in try FileSystem.list(directory) {
                guard let first = StoreNames.firstOffset(ofSegment: name, partition: partition) else { continue }
                if latest.map({ first > $0.firstOffset }) ?? true { latest = ("\(directory)/\(name)", first) }
            }
            guard let latest else { continue }
            closedSegments[directory] = (latest.path, nil)
            // Only the segment being appended can have a torn tail; earlier ones were closed whole.
            try repairTornTail(latest.path)
            if let position = try lastPosition(in: latest.path), lastWritten.map({ position > $0 }) ?? true {
                lastWritten = position
            }
        }
    }

    /// The position the last line of `path` records, `nil` for an empty file.
    private func lastPosition(in path: String) throws -> StorePosition? {
        let bytes = try FileSystem.readFile(path)
        guard bytes.count > 1 else { return nil }
        let start = (bytes[..<(bytes.count - 1)].lastIndex(of: UInt8(ascii: "\n")) ?? -1) + 1
        let line = try JSONValue(parsing: bytes[start..<(bytes.count - 1)])
        guard case .object(let run) = line, case .object(let lineage)? = run["lineage"],
            case .int(let offset)? = lineage["terminal_offset"], case .int(let rank)? = lineage["terminal_rank"]
        else {
            throw StoreError(message: "the last line of \(path) has no lineage.terminal_offset and terminal_rank")
        }
        return StorePosition(offset: offset, rank: Int(rank))
    }

    /// Appends `run`'s line (and writes the artifact values too large for it) unless a line at or past its position
    /// was written already. Durable only after ``sync()``.
    /// - Returns: whether the line was written.
    @discardableResult
    func append(_ run: ClosedRun, storeInlineLimit: Int) throws -> Bool {
        let position = run.position
        if let lastWritten, position <= lastWritten { return false }
        let (stored, artifacts) = run.fold.takeStored(
            partition: partition, rank: run.rank, storeInlineLimit: storeInlineLimit)
        let line = stored.line(configurations: configurations)
        for artifact in artifacts { try writeArtifact(artifact.sha256, artifact.value) }
        let directory = directory(pipeline: stored.pipeline, micros: stored.startedMicros ?? 0)
        let segment = try segment(in: directory, for: position, adding: line.count + 1)
        let offset = segment.file.size
        try segment.file.append(line: line)
        appended.append(
            WrittenLine(
                segment: segment.relativePath, partition: partition, offset: offset, length: line.count,
                entry: IndexEntry(stored)))
        segment.lines += 1
        segment.lastUsed = syncs
        lastWritten = position
        return true
    }

    /// The directory of the segments of `pipeline`'s runs started at `micros`.
    private func directory(pipeline: String, micros: Int64) -> String {
        let day = Timestamps.daysSinceEpoch(ofMicros: micros)
        if let last = lastDirectory, last.day == day, last.pipeline == pipeline { return last.path }
        let path =
            "\(root)/\(StoreNames.segmentDirectory(pipeline: pipeline, day: Timestamps.day(ofMicros: micros)))"
        lastDirectory = (pipeline, day, path)
        return path
    }

    /// The segment of `directory` to append a line of `bytes` bytes at `position` to: the current one, or a new one
    /// named after `position` when the current one is full.
    private func segment(in directory: String, for position: StorePosition, adding bytes: Int) throws -> Segment {
        if let segment = open[directory] {
            let full = segment.lines >= limits.maxLines || segment.file.size + bytes > limits.maxBytes
            // Lines closed at one offset share a segment, so that a segment's name (its first offset) is unique.
            if !full || position.rank > 0 || segment.lines == 0 { return segment }
            try segment.file.sync()
        } else if let existing = closedSegments.removeValue(forKey: directory) {
            let lines =
                try existing.lines
                ?? FileSystem.readFile(existing.path).reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
            open[directory] = Segment(file: try AppendFile(path: existing.path), root: root, lines: lines)
            return try self.segment(in: directory, for: position, adding: bytes)
        }
        try FileSystem.makeDirectories(directory)
        let segment = Segment(
            file: try AppendFile(
                path: "\(directory)/\(StoreNames.segmentName(partition: partition, firstOffset: position.offset))"),
            root: root, lines: 0)
        open[directory] = segment
        dirtyDirectories.insert(directory)
        return segment
    }

    /// Writes an artifact's value once: to a temporary file, made durable, then renamed into place.
    private func writeArtifact(_ sha256: String, _ value: [UInt8]) throws {
        let relative = ArtifactFiles.relativePath(of: sha256)
        let path = "\(root)/\(relative)"
        if FileSystem.fileExists(path) { return }
        let directory = FileSystem.parentDirectory(of: path)
        try FileSystem.makeDirectories(directory)
        try FileSystem.makeDirectories("\(root)/tmp")
        let temporary = "\(root)/tmp/\(sha256).\(getpid()).p\(partition)"
        try FileSystem.writeNewFile(temporary, value)
        try FileSystem.rename(temporary, to: path)
        dirtyDirectories.insert(directory)
    }

    /// Makes every line and artifact written so far durable.
    /// - Returns: the lines written since the previous sync, in order.
    @discardableResult
    func sync() throws -> [WrittenLine] {
        for segment in open.values { try segment.file.sync() }
        for directory in dirtyDirectories.sorted() { try FileSystem.syncDirectory(directory) }
        dirtyDirectories.removeAll()
        defer { appended.removeAll() }
        syncs += 1
        if open.count > Self.maxOpenSegments {
            for (directory, segment) in open where segment.lastUsed < syncs - 1 {
                open[directory] = nil
                closedSegments[directory] = (segment.file.path, segment.lines)
            }
        }
        return appended
    }
    private var syncs = 0
}
