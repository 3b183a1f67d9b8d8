import Pipelines

/// A run as the index knows it: enough to list it, and where its line is.
public struct IndexedRun: Sendable, Hashable {
    public var runID: String
    public var attempt: Int
    public var pipeline: String
    public var status: RunStatus
    public var capture: String
    public var requestID: String?
    public var startedMicros: Int64?
    public var durationMicros: Int64?
    public var steps: Int
    /// The segment holding the run's line, relative to the store's root, and the line's place in it.
    public var segment: String
    public var lineOffset: Int64
    public var lineLength: Int
}

/// One use of an artifact: which run produced or consumed it, as which artifact id, in which step run.
public struct ArtifactUse: Sendable, Hashable {
    public enum Role: String, Sendable {
        /// A step's output, or the run's input.
        case produced
        /// A step's input, or the run's output.
        case consumed
    }

    public var runID: String
    public var attempt: Int
    public var pipeline: String
    public var artifactID: String
    /// `nil` for the run's own input and output.
    public var stepRun: String?
    public var role: Role
    public var type: String
    public var size: Int
}

/// The store's derived index, `<root>/index.sqlite`: run id → segment and byte offset, artifact hash → the runs and
/// steps that produced and consumed it. Rebuildable from the segments at any time (``rebuild(root:)``); it records
/// how far it has read each segment, so ``catchUp(segments:)`` indexes only what was appended since.
public final class StoreIndex {
    public let root: String
    private let database: SQLiteDatabase

    public static func path(root: String) -> String { "\(root)/index.sqlite" }

    /// The layout of the tables; an index with another one is emptied when opened, to be rebuilt.
    private static let schemaVersion = 4

    /// Opens (or creates) the index of the store at `root`, creating the root if it is missing. An index written
    /// with another layout is emptied, to be rebuilt by the next ``catchUp(segments:)``.
    /// - Throws: ``IndexError``, or ``StoreError`` when the root cannot be created.
    public init(root: String) throws {
        self.root = root
        try FileSystem.makeDirectories(root)
        database = try SQLiteDatabase(path: Self.path(root: root))
        if try database.integer("PRAGMA user_version") != Int64(Self.schemaVersion) {
            try database.execute(
                "DROP TABLE IF EXISTS artifacts; DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS segments")
        }
        // Integer keys keep the B-trees small: segment ids, run row ids, and an artifact's hash key (its SHA-256's first
        // 64 bits). A run's row id is the next one the index gives out, so a run is appended to its table, not sought
        // for (the indexed bytes of each segment, read and marked in the same transaction, keep a line from being
        // indexed twice). An artifact row says only that a run's line names the hash, as a producer or as a consumer
        // whose value no step of the run produced; who used it, how, is read from the line when asked for (one
        // B-tree, two integers per row: indexing the uses themselves, by their 64-digit text, took a fifth of a
        // materializer's CPU).
        try database.execute(
            """
            CREATE TABLE IF NOT EXISTS segments(
                id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, indexed_bytes INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS runs(
                id INTEGER PRIMARY KEY, segment INTEGER NOT NULL, line_offset INTEGER NOT NULL,
                line_length INTEGER NOT NULL, run_id TEXT NOT NULL, attempt INTEGER NOT NULL, pipeline TEXT NOT NULL,
                status TEXT NOT NULL, capture TEXT NOT NULL, request_id TEXT, started_us INTEGER, duration_us INTEGER,
                steps INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS runs_by_id ON runs(run_id);
            CREATE INDEX IF NOT EXISTS runs_by_start ON runs(started_us);
            CREATE TABLE IF NOT EXISTS artifacts(
                hash_key INTEGER NOT NULL, run INTEGER NOT NULL, PRIMARY KEY(hash_key, run)) WITHOUT ROWID;
            PRAGMA user_version = \(Self.schemaVersion);
            """)
    }

    /// Removes the index and builds it again from every segment.
    /// - Returns: the new index and the number of runs it holds.
    public static func rebuild(root: String) throws -> (index: StoreIndex, runs: Int) {
        for suffix in ["", "-wal", "-shm"] { try FileSystem.remove(path(root: root) + suffix) }
        let index = try StoreIndex(root: root)
        return (index, try index.catchUp())
    }

    // MARK: - Indexing

    /// Every segment in the store, relative to the root, in a stable order.
    public func segments() throws -> [String] {
        try StoreNames.segments(root: root)
    }

    /// Indexes the whole lines that `segments` (relative paths; every segment when `nil`) hold beyond what the index
    /// has read of them.
    /// - Returns: how many runs were indexed.
    /// - Parameter progress: called after each segment with the segments done, their count and the runs indexed.
    @discardableResult
    public func catchUp(
        segments: [String]? = nil, progress: (_ done: Int, _ of: Int, _ runs: Int) -> Void = { _, _, _ in }
    ) throws -> Int {
        let segments = try segments ?? self.segments()
        var indexed = 0
        // One transaction for all the segments: a batch that touched many partitions is one commit.
        try database.transaction {
            let statements = try Statements(database)
            for (done, segment) in segments.enumerated() {
                indexed += try catchUp(segment, statements)
                progress(done + 1, segments.count, indexed)
            }
        }
        return indexed
    }

    /// Indexes `lines`, just written, from what they hold in memory: a materializer's batch, without reading its
    /// lines back. A segment whose earlier lines the index misses (an indexing that failed) is caught up from its file
    /// instead, these lines included.
    /// - Returns: how many runs were indexed.
    @discardableResult
    public func add(_ lines: [WrittenLine]) throws -> Int {
        guard !lines.isEmpty else { return 0 }
        var indexed = 0
        try database.transaction {
            let statements = try Statements(database)
            // Runs of consecutive lines of one segment (a segment's lines stay in order, so a segment that comes back
            // later goes on from where the run before it ended). No dictionary: hashing each line's path cost more
            // than SQLite's insert.
            var start = lines.startIndex
            while start < lines.endIndex {
                let segment = lines[start].segment
                var end = start + 1
                while end < lines.endIndex, lines[end].segment == segment { end += 1 }
                indexed += try add(lines[start..<end], statements)
                start = end
            }
        }
        return indexed
    }

    /// Indexes `written`, consecutive lines of one segment, from memory; or the segment from its file when the index
    /// misses lines before them.
    private func add(_ written: ArraySlice<WrittenLine>, _ statements: Statements) throws -> Int {
        guard let first = written.first else { return 0 }
        let (id, start) = try statements.segment(first.segment)
        guard first.offset == start else { return try catchUp(first.segment, statements) }
        let segmentID = try id ?? statements.addSegment(first.segment)
        for line in written {
            try statements.add(line.entry, segment: segmentID, offset: line.offset, length: line.length)
        }
        let end = written.last.map { $0.offset + $0.length + 1 } ?? start
        try statements.flush()
        try statements.mark.run([.integer(Int64(end)), .integer(segmentID)])
        return written.count
    }

    /// Indexes the whole lines of `segment` beyond what the index has read of it, reading them from its file.
    private func catchUp(_ segment: String, _ statements: Statements) throws -> Int {
        let (id, start) = try statements.segment(segment)
        let bytes = try FileSystem.readFile("\(root)/\(segment)", from: start)
        guard !bytes.isEmpty else { return 0 }
        let segmentID = try id ?? statements.addSegment(segment)
        var indexed = 0
        var lineStart = 0
        while let newline = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) {
            defer { lineStart = newline + 1 }
            let line = bytes[lineStart..<newline]
            guard let entry = try? IndexEntry(line: Array(line)) else { continue }
            try statements.add(entry, segment: segmentID, offset: start + lineStart, length: line.count)
            indexed += 1
        }
        try statements.flush()
        try statements.mark.run([.integer(Int64(start + lineStart)), .integer(segmentID)])
        return indexed
    }

    /// The statements that index lines, prepared once per transaction. Rows are inserted several to a statement
    /// (``flush()`` inserts the rest): SQLite's cost per statement run was that of several row inserts.
    private final class Statements {
        let database: SQLiteDatabase
        let read: SQLiteDatabase.Statement
        let insertSegment: SQLiteDatabase.Statement
        let runs: BatchedInsert
        let artifacts: BatchedInsert
        let mark: SQLiteDatabase.Statement
        /// The row id of the next run indexed.
        private var nextRun: Int64

        /// - Precondition: in a transaction that writes (the next run's row id stays the next one).
        init(_ database: SQLiteDatabase) throws {
            self.database = database
            read = try database.prepare("SELECT id, indexed_bytes FROM segments WHERE path = ?")
            insertSegment = try database.prepare("INSERT INTO segments(path, indexed_bytes) VALUES (?, 0)")
            // OR IGNORE: a statement of several rows that may abort makes SQLite journal every page it touches (2 GB
            // of temporary-file writes for a 1M-event backlog, docs/benchmarks.md); IGNORE never aborts, so SQLite
            // keeps no statement journal. No row is ignored: run row ids are new, and a run's hash keys distinct.
            runs = try BatchedInsert(database, "INSERT OR IGNORE INTO runs VALUES", columns: 13, rows: 8)
            artifacts = try BatchedInsert(database, "INSERT OR IGNORE INTO artifacts VALUES", columns: 2, rows: 32)
            nextRun = try database.integer("SELECT coalesce(max(id), 0) + 1 FROM runs") ?? 1
            mark = try database.prepare("UPDATE segments SET indexed_bytes = ? WHERE id = ?")
        }

        /// The segment's id, if the index has it, and how many of its bytes it has read.
        func segment(_ path: String) throws -> (id: Int64?, indexedBytes: Int) {
            try read.bind([.text(path)])
            guard try read.step() else { return (nil, 0) }
            return (read.integer(0), Int(read.integer(1) ?? 0))
        }

        func addSegment(_ path: String) throws -> Int64 {
            try insertSegment.run([.text(path)])
            return database.lastInsertedRow
        }

        func add(_ entry: IndexEntry, segment: Int64, offset: Int, length: Int) throws {
            let run = nextRun
            nextRun += 1
            // Value by value, not a row array each: an array per row cost more than binding it.
            runs.append(.integer(run))
            runs.append(.integer(segment))
            runs.append(.integer(Int64(offset)))
            runs.append(.integer(Int64(length)))
            runs.append(.text(entry.run.runID))
            runs.append(.integer(Int64(entry.run.attempt)))
            runs.append(.text(entry.run.pipeline))
            runs.append(.text(entry.run.status.rawValue))
            runs.append(.text(entry.run.capture))
            runs.append(.optional(entry.run.requestID))
            runs.append(.optional(entry.run.startedMicros))
            runs.append(.optional(entry.run.durationMicros))
            runs.append(.integer(Int64(entry.run.steps)))
            try runs.endRow()
            for key in entry.artifactKeys {
                artifacts.append(.integer(key))
                artifacts.append(.integer(run))
                try artifacts.endRow()
            }
        }

        /// Inserts the rows still held.
        func flush() throws {
            try runs.flush()
            try artifacts.flush()
        }
    }

    /// An insert of rows of `columns` values, `rows` to a statement once that many are held, one by one for the rest.
    private final class BatchedInsert {
        private let columns: Int
        private let rows: Int
        private let many: SQLiteDatabase.Statement
        private let one: SQLiteDatabase.Statement
        private var held: [SQLiteValue] = []

        /// - Parameter insert: the statement up to its values (`INSERT ... VALUES`).
        init(_ database: SQLiteDatabase, _ insert: String, columns: Int, rows: Int) throws {
            self.columns = columns
            self.rows = rows
            let row = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
            many = try database.prepare(insert + " " + Array(repeating: row, count: rows).joined(separator: ", "))
            one = try database.prepare(insert + " " + row)
            held.reserveCapacity(columns * rows)
        }

        /// The next value of the row being added.
        func append(_ value: SQLiteValue) {
            held.append(value)
        }

        /// Ends the row being added: its `columns` values are appended.
        func endRow() throws {
            if held.count == columns * rows {
                try many.run(held)
                held.removeAll(keepingCapacity: true)
            }
        }

        func flush() throws {
            for start in stride(from: 0, to: held.count, by: columns) {
                try one.run(held[start..<start + columns])
            }
            held.removeAll(keepingCapacity: true)
        }
    }

    // MARK: - Reading

    private static let runColumns =
        "run_id, attempt, pipeline, status, capture, request_id, started_us, duration_us, steps, segments.path, line_offset, line_length"

    /// Runs, newest first: of `pipeline`, with `status` and started at or after `sinceMicros` when given, at most
    /// `limit`.
    public func runs(
        pipeline: String? = nil, status: RunStatus? = nil, sinceMicros: Int64? = nil, limit: Int = 50
    ) throws -> [IndexedRun] {
        let query = try database.prepare(
            """
            SELECT \(Self.runColumns) FROM runs JOIN segments ON segments.id = runs.segment
            WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR status = ?2) AND (?4 IS NULL OR started_us >= ?4)
            ORDER BY started_us DESC, segment DESC, line_offset DESC LIMIT ?3
            """)
        try query.bind([
            .optional(pipeline), .optional(status?.rawValue), .integer(Int64(limit)), .optional(sinceMicros),
        ])
        return try Self.rows(query)
    }

    /// Every line of `runID` (one per delivery), in the order they were written.
    public func lines(ofRun runID: String) throws -> [IndexedRun] {
        let query = try database.prepare(
            """
            SELECT \(Self.runColumns) FROM runs JOIN segments ON segments.id = runs.segment
            WHERE run_id = ? ORDER BY started_us, segment, line_offset
            """)
        try query.bind([.text(runID)])
        return try Self.rows(query)
    }

    /// The run's line, parsed.
    public func line(of run: IndexedRun) throws -> StoredRun {
        try StoredRun(line: lineBytes(segment: run.segment, offset: Int(run.lineOffset), length: run.lineLength))
    }

    /// One line of a segment, read alone.
    private func lineBytes(segment: String, offset: Int, length: Int) throws -> [UInt8] {
        let bytes = try FileSystem.readFile("\(root)/\(segment)", from: offset, limit: length)
        guard bytes.count == length else {
            throw IndexError(message: "\(segment) is shorter than the index says: run `sluice runs reindex`")
        }
        return bytes
    }

    /// Who produced and who consumed the artifact with this SHA-256, oldest run first: read from the lines of the runs
    /// the index names for its hash key. In a run, producers come first, then consumers, each by artifact id.
    public func uses(ofArtifact sha256: String) throws -> [ArtifactUse] {
        guard let key = IndexEntry.hashKey(sha256) else { return [] }
        let query = try database.prepare(
            """
            SELECT \(Self.runColumns) FROM artifacts JOIN runs ON runs.id = artifacts.run
            JOIN segments ON segments.id = runs.segment
            WHERE hash_key = ? ORDER BY started_us, segment, line_offset
            """)
        try query.bind([.integer(key)])
        var uses: [ArtifactUse] = []
        for run in try Self.rows(query) {
            let stored = try StoredRun(
                line: lineBytes(segment: run.segment, offset: Int(run.lineOffset), length: run.lineLength),
                reading: .structure)
            uses += RunUses(stored).of(sha256).map { use in
                ArtifactUse(
                    runID: run.runID, attempt: run.attempt, pipeline: run.pipeline, artifactID: use.artifactID,
                    stepRun: use.stepRun, role: use.role, type: use.type, size: use.size)
            }
        }
        return uses
    }

    private static func rows(_ query: SQLiteDatabase.Statement) throws -> [IndexedRun] {
        var runs: [IndexedRun] = []
        while try query.step() {
            runs.append(
                IndexedRun(
                    runID: query.text(0) ?? "", attempt: Int(query.integer(1) ?? 0), pipeline: query.text(2) ?? "",
                    status: query.text(3).flatMap(RunStatus.init(rawValue:)) ?? .incomplete,
                    capture: query.text(4) ?? "", requestID: query.text(5),
                    startedMicros: query.integer(6), durationMicros: query.integer(7),
                    steps: Int(query.integer(8) ?? 0), segment: query.text(9) ?? "",
                    lineOffset: query.integer(10) ?? 0, lineLength: Int(query.integer(11) ?? 0)))
        }
        return runs
    }
}

/// A line a materializer has just written, with what the index keeps of it: what ``StoreIndex/add(_:)`` takes.
public struct WrittenLine: Sendable {
    /// The segment, relative to the store's root.
    let segment: String
    /// The lineage partition whose runs the segment holds.
    let partition: Int32
    /// Where the line starts in the segment, and its length without the newline.
    let offset: Int
    let length: Int
    let entry: IndexEntry
}

/// What the index takes from one run's line: the run's columns, and the hash keys of the artifacts it produced or
/// took from outside.
struct IndexEntry: Sendable {
    var run: IndexedRun
    /// ``hashKey(_:)`` of each artifact the run produced, or consumed without a step of its own producing it; each
    /// once.
    var artifactKeys: [Int64] = []

    init(line: [UInt8]) throws {
        self.init(try StoredRun(line: line, reading: .structure))
    }

    init(_ stored: StoredRun) {
        run = IndexedRun(
            runID: stored.runID, attempt: stored.attempt, pipeline: stored.pipeline, status: stored.status,
            capture: stored.capture, requestID: stored.requestID, startedMicros: stored.startedMicros,
            durationMicros: stored.durationMicros, steps: stored.steps.count, segment: "", lineOffset: 0,
            lineLength: 0)
        var keys: [Int64] = []
        keys.reserveCapacity(2 * stored.steps.count + 2)
        func add(_ artifact: StoredRun.Artifact?, producer: Bool) {
            guard let artifact, producer || artifact.producedBy == nil, let sha256 = artifact.sha256,
                let key = Self.hashKey(sha256), !keys.contains(key)
            else { return }
            keys.append(key)
        }
        add(stored.input, producer: true)
        add(stored.output, producer: false)
        // By index: `for step in stored.steps` copied each step, retaining everything it holds.
        for index in stored.steps.indices {
            for input in stored.steps[index].inputs.indices { add(stored.steps[index].inputs[input], producer: false) }
            add(stored.steps[index].output, producer: true)
        }
        artifactKeys = keys
    }

    /// The first 64 bits of a SHA-256 written as Sluice writes it (64 lowercase hex digits), as a signed integer;
    /// `nil` for anything else.
    static func hashKey(_ sha256: String) -> Int64? {
        // Read from the string's UTF-8 in place: through `utf8.prefix(16)` it cost 800 instructions an artifact.
        var sha256 = sha256
        return sha256.withUTF8 { digits -> Int64? in
            guard digits.count == 64 else { return nil }
            var key: UInt64 = 0
            for byte in digits[0..<16] {
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                default: return nil
                }
                key = key << 4 | UInt64(digit)
            }
            return Int64(bitPattern: key)
        }
    }
}

/// How one run used its artifacts, read from its line: what `sluice runs lineage` shows of it.
struct RunUses {
    struct Use: Hashable {
        var sha256: String
        var artifactID: String
        var stepRun: String?
        var role: ArtifactUse.Role
        var type: String
        var size: Int
    }

    let uses: [Use]

    init(_ stored: StoredRun) {
        var uses: [Use] = []
        func add(_ artifact: StoredRun.Artifact?, _ role: ArtifactUse.Role, _ stepRun: String?) {
            guard let artifact, let sha256 = artifact.sha256 else { return }
            uses.append(
                Use(
                    sha256: sha256, artifactID: artifact.id, stepRun: stepRun, role: role, type: artifact.type,
                    size: artifact.size))
        }
        add(stored.input, .produced, nil)
        add(stored.output, .consumed, nil)
        for step in stored.steps {
            for input in step.inputs { add(input, .consumed, step.stepRun) }
            add(step.output, .produced, step.stepRun)
        }
        self.uses = uses
    }

    /// The uses of the value with this SHA-256: its producers, then its consumers, each by artifact id.
    func of(_ sha256: String) -> [Use] {
        uses.filter { $0.sha256 == sha256 }.sorted {
            ($0.role == .produced ? 0 : 1, $0.artifactID) < ($1.role == .produced ? 0 : 1, $1.artifactID)
        }
    }
}
