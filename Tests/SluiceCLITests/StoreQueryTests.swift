import Foundation
import Hummingbird
import Synchronization
import Testing

/// What a run looks like to each reader: its id, attempt, status and steps (name and status, in order).
private struct ReadRun: Hashable {
    var runID: String
    var attempt: Int
    var status: String
    var steps: [[String]]

    init(_ object: [String: Any]) throws {
        runID = try #require(object["run_id"] as? String)
        attempt = try #require(object["attempt"] as? Int)
        status = try #require(object["status"] as? String)
        steps = try #require(object["steps"] as? [[String: Any]]).map { step in
            [try #require(step["step"] as? String), try #require(step["status"] as? String)]
        }
    }
}

@Suite("The store read from outside: DuckDB and pandas read what sluice runs lists; OpenLineage takes its runs")
struct StoreQueryTests {
    /// The events of a run of text-stats whose `tokenize` step fails, started at `micros`, as produce_lines.py reads
    /// them (lineage records of version 1, one event each).
    private func failedRun(_ runID: String, at micros: Int64) -> [String] {
        let common =
            #""run_id":"\#(runID)","pipeline":"text-stats","request_id":null,"capture":"BATCH","attempt":1"#
        let step = #""step":"tokenize","step_run":"tokenize#1","version":1,"step_attempt":1"#
        let error = #"{"code":"step_failed","message":"no tokens","step":"tokenize"}"#
        let events = [
            #""seq":0,"type":"run_started","ts":\#(micros),"configuration":{},"input":null,"traceparent":null"#,
            #""seq":1,"type":"step_started","ts":\#(micros + 10),\#(step),"inputs":[]"#,
            #""seq":2,"type":"step_failed","ts":\#(micros + 20),\#(step),"duration_us":10,"error":\#(error),"retrying":false"#,
            #""seq":3,"type":"run_failed","ts":\#(micros + 30),"status":"failed","duration_us":30,"error":\#(error)"#,
        ]
        return events.enumerated().map { seq, event in
            #"\#(runID)\#t{"v":1,"event_id":"\#(runID)/1/\#(seq)",\#(common),\#(event)}"#
        }
    }

    @Test func duckDBAndPandasReadTheRunsStepsAndStatusesThatSluiceRunsLists() async throws {
        let cluster = try await ServingCluster.start()
        let store = try temporaryStore()
        defer { try? FileManager.default.removeItem(atPath: store) }
        let worker = try await cluster.startWorker(["--capture", "BATCH"])
        let specs: [[String: Any]] = (0..<30).map { ["id": "q\($0)", "value": ["text": "one two three \($0)"]] }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0 && responses.count == 30)
        #expect(await worker.stop() == 0)
        // Two failed runs on another day (2026-11-25, 10:00 and 11:00 UTC).
        try await cluster.produce(
            failedRun("failed-a", at: 1_795_600_800_000_000) + failedRun("failed-b", at: 1_795_604_400_000_000),
            to: cluster.lineage)
        let materializer = try await cluster.startMaterializer(store: store)
        #expect(try await waitForRuns(store, 32))
        #expect(await materializer.stop() == 0)

        func sluice(_ arguments: [String]) async throws -> String {
            let process = try ChildProcess(sluiceExecutable, ["runs", "--store", store] + arguments)
            let output = try await process.readRest()
            #expect(await process.wait() == 0, "\(arguments): \(process.standardError)")
            return output
        }
        let listed = try await sluice(["list", "--json", "--limit", "1000"]).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(listed.count == 32)
        let lines = try storedRuns(store)
        let expected = try Set(lines.map(ReadRun.init))
        #expect(
            Set(
                try listed.map {
                    [try #require($0["run_id"] as? String), "\($0["attempt"] ?? "")", "\($0["status"] ?? "")"]
                })
                == Set(expected.map { [$0.runID, "\($0.attempt)", $0.status] }))
        #expect(expected.filter { $0.status == "failed" }.map(\.runID).sorted() == ["failed-a", "failed-b"])

        // A run's tokens: produced by its tokenize, consumed by its count and summarize.
        let run = try #require(lines.first { ($0["run_id"] as? String)?.hasPrefix("failed") == false })
        let steps = try #require(run["steps"] as? [[String: Any]])
        let tokens = try #require((steps[0]["output"] as? [String: Any])?["sha256"] as? String)
        let reader = try ChildProcess(
            "/usr/bin/env",
            ["python3", pythonScript("query_store.py"), store, repositoryFile("docs/store.md"), tokens])
        let output = try await reader.readRest()
        #expect(await reader.wait(timeout: .seconds(120)) == 0, "\(reader.standardError)")
        let read = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        for engine in ["duckdb", "pandas"] {
            let runs = try #require(read[engine] as? [[String: Any]], "\(engine): \(read)")
            #expect(try Set(runs.map(ReadRun.init)) == expected, "\(engine)")
            #expect(runs.count == expected.count, "\(engine)")
        }

        let queries = try #require(read["queries"] as? [String: [[String]]])
        // Runs per status per hour: the failed runs' two hours, and the answered runs' hours from their start times.
        var perHour: [[String]: Int] = [
            ["2026-11-25 10:00:00+00:00", "failed"]: 1, ["2026-11-25 11:00:00+00:00", "failed"]: 1,
        ]
        for line in listed where line["status"] as? String == "completed" {
            let started = try #require(line["started_at"] as? String)
            perHour[
                [started.prefix(13).replacingOccurrences(of: "T", with: " ") + ":00:00+00:00", "completed"], default: 0] +=
                1
        }
        let counted = try #require(queries["runs per status per hour"])
        #expect(
            Dictionary(uniqueKeysWithValues: counted.map { ([$0[0], $0[1]], Int($0[2]) ?? -1) }) == perHour,
            "\(counted)")
        // p99 of each step's duration: one of its completed durations, no smaller than 98% of them.
        let p99 = try #require(queries["p99 of each step's duration"])
        #expect(p99.map { $0[0] } == ["count", "summarize", "tokenize"], "\(p99)")
        for row in p99 {
            let durations = lines.flatMap { ($0["steps"] as? [[String: Any]]) ?? [] }
                .filter { $0["step"] as? String == row[0] && $0["status"] as? String == "completed" }
                .compactMap { $0["duration_us"] as? Int }.sorted()
            #expect(row[2] == "\(durations.count)" && durations.count == 30)
            let value = try #require(Int(row[1]))
            #expect(durations.contains(value) && durations.filter { $0 <= value }.count * 100 >= 98 * durations.count)
        }
        // Which runs consumed the tokens: the same steps `sluice runs lineage` names.
        let consumers = try #require(queries["which runs consumed an artifact"])
        let runID = try #require(run["run_id"] as? String)
        #expect(consumers == [[runID, "1", "count#1"], [runID, "1", "summarize#1"]], "\(consumers)")
        let lineage = try await sluice(["lineage", tokens]).components(separatedBy: "consumed by:")
        #expect(lineage.count == 2 && lineage[1].contains("step count#1") && lineage[1].contains("step summarize#1"))
        await cluster.stop()

        try await exportsOpenLineage(store: store, lines: lines)
    }

    /// `sluice runs export --openlineage`: events that OpenLineage's schemas accept, a START and an end per run and
    /// per step run (a child of its run), artifacts versioned by their hash; POSTed, the same bytes, through a 503.
    private func exportsOpenLineage(store: String, lines: [[String: Any]]) async throws {
        let file = store + "-openlineage.jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let common = ["runs", "--store", store, "export", "--openlineage", "--kafka", "127.0.0.1:9092"]
        let export = try ChildProcess(sluiceExecutable, common + ["--output", file])
        #expect(await export.wait() == 0, "\(export.standardError)")
        let written = try String(contentsOfFile: file, encoding: .utf8)
        let validator = try ChildProcess(
            "/usr/bin/env",
            ["python3", pythonScript("validate_openlineage.py"), repositoryFile("Tests/SluiceCLITests/openlineage")],
            input: written)
        let report = try await validator.readRest()
        #expect(await validator.wait(timeout: .seconds(120)) == 0, "\(report) \(validator.standardError)")
        let steps = lines.reduce(0) { $0 + (($1["steps"] as? [Any])?.count ?? 0) }
        #expect(report.contains(#""events": \#(2 * lines.count + 2 * steps)"#), "\(report)")

        let events = try written.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        func runID(_ event: [String: Any]) -> String? { (event["run"] as? [String: Any])?["runId"] as? String }
        func facets(_ event: [String: Any]) -> [String: Any] {
            ((event["run"] as? [String: Any])?["facets"] as? [String: Any]) ?? [:]
        }
        func job(_ event: [String: Any]) -> String? { (event["job"] as? [String: Any])?["name"] as? String }
        let failed = events.filter { job($0) == "text-stats" && $0["eventType"] as? String == "FAIL" }
        #expect(failed.count == 2 && failed.allSatisfy { facets($0)["errorMessage"] != nil })
        let runs = events.filter { job($0) == "text-stats" }
        #expect(Set(runs.compactMap(runID)).count == lines.count)
        // Each step run is a child of its run's START.
        let starts = Set(runs.filter { $0["eventType"] as? String == "START" }.compactMap(runID))
        let children = events.filter { job($0)?.hasPrefix("text-stats.") == true }
        #expect(children.count == 2 * steps)
        #expect(
            children.allSatisfy { event in
                ((facets(event)["parent"] as? [String: Any])?["run"] as? [String: Any]).flatMap {
                    $0["runId"] as? String
                }
                .map(starts.contains) == true
            })
        // A completed run reads its request topic and writes its responses and lineage topics, and its output.
        let completed = try #require(runs.first { $0["eventType"] as? String == "COMPLETE" })
        let outputs = try #require(completed["outputs"] as? [[String: Any]])
        #expect(outputs.compactMap { $0["name"] as? String }.prefix(2) == ["text-stats.responses", "sluice.lineage"])
        #expect(outputs.first?["namespace"] as? String == "kafka://127.0.0.1:9092")
        let versions = Set(
            lines.flatMap { ($0["steps"] as? [[String: Any]]) ?? [] }.compactMap {
                ($0["output"] as? [String: Any])?["sha256"] as? String
            })
        let exported = Set(
            children.flatMap { ($0["outputs"] as? [[String: Any]]) ?? [] }.compactMap {
                (($0["facets"] as? [String: Any])?["version"] as? [String: Any])?["datasetVersion"] as? String
            })
        #expect(!versions.isEmpty && exported == versions)

        // The same events, POSTed one by one to an OpenLineage endpoint that fails the first time.
        let receiver = try await LineageReceiver.start(failing: 1)
        let post = try ChildProcess(sluiceExecutable, common + ["--url", receiver.endpoint])
        #expect(await post.wait() == 0, "\(post.standardError)")
        #expect(receiver.bodies == written.split(separator: "\n").map { Array($0.utf8) })
        #expect(receiver.refused == 1)
        receiver.stop()
        let refused = try ChildProcess(sluiceExecutable, common + ["--url", "ftp://nowhere"])
        #expect(await refused.wait() == 64)
    }

    /// `sluice materialize --openlineage-url`: every stored run reaches the endpoint, as `runs export` writes it,
    /// through an endpoint that fails, one that is down, and a `kill -9` while it is down.
    @Test func theMaterializerSendsEveryStoredRunToAnOpenLineageEndpointAtLeastOnce() async throws {
        let cluster = try await ServingCluster.start()
        let store = try temporaryStore()
        defer { try? FileManager.default.removeItem(atPath: store) }
        // Down at first: an event's attempts all fail, so the follower pauses and tries again.
        let receiver = try await LineageReceiver.start(failing: 0)
        receiver.setDown(true)
        defer { receiver.stop() }
        let follow = ["--openlineage-url", receiver.endpoint, "--openlineage-namespace", "serving"]
        let worker = try await cluster.startWorker(["--capture", "BATCH"])
        var materializer = try await cluster.startMaterializer(store: store, follow)

        /// The events `runs export` writes for the store's runs: what the endpoint must have received, each at least
        /// once.
        func exported() async throws -> Set<[UInt8]> {
            let export = try ChildProcess(
                sluiceExecutable,
                [
                    "runs", "--store", store, "export", "--openlineage", "--namespace", "serving", "--kafka",
                    cluster.bootstrap,
                ])
            let output = try await export.readRest()
            #expect(await export.wait() == 0, "\(export.standardError)")
            return Set(output.split(separator: "\n").map { Array($0.utf8) })
        }
        func waitForReceived(_ expected: Set<[UInt8]>) async throws -> Bool {
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                if Set(receiver.bodies) == expected { return true }
                try await Task.sleep(for: .milliseconds(200))
            }
            return false
        }

        let first: [[String: Any]] = (0..<20).map { ["id": "o\($0)", "value": ["text": "one two \($0)"]] }
        #expect(try await cluster.call(first).responses.count == 20)
        #expect(try await waitForRuns(store, 20))
        let firstEvents = try await exported()
        // A run of text-stats: its START and COMPLETE, and those of its three steps.
        #expect(firstEvents.count == 20 * 8)
        let deadline = ContinuousClock.now + .seconds(60)
        while !materializer.process.standardError.contains("trying again"), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(receiver.bodies.isEmpty && receiver.refused >= 5)
        receiver.setDown(false)
        #expect(
            try await waitForReceived(firstEvents), "\(receiver.bodies.count) \(materializer.process.standardError)")
        // Per lineage partition, how far each segment is sent: here, once nothing is left, to the end of each.
        try await materializer.waitUntilObject { $0["openlineage_backlog_bytes"] as? Int == 0 }
        let positionFiles = try FileManager.default.contentsOfDirectory(atPath: "\(store)/openlineage")
        #expect(!positionFiles.isEmpty && positionFiles.allSatisfy { $0.hasSuffix(".positions") }, "\(positionFiles)")
        for file in positionFiles {
            for line in try String(contentsOfFile: "\(store)/openlineage/\(file)", encoding: .utf8).split(
                separator: "\n")
            {
                let fields = line.split(separator: "\t")
                let size = try FileManager.default.attributesOfItem(atPath: "\(store)/\(fields[1])")[.size] as? Int
                #expect(fields.count == 2 && Int(fields[0]) == size, "\(line)")
            }
        }

        // Down: the runs are stored, not sent, and a kill -9 loses nothing: the restart sends them.
        receiver.setDown(true)
        let second: [[String: Any]] = (0..<20).map { ["id": "d\($0)", "value": ["text": "three four \($0)"]] }
        #expect(try await cluster.call(second).responses.count == 20)
        #expect(try await waitForRuns(store, 40))
        let health = try #require(try await materializer.healthObject())
        #expect((health["openlineage_backlog_bytes"] as? Int ?? 0) > 0, "\(health)")
        materializer.process.signal(SIGKILL)
        _ = await materializer.process.wait()
        receiver.setDown(false)
        materializer = try await cluster.startMaterializer(store: store, follow)
        let allEvents = try await exported()
        #expect(allEvents.count == 40 * 8)
        #expect(try await waitForReceived(allEvents), "\(receiver.bodies.count) \(materializer.process.standardError)")
        #expect(await materializer.stop() == 0)
        #expect(await worker.stop() == 0)
        await cluster.stop()

        // Not an http(s) URL: a start-up error naming it.
        let refused = try ChildProcess(
            sluiceExecutable,
            ["materialize", "--brokers", cluster.bootstrap, "--store", store, "--openlineage-url", "ftp://nowhere"])
        #expect(await refused.wait() == 64)
        #expect(refused.standardError.contains("--openlineage-url ftp://nowhere"), "\(refused.standardError)")
    }
}
