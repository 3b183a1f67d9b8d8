import Foundation
import Kafka
import Logging
import Pipelines
import ServiceLifecycle
import Synchronization
import Testing

@testable import Lineage

/// A two-step pipeline whose output is large when asked: `{"text": ..., "pad": n}` → `[text, text]` padded.
private enum Echo {
    struct Input: Codable, Sendable {
        var text: String
        var pad: Int
    }
    static let pad = Step("pad") { (input: Input) in input.text + String(repeating: "x", count: input.pad) }
    static let pair = Step("pair") { (text: String) in [text, text] }
    static let pipeline = Pipeline("echo") { (input: Input) in try await pair(pad(input)) }
}

/// The events of one run of `Echo`, as a worker would publish them.
private func events(runID: String, text: String = "a", pad: Int = 0, pipeline: String? = nil) async -> [LineageEvent] {
    let tracker = RecordingTracker()
    _ = await PipelineRunner(tracker: tracker).run(
        Echo.pipeline, Echo.Input(text: text, pad: pad), options: RunOptions(capture: .realtime, runID: runID))
    return tracker.events.map { event in
        var event = event
        if let pipeline { event.pipeline = pipeline }
        return event
    }
}

private func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "sluice-store-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// The runs of `Echo` with these ids, closed by a fold of lineage partition 3.
private func closedRuns(_ runIDs: [String], pad: Int = 0, pipeline: String? = nil) async -> [ClosedRun] {
    var fold = PartitionFold(partition: 3, incompleteAfter: 1000)
    var closed: [ClosedRun] = []
    var offset: Int64 = 0
    for runID in runIDs {
        for event in await events(runID: runID, pad: pad, pipeline: pipeline) {
            closed += fold.take([event], at: offset)
            offset += 1
        }
    }
    return closed
}

@Suite("Store names: nothing from an event leaves the root")
struct StoreNamesTests {
    @Test func hostileNamesBecomeOneHarmlessComponent() {
        let hostile = ["../../etc", "/etc/passwd", "a/b", "nul\0byte", ".", "..", "", ".hidden", "é", "a b"]
        var seen: Set<String> = []
        for name in hostile {
            let component = StoreNames.component(name)
            #expect(!component.contains("/") && !component.contains("\0"), "\(name) -> \(component)")
            #expect(component != "." && component != ".." && !component.hasPrefix("."), "\(name) -> \(component)")
            #expect(!component.isEmpty)
            seen.insert(component)
        }
        #expect(seen.count == hostile.count, "two names share a directory")
        #expect(StoreNames.component("text-stats") == "text-stats")
        let long = String(repeating: "a", count: 1000)
        #expect(StoreNames.component(long).utf8.count <= 120)
        #expect(StoreNames.component(long) != StoreNames.component(long + "b"))
    }

    @Test func daysAreUTC() {
        #expect(Timestamps.day(ofMicros: 0) == "1970-01-01")
        #expect(Timestamps.day(ofMicros: 1_795_643_792_149_019) == "2026-11-25")
        #expect(Timestamps.day(ofMicros: 951_782_400_000_000) == "2000-02-29")
        #expect(Timestamps.day(ofMicros: -1) == "1969-12-31")
        #expect(Timestamps.daysSinceEpoch(ofMicros: 86_399_999_999) == 0)
        #expect(Timestamps.daysSinceEpoch(ofMicros: 86_400_000_000) == 1)
        #expect(Timestamps.daysSinceEpoch(ofMicros: -1) == -1)
        #expect(Timestamps.daysSinceEpoch(ofMicros: -86_400_000_000) == -1)
        #expect(Timestamps.daysSinceEpoch(ofMicros: -86_400_000_001) == -2)
    }

    /// The lines' `*_at` members: what Python's datetime prints for the same microseconds.
    @Test func timesAreRFC3339InUTCWithMicroseconds() throws {
        #expect(Timestamps.rfc3339(micros: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(Timestamps.rfc3339(micros: -1) == "1969-12-31T23:59:59.999999Z")
        #expect(Timestamps.rfc3339(micros: 1_795_643_792_149_019) == "2026-11-25T21:56:32.149019Z")
        #expect(Timestamps.rfc3339(micros: 951_782_400_000_000) == "2000-02-29T00:00:00.000000Z")
        #expect(Timestamps.rfc3339(micros: 253_402_300_799_999_999) == "9999-12-31T23:59:59.999999Z")
        #expect(Timestamps.rfc3339(micros: -62_167_219_200_000_000) == "0000-01-01T00:00:00.000000Z")
        #expect(Timestamps.rfc3339(micros: 1_000_000_000_010_203) == "2001-09-09T01:46:40.010203Z")
        // A hostile `ts` gives a strange date, never a crash.
        #expect(!Timestamps.rfc3339(micros: .min).isEmpty && !Timestamps.rfc3339(micros: .max).isEmpty)
        // A line writes the same text in place, in an array beside other values.
        let times: [Int64] = [
            0, -1, 1_795_643_792_149_019, 253_402_300_799_999_999, 253_402_300_800_000_000, .min, .max,
        ]
        var writer = JSONWriter()
        writer.array { list in
            for micros in times { list.rfc3339(micros: micros) }
        }
        #expect(try JSONValue(parsing: writer.bytes) == .array(times.map { .string(Timestamps.rfc3339(micros: $0)) }))
    }

    @Test func segmentDirectoriesAreHivePartitions() {
        #expect(
            StoreNames.segmentDirectory(pipeline: "a=b/c", day: "2026-11-25")
                == "runs/pipeline=a%3Db%2Fc/date=2026-11-25")
    }

    @Test func onlyLowercaseHexOf64IsAHash() {
        #expect(StoreNames.isSHA256(String(repeating: "ab", count: 32)))
        #expect(!StoreNames.isSHA256(String(repeating: "AB", count: 32)))
        #expect(!StoreNames.isSHA256("../" + String(repeating: "a", count: 61)))
    }
}

@Suite("Folding a partition's events into runs")
struct PartitionFoldTests {
    @Test func aRunClosesAtItsTerminalEventAndTheResumeOffsetWaitsForOpenRuns() async throws {
        let first = await events(runID: "r1")
        let second = await events(runID: "r2")
        var fold = PartitionFold(partition: 0, incompleteAfter: 1000)
        // r1's first event, then all of r2, then the rest of r1.
        var offset: Int64 = 0
        var closed: [ClosedRun] = []
        for event in [first[0]] + second + first.dropFirst() {
            closed += fold.take([event], at: offset)
            offset += 1
            if closed.isEmpty { #expect(fold.resumeOffset == 0) }
        }
        #expect(closed.map(\.fold.runID) == ["r2", "r1"])
        #expect(closed.allSatisfy { $0.fold.status == .completed && $0.fold.sawStart })
        #expect(closed[0].fold.firstOffset == 1 && closed[1].fold.firstOffset == 0)
        #expect(fold.resumeOffset == offset && fold.openRuns == 0)
    }

    @Test func repeatsAreIgnoredAndARedeliveryIsTheNextAttempt() async throws {
        let run = await events(runID: "r")
        let again = await events(runID: "r")  // the same request run again: same run id, new timestamps
        var fold = PartitionFold(partition: 0, incompleteAfter: 1000)
        var closed: [ClosedRun] = []
        var offset: Int64 = 0
        // A producer retry sends the first two events twice; the worker dies before run_completed; the request is
        // served again.
        for event in run.prefix(2) + run.prefix(2) + run.prefix(3) + again {
            closed += fold.take([event], at: offset)
            offset += 1
        }
        #expect(closed.map(\.fold.status) == [.incomplete, .completed])
        #expect(closed.map(\.fold.attempt) == [1, 2])
        #expect(closed[0].fold.events == 3)
        // Both closed at the same offset would share it; ranks keep them apart.
        #expect(closed[1].position > closed[0].position)
    }

    @Test func aRunWithoutNewsForNEventsBecomesIncomplete() async throws {
        let stalled = await events(runID: "stalled")
        var fold = PartitionFold(partition: 0, incompleteAfter: 5)
        var closed = fold.take([stalled[0]], at: 0)
        var offset: Int64 = 1
        while closed.isEmpty, offset < 100 {
            closed += fold.take([], at: offset)  // unreadable records count too
            offset += 1
        }
        #expect(closed.count == 1 && closed[0].fold.status == .incomplete)
        #expect(closed[0].fold.terminalOffset == 5)
        #expect(fold.resumeOffset == 6)
    }

    /// Lineage records v2: a BATCH run in one record, a REALTIME run over several, beside a run of one record per
    /// event (version 1), all give the same runs.
    @Test func aRunInOneRecordOrInSeveralFoldsTheSame() async throws {
        let whole = await events(runID: "whole")
        let split = await events(runID: "split")
        let single = await events(runID: "single")
        var fold = PartitionFold(partition: 0, incompleteAfter: 1000)
        var closed: [ClosedRun] = []
        var offset: Int64 = 0
        let decoded = try LineageRecord.decode(LineageRecord.encode(whole))
        let records = [decoded, Array(split.prefix(2))] + single.map { [$0] } + [Array(split.dropFirst(2))]
        for record in records {
            closed += fold.take(record, at: offset)
            offset += 1
        }
        #expect(closed.map(\.fold.runID) == ["whole", "single", "split"])
        #expect(closed.allSatisfy { $0.fold.status == .completed && $0.fold.sawStart })
        #expect(closed.map(\.fold.events) == [whole.count, single.count, split.count])
        #expect(closed[0].fold.firstOffset == 0 && closed[0].fold.terminalOffset == 0)
        #expect(closed[2].fold.firstOffset == 1 && closed[2].fold.terminalOffset == offset - 1)
        #expect(fold.resumeOffset == offset && fold.openRuns == 0)
    }

    @Test func goingBackFoldsAgainFromThere() async throws {
        let run = await events(runID: "r")
        var fold = PartitionFold(partition: 0, incompleteAfter: 1000)
        _ = fold.take([run[3]], at: 40)  // a record from before a reassignment
        var closed: [ClosedRun] = []
        for (index, event) in run.enumerated() { closed += fold.take([event], at: Int64(10 + index)) }
        #expect(closed.count == 1 && closed[0].fold.sawStart && closed[0].fold.firstOffset == 10)
    }
}

@Suite("The store's files: segments, artifacts, restarts")
struct PartitionStoreTests {
    private func segmentFiles(_ root: String) throws -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let path = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(root)/\(path)", isDirectory: &isDirectory),
                !isDirectory.boolValue
            {
                files[path] = Array(try Data(contentsOf: URL(fileURLWithPath: "\(root)/\(path)")))
            }
        }
        return files
    }

    @Test func runsOfPipelinesAndDaysInterleavedLandInTheirOwnDirectories() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // Runs started at noon (UTC) of 2026-11-25, or a day before: never across a midnight.
        let noon: Int64 = 1_795_608_000_000_000
        let day: Int64 = 86_400_000_000
        let plan: [(runID: String, pipeline: String, start: Int64)] = [
            ("r1", "a", noon), ("r2", "b", noon), ("r3", "a", noon - day), ("r4", "a", noon), ("r5", "a", noon - day),
            ("r6", "b", noon),
        ]
        var fold = PartitionFold(partition: 3, incompleteAfter: 1000)
        var closed: [ClosedRun] = []
        var offset: Int64 = 0
        for run in plan {
            let events = await events(runID: run.runID, pipeline: run.pipeline)
            let started = try #require(events.first?.timestamp)
            for var event in events {
                event.timestamp = run.start + event.timestamp - started
                closed += fold.take([event], at: offset)
                offset += 1
            }
        }
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits())
        for run in closed { #expect(try store.append(run, storeInlineLimit: 1024)) }
        try store.sync()
        var runsByDirectory: [String: [String]] = [:]
        for (path, bytes) in try segmentFiles(root) where path.hasSuffix(".jsonl") {
            let directory = path.split(separator: "/").dropLast().joined(separator: "/")
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                runsByDirectory[directory, default: []].append(try StoredRun(line: Array(line.utf8)).runID)
            }
        }
        #expect(
            runsByDirectory == [
                "runs/pipeline=a/date=2026-11-25": ["r1", "r4"], "runs/pipeline=b/date=2026-11-25": ["r2", "r6"],
                "runs/pipeline=a/date=2026-11-24": ["r3", "r5"],
            ])
    }

    @Test func aReopenedStoreSkipsWhatItWroteAndRepairsATornLine() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runs = await closedRuns(["a", "b", "c"])
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits())
        for run in runs.prefix(2) { #expect(try store.append(run, storeInlineLimit: 1024)) }
        try store.sync()
        let files = try segmentFiles(root).keys.filter { $0.hasSuffix(".jsonl") }
        #expect(files.count == 1)
        let segment = "\(root)/\(try #require(files.first))"
        #expect(
            segment.contains("/runs/pipeline=echo/date=") && segment.hasSuffix("/p3-\(runs[0].position.offset).jsonl"))
        let whole = try Data(contentsOf: URL(fileURLWithPath: segment))
        // A crash in the middle of the third line.
        try (whole + Data(#"{"run_id":"c","trunc"#.utf8)).write(to: URL(fileURLWithPath: segment))

        let reopened = try PartitionStore(root: root, partition: 3, limits: SegmentLimits())
        #expect(reopened.lastWritten == runs[1].position)
        #expect(try Data(contentsOf: URL(fileURLWithPath: segment)) == whole)
        for run in runs { _ = try reopened.append(run, storeInlineLimit: 1024) }
        try reopened.sync()
        let lines = try String(contentsOfFile: segment, encoding: .utf8).split(separator: "\n")
        let ids = try lines.map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])["run_id"] as? String
        }
        #expect(ids == ["a", "b", "c"])
    }

    @Test func largeValuesGoToContentAddressedFilesAndSegmentsRoll() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runs = await closedRuns(["a", "b", "c"], pad: 300)
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits(maxBytes: 1 << 20, maxLines: 2))
        for run in runs { #expect(try store.append(run, storeInlineLimit: 256)) }
        try store.sync()
        let files = try segmentFiles(root)
        #expect(files.keys.filter { $0.hasSuffix(".jsonl") }.count == 2)
        let artifacts = files.filter { $0.key.hasPrefix("artifacts/") }
        #expect(!artifacts.isEmpty)
        for (path, value) in artifacts {
            let sha256 = String(path.split(separator: "/").last ?? "")
            #expect(ContentHash.sha256(value) == sha256)
            #expect(path == ArtifactFiles.relativePath(of: sha256))
        }
        let segment = try #require(files.first { $0.key.hasSuffix(".jsonl") }?.value)
        let line = try #require(String(decoding: segment, as: UTF8.self).split(separator: "\n").first)
        #expect(line.contains(#""file":"artifacts/"#))
    }

    @Test func aLargeValueWhoseHashIsNotItsSHA256StaysInTheLineWithAnError() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // The run's input value, replaced by one of another hash (a worker's bug, or a forged event).
        let forged = Array(#"{"text":"\#(String(repeating: "x", count: 400))"}"#.utf8)
        var fold = PartitionFold(partition: 3, incompleteAfter: 1000)
        var closed: [ClosedRun] = []
        for (offset, event) in await events(runID: "forged", pad: 300).enumerated() {
            var event = event
            if case .runStarted(let configuration, let input?, let traceparent, let error, let span, let worker) =
                event.body
            {
                var input = input
                input.inlineJSON = forged
                event.body = .runStarted(
                    configuration: configuration, input: input, traceparent: traceparent, traceparentError: error,
                    span: span, worker: worker)
            }
            closed += fold.take([event], at: Int64(offset))
        }
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits(maxBytes: 1 << 20, maxLines: 10))
        #expect(try store.append(try #require(closed.first), storeInlineLimit: 256))
        try store.sync()
        let files = try segmentFiles(root)
        let segment = try #require(files.first { $0.key.hasSuffix(".jsonl") }?.value)
        let stored = try StoredRun(line: Array(segment.dropLast()))
        let input = try #require(stored.input)
        #expect(input.value == forged && input.file == nil)
        #expect(input.error == "the value's SHA-256 is not the sha256 its event gives")
        let sha256 = try #require(input.sha256)
        #expect(files[ArtifactFiles.relativePath(of: sha256)] == nil, "no file under the hash the event claims")
    }

    @Test func theIndexTakesABatchFromMemoryAndWhatItMissedFromTheFile() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runs = await closedRuns(["a", "b", "c", "d", "e"])
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits(maxBytes: 1 << 20, maxLines: 2))
        let index = try StoreIndex(root: root)
        for run in runs.prefix(2) { #expect(try store.append(run, storeInlineLimit: 1024)) }
        #expect(try index.add(store.sync()) == 2)
        // A batch whose indexing failed: the next batch's segment is read from its file, the missed line with it.
        #expect(try store.append(runs[2], storeInlineLimit: 1024))
        _ = try store.sync()
        #expect(try store.append(runs[3], storeInlineLimit: 1024))
        #expect(try index.add(store.sync()) == 2)
        // `sluice runs` indexed the batch from the file first: nothing twice.
        #expect(try store.append(runs[4], storeInlineLimit: 1024))
        let last = try store.sync()
        #expect(try index.catchUp() == 1)
        #expect(try index.add(last) == 0)

        let indexed = try index.runs(limit: 100)
        #expect(indexed.map(\.runID).sorted() == ["a", "b", "c", "d", "e"])
        let uses = try indexed.map { try index.uses(ofArtifact: #require(index.line(of: $0).input?.sha256)) }
        let (rebuilt, count) = try StoreIndex.rebuild(root: root)
        #expect(count == 5)
        #expect(try Set(rebuilt.runs(limit: 100)) == Set(indexed))
        let rebuiltUses = try indexed.map { try rebuilt.uses(ofArtifact: #require(rebuilt.line(of: $0).input?.sha256)) }
        #expect(rebuiltUses == uses)
        #expect(uses.allSatisfy { !$0.isEmpty })
    }

    /// Rows go to SQLite several to a statement: a batch of more runs and artifacts than one statement takes, and not
    /// a multiple of it, is indexed whole, each run with its artifacts.
    @Test func aBatchLargerThanOneInsertIsIndexedWhole() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runIDs = (0..<21).map { "run\($0)" }
        let runs = await closedRuns(runIDs)
        let store = try PartitionStore(root: root, partition: 0, limits: SegmentLimits())
        for run in runs { #expect(try store.append(run, storeInlineLimit: 1024)) }
        let index = try StoreIndex(root: root)
        #expect(try index.add(store.sync()) == 21)
        let indexed = try index.runs(limit: 100)
        #expect(indexed.map(\.runID).sorted() == runIDs.sorted())
        for run in indexed {
            let line = try index.line(of: run)
            for sha256 in [line.input?.sha256] + line.steps.map(\.output?.sha256) {
                let uses = try index.uses(ofArtifact: #require(sha256))
                #expect(uses.contains { $0.runID == run.runID })
            }
        }
    }

    /// Batches handed to the index's thread, more than it may hold at once and one larger than that alone, are all
    /// indexed by the time it is closed.
    @Test(.timeLimit(.minutes(1))) func theIndexThreadIndexesEveryBatchItIsHanded() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runIDs = (0..<12).map { "run\($0)" }
        let runs = await closedRuns(runIDs)
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits())
        let transactions = Mutex(0)
        let writer = try IndexWriter(index: StoreIndex(root: root), maxPending: 2, logger: Logger(label: "test")) { _ in
            transactions.withLock { $0 += 1 }
        }
        for batch in [runs[0..<1], runs[1..<5], runs[5..<6], runs[6..<7], runs[7..<12]] {
            for run in batch { #expect(try store.append(run, storeInlineLimit: 1024)) }
            writer.submit(try store.sync())
        }
        writer.close()
        #expect(try StoreIndex(root: root).runs(limit: 100).map(\.runID).sorted() == runIDs.sorted())
        #expect(transactions.withLock { $0 } >= 1)
    }

    /// A store of the layout before Hive-style partitions (`runs/<pipeline>/<day>/`, lines of version 1: no `v`, no
    /// `*_at`) is read as it is: indexed, its runs read, its last position found, and new lines go to the new layout.
    /// An index written with the layout before (version 2: artifact uses keyed by their hash text) is emptied when
    /// opened and rebuilt from the segments; `runs lineage` then reads the uses from the lines.
    @Test func anIndexOfTheEarlierLayoutIsRebuilt() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runs = await closedRuns(["a", "b"])
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits())
        for run in runs { #expect(try store.append(run, storeInlineLimit: 1024)) }
        try store.sync()
        do {
            // What version 2 left: its tables, one stale row, and its version.
            let old = try SQLiteDatabase(path: StoreIndex.path(root: root))
            try old.execute(
                """
                CREATE TABLE segments(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, indexed_bytes INTEGER NOT NULL);
                INSERT INTO segments VALUES (1, 'runs/gone.jsonl', 99);
                CREATE TABLE artifacts(
                    sha256 TEXT NOT NULL, segment INTEGER NOT NULL, line_offset INTEGER NOT NULL,
                    artifact_id TEXT NOT NULL, step_run TEXT, role TEXT NOT NULL, type TEXT NOT NULL,
                    size INTEGER NOT NULL, PRIMARY KEY(segment, line_offset, artifact_id)) WITHOUT ROWID;
                PRAGMA user_version = 2;
                """)
        }
        let index = try StoreIndex(root: root)
        #expect(try index.segments().allSatisfy { !$0.contains("gone") })
        #expect(try index.catchUp() == 2)
        let indexed = try index.runs(limit: 10)
        #expect(Set(indexed.map(\.runID)) == ["a", "b"])
        // Each run's input: produced as the run's input, consumed by its first step.
        let first = try #require(indexed.first { $0.runID == "a" })
        let input = try #require(try index.line(of: first).input?.sha256)
        let uses = try index.uses(ofArtifact: input).filter { $0.runID == "a" }
        #expect(uses.map(\.role) == [.produced, .consumed] && uses.map(\.stepRun) == [nil, "pad#1"], "\(uses)")
    }

    @Test func aStoreOfTheEarlierLayoutIsReadAsItIs() async throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runs = await closedRuns(["old", "new"])
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits())
        #expect(try store.append(runs[0], storeInlineLimit: 1024))
        try store.sync()
        // The line as version 1 wrote it, where version 1 put it.
        let segment = try #require(try segmentFiles(root).keys.first { $0.hasSuffix(".jsonl") })
        let line = String(decoding: try #require(try segmentFiles(root)[segment]), as: UTF8.self)
        let version1 = line.replacing(#"{"v":2,"#, with: "{").replacing(
            /,"(started|ended)_at":("[^"]*"|null)/, with: ""
        )
        .replacing(/,"at":"[^"]*"/, with: "")
        #expect(!version1.contains("_at") && version1.hasPrefix(#"{"run_id":"old""#))
        let day = try #require(segment.split(separator: "/").dropFirst(2).first?.dropFirst("date=".count))
        try FileManager.default.createDirectory(atPath: "\(root)/runs/echo/\(day)", withIntermediateDirectories: true)
        try version1.write(
            toFile: "\(root)/runs/echo/\(day)/p3-\(runs[0].position.offset).jsonl", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: "\(root)/runs/pipeline=echo")

        let reopened = try PartitionStore(root: root, partition: 3, limits: SegmentLimits())
        #expect(reopened.lastWritten == runs[0].position)
        #expect(try !reopened.append(runs[0], storeInlineLimit: 1024))
        #expect(try reopened.append(runs[1], storeInlineLimit: 1024))
        try reopened.sync()
        let (index, count) = try StoreIndex.rebuild(root: root)
        #expect(count == 2)
        let indexed = try index.runs(limit: 10)
        #expect(Set(indexed.map(\.runID)) == ["old", "new"])
        let old = try #require(indexed.first { $0.runID == "old" })
        #expect(old.segment.hasPrefix("runs/echo/"))
        #expect(try index.line(of: old).steps.map(\.step) == ["pad", "pair"])
        #expect(try #require(indexed.first { $0.runID == "new" }).segment.hasPrefix("runs/pipeline=echo/date="))
    }

    @Test func aHostilePipelineNameStaysInsideTheRoot() async throws {
        let parent = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let root = parent + "/store"
        for (index, name) in ["../../escape", "/absolute", "nul\0", "..", String(repeating: "long", count: 400)]
            .enumerated()
        {
            let store = try PartitionStore(root: root, partition: Int32(index), limits: SegmentLimits())
            for run in await closedRuns(["r\(index)"], pipeline: name) {
                _ = try store.append(run, storeInlineLimit: 1)
            }
            try store.sync()
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent) == ["store"])
        let pipelines = try FileManager.default.contentsOfDirectory(atPath: root + "/runs")
        #expect(pipelines.count == 5)
    }
}

@Suite("The fold threads: a batch's partitions at once, on threads started once", .serialized)
struct FoldThreadsTests {
    private struct Refused: Error, Equatable { let item: Int }

    /// The threads of this process named `name`.
    private func threads(named name: String) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter {
            (try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == name
        }.count
    }

    @Test func everyItemRunsOnceInOrderOfResultsAndTheThreadsAreReused() throws {
        let pool = FoldThreads(helpers: 3)
        defer { pool.close() }
        let runs = Mutex([Int](repeating: 0, count: 200))
        for round in 0..<20 {
            let results = try pool.map(Array(0..<200)) { item -> Int in
                runs.withLock { $0[item] += 1 }
                return item * 2 + round
            }
            #expect(results == (0..<200).map { $0 * 2 + round })
        }
        #expect(runs.withLock { $0 }.allSatisfy { $0 == 20 })
        // Twenty batches, and only the three helpers (each names itself as it starts, before its first wait).
        #expect(threads(named: "sluice-fold") == 3)
        pool.close()
        // `close` has joined them; the kernel drops a joined thread's task entry a moment later.
        var left = threads(named: "sluice-fold")
        for _ in 0..<200 where left > 0 {
            usleep(10_000)
            left = threads(named: "sluice-fold")
        }
        #expect(left == 0)
    }

    @Test func anErrorIsThrownOnceEveryItemIsDone() throws {
        let pool = FoldThreads(helpers: 3)
        defer { pool.close() }
        let done = Mutex(Set<Int>())
        #expect(throws: Refused(item: 7)) {
            _ = try pool.map(Array(0..<50)) { item in
                done.withLock { _ = $0.insert(item) }
                if item == 7 { throw Refused(item: 7) }
                return item
            }
        }
        #expect(done.withLock { $0 } == Set(0..<50))
        // The pool serves the next batch as before.
        #expect(try pool.map([1, 2, 3]) { $0 + 1 } == [2, 3, 4])
    }
}

@Suite("A run's line: one model, written and read back")
struct StoredRunTests {
    private func artifact(
        _ id: String, value: String? = nil, file: String? = nil, producedBy: String? = nil
    )
        -> StoredRun.Artifact
    {
        StoredRun.Artifact(
            id: id, type: "Int", sha256: String(repeating: "a", count: 64), size: 2,
            value: value.map { Array($0.utf8) },
            file: file, producedBy: producedBy, error: nil)
    }

    private var run: StoredRun {
        StoredRun(
            runID: "r1", attempt: 2, pipeline: "p", status: .failed, capture: "BATCH", requestID: "q1", worker: "w:1",
            trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            span: SpanIDs(traceID: "0af7651916cd43dd8448eb211c80319c", spanID: "00f067aa0ba902b7"),
            startedMicros: 10, endedMicros: 30, durationMicros: 20,
            configuration: .object(["mode": .string("BATCH")]), input: artifact("input", value: "{\"a\":1}"),
            output: nil, error: ErrorDetail(code: "step_failed", message: "no", step: "b"),
            metadata: ["tokens": .int(3)],
            steps: [
                StoredRun.Step(
                    stepRun: "a#1", step: "a", version: 1, status: .cached, attempts: 0, startedMicros: 11,
                    endedMicros: 11, durationMicros: nil,
                    inputs: [artifact("a#1/in0", value: "1", producedBy: "input")],
                    output: artifact("a#1/out", file: "artifacts/aa/aaaa"),
                    cachedFrom: CachedStepRun(runID: "r0", stepRun: "a#1"), error: nil, metadata: [:]),
                StoredRun.Step(
                    stepRun: "b#1", step: "b", version: 3, status: .failed, attempts: 2, startedMicros: 12,
                    endedMicros: 29, durationMicros: 17, inputs: [], output: nil, cachedFrom: nil,
                    error: ErrorDetail(code: "step_failed", message: "no", step: "b"), metadata: ["k": .bool(true)],
                    spanID: "53995c3f42cd8ad8"),
            ],
            logs: [StoredRun.Log(micros: 13, stepRun: "b#1", level: "warning", message: "retrying")],
            position: StoredRun.Position(
                partition: 3, firstOffset: 100, terminalOffset: 108, terminalRank: 0, events: 9))
    }

    @Test func aLineReadBackIsWrittenAgainByteForByte() throws {
        let line = run.line()
        let read = try StoredRun(line: line)
        #expect(read.line() == line)
        #expect(read.status == .failed && read.steps.map(\.status) == [.cached, .failed])
        #expect(read.steps[0].cachedFrom == CachedStepRun(runID: "r0", stepRun: "a#1"))
        #expect(read.span?.spanID == "00f067aa0ba902b7" && read.steps.map(\.spanID) == [nil, "53995c3f42cd8ad8"])
        #expect(read.steps[0].output?.file == "artifacts/aa/aaaa" && read.steps[0].output?.value == nil)
        #expect(read.position.terminalOffset == 108 && read.logs.first?.message == "retrying")
    }

    @Test func theIndexReadsTheStructureWithoutValuesMetadataOrLogs() throws {
        let read = try StoredRun(line: run.line(), reading: .structure)
        #expect(read.runID == run.runID && read.steps.count == 2 && read.steps[1].status == .failed)
        #expect(read.steps[0].output?.sha256 == run.steps[0].output?.sha256)
        #expect(read.input?.value == nil && read.steps[0].inputs[0].value == nil && read.steps[1].metadata.isEmpty)
        #expect(read.logs.isEmpty && read.metadata.isEmpty && read.configuration == nil)
    }

    @Test(arguments: [
        (#"{"run_id":"r"}"#, "attempt"),
        (#"{"run_id":"r","attempt":1,"pipeline":"p","status":"done","capture":"BATCH"}"#, "status"),
        (#"[1]"#, "not a JSON object"),
        (#"{"run_id":"r","attempt":1,"pipeline":"p","status":"completed","capture":"BATCH","steps":3}"#, "steps"),
        (#"{"run_id":"r","attempt":1,"pipeline":"p","status":"completed","capture":"BATCH"}"#, "lineage"),
    ])
    func aMalformedLineIsAnErrorNamingTheMember(line: String, words: String) {
        #expect {
            try StoredRun(line: Array(line.utf8))
        } throws: { error in
            "\(error)".contains(words)
        }
    }
}

@Suite("The materializer's catch-up log")
struct CatchUpReportTests {
    @Test func itReportsTheRateEveryIntervalWhileBehind() {
        var report = CatchUpReport(intervalMicros: 5_000_000)
        #expect(report.isDue(at: 0) && report.record(at: 0, events: 0, lag: 900) == nil)
        #expect(!report.isDue(at: 4_000_000))
        #expect(report.isDue(at: 5_000_000))
        #expect(report.record(at: 5_000_000, events: 500_000, lag: 400) == 100_000)
        // Caught up: nothing to say.
        #expect(report.record(at: 10_000_000, events: 540_000, lag: 0) == nil)
        #expect(report.record(at: 12_000_000, events: 560_000, lag: 10) == 10_000)
    }
}

@Suite("The materializer as a service, in process, on the embedded broker", .serialized)
struct MaterializerServiceTests {
    private let quiet: Logger = {
        var logger = Logger(label: "sluice.tests")
        logger.logLevel = .critical
        return logger
    }()

    @Test(.timeLimit(.minutes(2))) func aServiceGroupRunsItUntilAGracefulShutdownAndEveryRunIsStored() async throws {
        let cluster = try MockCluster(logger: quiet)
        try cluster.createTopic("sluice.lineage", partitions: 2)
        let settings = try KafkaConfiguration([
            "bootstrap.servers": cluster.bootstrapServers, "linger.ms": "1", "fetch.wait.max.ms": "10",
        ])
        let producer = try KafkaProducer(configuration: settings, logger: quiet)
        let runIDs = (0..<20).map { "run-\($0)" }
        for runID in runIDs {
            let record = LineageRecord.encode(await events(runID: runID))
            _ = try await producer.send(OutgoingMessage(topic: "sluice.lineage", key: Array(runID.utf8), value: record))
        }
        await producer.close()

        let store = try temporaryDirectory()
        var configuration = MaterializerConfiguration(kafka: settings, store: store)
        // Fixed partitions: no group join to wait for.
        configuration.shard = Shard(index: 0, count: 1)
        let materializer = Materializer(configuration: configuration, logger: quiet)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: materializer)], logger: quiet))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let deadline = ContinuousClock.now + .seconds(60)
            while materializer.status.counts.runsWritten < runIDs.count, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(materializer.status.phase == .running)
            await group.triggerGracefulShutdown()
            // The group's run returns once the materializer has committed and left.
            try await tasks.next()
        }
        #expect(materializer.status.phase == .stopping)
        let stored = try StoreIndex(root: store).runs(limit: 100)
        #expect(Set(stored.map(\.runID)) == Set(runIDs))
        #expect(stored.allSatisfy { $0.status == .completed && $0.pipeline == "echo" })
    }
}

@Suite("The OpenLineage follower: stored runs to an endpoint, at least once")
struct OpenLineageFollowerTests {
    /// An endpoint in process: each event's Sluice run id and type, as they arrive.
    private final class Endpoint: Sendable {
        let arrivals: AsyncStream<String>
        private let arrived: AsyncStream<String>.Continuation
        /// The run whose events are refused, and the run whose events never get an answer.
        let refusing: String?
        let hanging: String?

        init(refusing: String? = nil, hanging: String? = nil) {
            (arrivals, arrived) = AsyncStream.makeStream()
            self.refusing = refusing
            self.hanging = hanging
        }

        func send(_ event: [UInt8]) async throws {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(event)) as? [String: Any])
            let facets = try #require((object["run"] as? [String: Any])?["facets"] as? [String: Any])
            let runID = (facets["sluice"] as? [String: Any])?["runId"] as? String
            let parent = ((facets["parent"] as? [String: Any])?["run"] as? [String: Any]) != nil
            let type = try #require(object["eventType"] as? String)
            if let runID, runID == refusing { throw OpenLineageRefusal("no") }
            if let runID, runID == hanging {
                try await Task.sleep(for: .seconds(3600))
            }
            arrived.yield(parent ? "step \(type)" : "\(runID ?? "?") \(type)")
        }

        /// The next `count` arrivals.
        func next(_ count: Int) async -> [String] {
            var iterator = arrivals.makeAsyncIterator()
            var taken: [String] = []
            while taken.count < count, let arrival = await iterator.next() { taken.append(arrival) }
            return taken
        }
    }

    private let quiet: Logger = {
        var logger = Logger(label: "sluice.tests")
        logger.logLevel = .critical
        return logger
    }()

    private func makeFollower(_ root: String, _ endpoint: Endpoint) -> OpenLineageFollower {
        OpenLineageFollower(root: root, settings: OpenLineageSettings(producer: "urn:test"), logger: quiet) {
            try await endpoint.send($0)
        }
    }

    /// A run of `Echo`: its START and COMPLETE, and its two steps' (children).
    private func events(_ runID: String) -> [String] {
        ["\(runID) START"] + Array(repeating: ["step START", "step COMPLETE"], count: 2).flatMap { $0 }
            + ["\(runID) COMPLETE"]
    }

    @Test(.timeLimit(.minutes(1))) func itSendsWhatIsStoredOnceFollowedSkipsRefusalsAndResendsWhatItHadNotRecorded()
        async throws
    {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runs = await closedRuns(["a", "b", "c", "d", "e", "f"])
        let store = try PartitionStore(root: root, partition: 3, limits: SegmentLimits(maxBytes: 1 << 20, maxLines: 2))
        // Stored before the partition is first followed: `sluice runs export`'s to send.
        #expect(try store.append(runs[0], storeInlineLimit: 1024))
        try store.sync()

        let first = Endpoint(refusing: "c", hanging: "e")
        let follower = makeFollower(root, first)
        try follower.follow(partition: 3)
        let running = Task { try await follower.run() }
        for run in runs[1...4] { #expect(try store.append(run, storeInlineLimit: 1024)) }
        follower.written(try store.sync())
        // b's segment, then c's and d's (at once): c's own START and COMPLETE are refused and skipped, its steps'
        // events arrive. e hangs, so the follower never records its segment as sent.
        let arrivedFirst = await first.next(16)
        #expect(Array(arrivedFirst.prefix(6)) == events("b"), "\(arrivedFirst)")
        #expect(
            arrivedFirst.dropFirst(6).sorted() == (events("c").dropFirst().dropLast() + events("d")).sorted(),
            "\(arrivedFirst)")
        #expect(follower.backlogBytes > 0)
        running.cancel()
        try await running.value

        // A restart: sent from the positions on, e again, then f.
        let second = Endpoint()
        let restarted = makeFollower(root, second)
        try restarted.follow(partition: 3)
        let resumed = Task { try await restarted.run() }
        #expect(try store.append(runs[5], storeInlineLimit: 1024))
        restarted.written(try store.sync())
        let arrived = await second.next(12)
        #expect(Set(arrived) == Set(events("e") + events("f")) && arrived.count == 12)
        while restarted.backlogBytes > 0 { try await Task.sleep(for: .milliseconds(10)) }
        resumed.cancel()
        try await resumed.value
        let positions = try String(contentsOfFile: "\(root)/openlineage/p3.positions", encoding: .utf8)
        #expect(positions.split(separator: "\n").count == 3, "\(positions)")
    }
}
