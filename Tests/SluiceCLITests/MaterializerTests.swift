import Foundation
import Testing

/// Every file under `root` (relative path → bytes), leaving out the scratch directory `tmp/` and the derived index.
func storeFiles(_ root: String) throws -> [String: Data] {
    var files: [String: Data] = [:]
    let enumerator = FileManager.default.enumerator(atPath: root)
    while let path = enumerator?.nextObject() as? String {
        guard !path.hasPrefix("tmp"), !path.hasPrefix("index.sqlite") else { continue }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: "\(root)/\(path)", isDirectory: &isDirectory), !isDirectory.boolValue
        {
            files[path] = try Data(contentsOf: URL(fileURLWithPath: "\(root)/\(path)"))
        }
    }
    return files
}

/// The runs in the store's segments, from their complete lines. A line without its newline is one being written, or
/// cut by a kill (the next start repairs it): not a run yet. (Read while a materializer wrote, it failed to parse now
/// and then.)
func storedRuns(_ root: String) throws -> [[String: Any]] {
    try storeFiles(root).filter { $0.key.hasSuffix(".jsonl") }.values.flatMap { data in
        let complete = data.lastIndex(of: UInt8(ascii: "\n")).map { data[...$0] } ?? Data()
        return try String(decoding: complete, as: UTF8.self).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }
}

func temporaryStore() throws -> String {
    let path = NSTemporaryDirectory() + "sluice-store-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Waits until the store at `root` holds `count` runs, at most `timeout`.
func waitForRuns(_ root: String, _ count: Int, timeout: Duration = .seconds(120)) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? storedRuns(root).count) == count { return true }
        try await Task.sleep(for: .milliseconds(200))
    }
    return false
}

@Suite("sluice materialize: the lineage topic into the file store, once, whatever happens")
struct MaterializerTests {
    @Test func everyAnsweredBatchRequestIsStoredOnceAndAReplayGivesTheSameBytes() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "BATCH", "--name", "batch-worker-1"])
        let specs: [[String: Any]] = (0..<60).map { ["id": "s\($0)", "value": ["text": "one two three \($0)"]] }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0 && responses.count == 60)
        #expect(await worker.stop() == 0)

        let store = try temporaryStore()
        let replay = try temporaryStore()
        defer {
            try? FileManager.default.removeItem(atPath: store)
            try? FileManager.default.removeItem(atPath: replay)
        }
        // Two records that are not lineage events, and the end of a run whose beginning is not in the topic: counted,
        // not stored.
        let orphanEnd =
            #"{"v":1,"event_id":"orphan/1/5","seq":5,"type":"run_completed","ts":2000,"run_id":"orphan","#
            + #""pipeline":"text-stats","request_id":null,"capture":"BATCH","attempt":1,"status":"completed","#
            + #""duration_us":1000,"output":null}"#
        try await cluster.produce(["x\tnot json", "y\t{}", "orphan\t\(orphanEnd)"], to: cluster.lineage)
        let materializer = try await cluster.startMaterializer(store: store)
        #expect(try await waitForRuns(store, 60))
        // Caught up: every lineage partition that delivered records reports its lag, and it is zero.
        // The counters follow the batch's files by moments: read them once they show the 60 runs (at most 10 s).
        var metrics = ""
        for _ in 0..<100 {
            metrics = try await materializer.metrics() ?? ""
            if hasSample(metrics, "sluice_materializer_runs_written_total 60") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(hasSample(metrics, "sluice_materializer_runs_written_total 60"), "\(metrics)")
        #expect(hasSample(metrics, "sluice_materializer_malformed_total 2"), "\(metrics)")
        #expect(hasSample(metrics, "sluice_materializer_partial_total 1"), "\(metrics)")
        // Gauges are numbers with a fraction in Prometheus's text (swift-prometheus writes Doubles).
        #expect(hasSample(metrics, "sluice_materializer_lag_records 0.0"), "\(metrics)")
        let partitionLags = metrics.matches(of: /sluice_materializer_partition_lag_records\{partition="\d+"\} (\S+)/)
        #expect(!partitionLags.isEmpty && partitionLags.allSatisfy { Double($0.1) == 0 }, "\(metrics)")
        #expect(metrics.contains(#"sluice_materializer_phase_duration_seconds_count{phase="sync"}"#), "\(metrics)")
        #expect(await materializer.stop() == 0)
        let runs = try storedRuns(store)
        let answered = Set(responses.compactMap { ($0["value"] as? [String: Any])?["run_id"] as? String })
        #expect(Set(runs.compactMap { $0["run_id"] as? String }) == answered && runs.count == answered.count)
        for run in runs {
            #expect(run["status"] as? String == "completed" && run["capture"] as? String == "BATCH")
            #expect(run["worker"] as? String == "batch-worker-1")
            #expect(
                (run["steps"] as? [[String: Any]])?.map { $0["step"] as? String } == ["tokenize", "count", "summarize"])
            #expect(((run["output"] as? [String: Any])?["produced_by"] as? String) == "summarize#1/out")
        }

        try await browse(store, runs: runs)

        // A second materializer in a group of its own replays the topic into an empty root.
        let second = try await cluster.startMaterializer(store: replay, group: "replay")
        #expect(try await waitForRuns(replay, 60))
        #expect(await second.stop() == 0)
        #expect(try storeFiles(store) == storeFiles(replay))
        await cluster.stop()
    }

    /// The materializer is killed (SIGKILL) at random moments in the middle of its work, while workers keep adding
    /// lineage that also holds records that are not lineage events and a run whose name is hostile; after a last
    /// restart the store is the one an uninterrupted replay writes, byte for byte.
    @Test func killingTheMaterializerAtAnyMomentGivesTheSameStore() async throws {
        let cluster = try await ServingCluster.start()
        let victim = try temporaryStore()
        let reference = try temporaryStore()
        defer {
            try? FileManager.default.removeItem(atPath: victim)
            try? FileManager.default.removeItem(atPath: reference)
        }
        try await cluster.produce(
            ["not json at all", "k\t{\"v\": 1, \"type\": \"run_started\"}", "{\"v\": 99}"], to: cluster.lineage)
        let worker = try await cluster.startWorker(["--capture", "REALTIME"])
        var generator = SystemRandomNumberGenerator()
        var runs = 0
        for round in 0..<5 {
            let specs: [[String: Any]] = (0..<300).map {
                ["id": "k\(round)-\($0)", "value": ["text": String(repeating: "word\($0) ", count: 1 + $0 % 7)]]
            }
            let (status, responses) = try await cluster.call(specs)
            #expect(status == 0 && responses.count == specs.count)
            runs += specs.count
            if round == 2 {
                try await cluster.produce([hostileRun()], to: cluster.lineage)
                runs += 1
            }
            // Killed once it has started writing, at a random moment after that.
            let before = try storedRuns(victim).count
            // Small batches: a sync every 64 records, so that a kill lands between and inside them.
            let process = try await cluster.startMaterializer(store: victim, group: "victim", ["--batch-size", "64"])
            let deadline = ContinuousClock.now + .seconds(60)
            while try storedRuns(victim).count == before, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 0..<100, using: &generator)))
            process.process.signal(SIGKILL)
            _ = await process.process.wait(timeout: .seconds(30))
        }
        #expect(await worker.stop() == 0)

        let last = try await cluster.startMaterializer(store: victim, group: "victim", ["--batch-size", "64"])
        #expect(try await waitForRuns(victim, runs))
        #expect(await last.stop() == 0)
        let whole = try await cluster.startMaterializer(store: reference, group: "reference")
        #expect(try await waitForRuns(reference, runs))
        #expect(await whole.stop() == 0)
        let expected = try storeFiles(reference)
        let actual = try storeFiles(victim)
        #expect(actual.keys.sorted() == expected.keys.sorted())
        #expect(actual == expected)
        // The index, kept by processes that were killed between writing lines and indexing them, has every run once.
        let list = try ChildProcess(sluiceExecutable, ["runs", "--store", victim, "list", "--limit", "100000"])
        let listed = try await list.readRest().split(separator: "\n").dropFirst()
        #expect(await list.wait() == 0)
        #expect(listed.count == runs && Set(listed.map { $0.prefix(32) + $0.dropFirst(32).prefix(8) }).count == runs)
        // Nothing escaped the root.
        #expect(
            Set(try FileManager.default.contentsOfDirectory(atPath: victim)).isSubset(of: [
                "runs", "artifacts", "tmp", "index.sqlite", "index.sqlite-wal", "index.sqlite-shm",
            ]))
        await cluster.stop()
    }

    /// `sluice runs` over the store: list, show (text and dot), lineage of an artifact, reindex.
    private func browse(_ store: String, runs: [[String: Any]]) async throws {
        func sluice(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            let process = try ChildProcess(sluiceExecutable, arguments)
            let output = try await process.readRest()
            return (await process.wait(), output)
        }
        let listed = try await sluice(["runs", "--store", store, "list", "--limit", "100"])
        #expect(listed.status == 0)
        let listedIDs = Set(listed.output.split(separator: "\n").dropFirst().map { String($0.prefix(32)) })
        #expect(listedIDs == Set(runs.compactMap { $0["run_id"] as? String }))
        let none = try await sluice(["runs", "list", "--store", store, "--status", "failed"])
        #expect(none.status == 0 && none.output.split(separator: "\n").count == 1)

        let run = try #require(runs.first)
        let runID = try #require(run["run_id"] as? String)
        let shown = try await sluice(["runs", "--store", store, "show", runID])
        #expect(shown.status == 0)
        for expected in [
            "run \(runID)", "  worker batch-worker-1\n", "tokenize#1 [tokenize] completed",
            "in  count#1/in0 ← tokenize#1",
            "in  summarize#1/in1 ← count#1", "output ← summarize#1",
        ] {
            #expect(shown.output.contains(expected), "\(expected) not in:\n\(shown.output)")
        }
        let dot = try await sluice(["runs", "--store", store, "show", runID, "--dot"])
        #expect(dot.output.hasPrefix("digraph run {"))
        #expect(
            dot.output.contains(#""tokenize#1" -> "summarize#1""#) && dot.output.contains(#""input" -> "tokenize#1""#))
        #expect(try await sluice(["runs", "--store", store, "show", "no-such-run"]).status == 1)

        // The tokens artifact: produced by tokenize, consumed by count and summarize.
        let steps = try #require(run["steps"] as? [[String: Any]])
        let tokens = try #require((steps[0]["output"] as? [String: Any])?["sha256"] as? String)
        let lineage = try await sluice(["runs", "--store", store, "lineage", tokens])
        #expect(lineage.status == 0)
        let produced = lineage.output.components(separatedBy: "consumed by:")
        #expect(produced.count == 2 && produced[0].contains("step tokenize#1"))
        #expect(produced[1].contains("step count#1") && produced[1].contains("step summarize#1"))

        let reindexed = try await sluice(["runs", "--store", store, "reindex"])
        #expect(reindexed.status == 0 && reindexed.output.contains("indexed \(runs.count) run(s)"))
    }

    /// `--shard I/N`: two materializers, each with a store of its own, split the lineage partitions by number; every
    /// answered run is in exactly one store, and a restart resumes at its shard's committed offsets.
    @Test func shardsSplitThePartitionsBetweenStores() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "BATCH"])
        let specs: [[String: Any]] = (0..<60).map { ["id": "s\($0)", "value": ["text": "shard \($0)"]] }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0 && responses.count == 60)
        #expect(await worker.stop() == 0)

        let stores = [try temporaryStore(), try temporaryStore()]
        defer { for store in stores { try? FileManager.default.removeItem(atPath: store) } }
        var materializers: [ServiceProcess] = []
        for (index, store) in stores.enumerated() {
            materializers.append(try await cluster.startMaterializer(store: store, ["--shard", "\(index)/2"]))
        }
        let deadline = ContinuousClock.now + .seconds(120)
        while try stores.map({ try storedRuns($0).count }).reduce(0, +) < 60, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        for materializer in materializers { #expect(await materializer.stop() == 0) }

        let answered = Set(responses.compactMap { ($0["value"] as? [String: Any])?["run_id"] as? String })
        let held = try stores.map { try storedRuns($0).compactMap { $0["run_id"] as? String } }
        #expect(held[0].count + held[1].count == 60 && Set(held[0] + held[1]) == answered)
        #expect(!held[0].isEmpty && !held[1].isEmpty)
        for (index, store) in stores.enumerated() {
            let partitions = Set(
                try storeFiles(store).keys.filter { $0.hasSuffix(".jsonl") }.compactMap {
                    $0.split(separator: "/").last?.split(separator: "-").first
                })
            #expect(partitions == (index == 0 ? ["p0", "p2"] : ["p1", "p3"]), "\(store): \(partitions)")
        }

        // Restarted, shard 0 reads nothing again: its partitions' committed offsets are at their ends.
        let again = try await cluster.startMaterializer(store: stores[0], ["--shard", "0/2"])
        try await Task.sleep(for: .seconds(3))
        #expect(try await again.healthObject()?["events"] as? Int == 0)
        #expect(await again.stop() == 0)
        await cluster.stop()
    }

    /// A request delivered again after its first run finished (a worker died before committing): two lines with the
    /// same run id, both stored, and `sluice runs show --delivery N` picks either.
    @Test func aRunDeliveredTwiceIsStoredTwiceAndShownByDelivery() async throws {
        let cluster = try await ServingCluster.start()
        let store = try temporaryStore()
        defer { try? FileManager.default.removeItem(atPath: store) }
        try await cluster.produce(
            deliveredRun(worker: "first-worker", at: 1_000) + deliveredRun(worker: "second-worker", at: 9_000),
            to: cluster.lineage)
        let materializer = try await cluster.startMaterializer(store: store)
        #expect(try await waitForRuns(store, 2))
        #expect(await materializer.stop() == 0)

        func show(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            let process = try ChildProcess(sluiceExecutable, ["runs", "--store", store, "show", "twice"] + arguments)
            let output = try await process.readRest()
            return (await process.wait(), output)
        }
        let last = try await show([])
        #expect(
            last.status == 0 && last.output.contains("delivery 2 of 2 stored") && last.output.contains("second-worker"))
        let first = try await show(["--delivery", "1"])
        #expect(
            first.status == 0 && first.output.contains("delivery 1 of 2 stored")
                && first.output.contains("first-worker"))
        #expect(try await show(["--delivery", "3"]).status != 0)
        await cluster.stop()
    }

    /// The events of one finished delivery of the run `twice`, keyed by its id, as produce_lines.py reads them.
    private func deliveredRun(worker: String, at timestamp: Int) -> [String] {
        let common = #""run_id":"twice","pipeline":"text-stats","request_id":"r-twice","capture":"BATCH","attempt":1"#
        let started =
            #"{"v":1,"event_id":"twice/1/0","seq":0,"type":"run_started","ts":\#(timestamp),"# + common
            + #","configuration":{},"input":null,"traceparent":null,"worker":"\#(worker)"}"#
        let completed =
            #"{"v":1,"event_id":"twice/1/1","seq":1,"type":"run_completed","ts":\#(timestamp + 500),"# + common
            + #","status":"completed","duration_us":500,"output":null}"#
        return ["twice\t\(started)", "twice\t\(completed)"]
    }

    @Test func aMissingLineageTopicIsAStartUpErrorNamingIt() async throws {
        let broker = try await BrokerProcess.start(["--topic", "text-stats.requests:2"])
        let store = try temporaryStore()
        defer { try? FileManager.default.removeItem(atPath: store) }
        let process = try ChildProcess(
            sluiceExecutable, ["materialize", "--brokers", broker.bootstrapServers, "--store", store])
        #expect(await process.wait() == 69, "unavailable, not a usage error: \(process.standardError)")
        #expect(!process.standardError.contains("USAGE"), "\(process.standardError)")
        #expect(
            process.standardError.contains("lineage topic sluice.lineage does not exist"), "\(process.standardError)")
        _ = await broker.stop()
    }

    /// One complete run whose pipeline name tries to climb out of the store.
    private func hostileRun() -> String {
        let common =
            #""run_id":"hostile","pipeline":"../../../escape\u0000","request_id":null,"capture":"BATCH","attempt":1"#
        let started =
            #"{"v":1,"event_id":"hostile/1/0","seq":0,"type":"run_started","ts":1000,"#
            + common + #","configuration":{},"input":null,"traceparent":null}"#
        let completed =
            #"{"v":1,"event_id":"hostile/1/1","seq":1,"type":"run_completed","ts":2000,"#
            + common + #","status":"completed","duration_us":1000,"output":null}"#
        return "hostile\t\(started)\nhostile\t\(completed)"
    }
}
