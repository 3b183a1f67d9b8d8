import Foundation
import Testing

/// Runs `sluice run` to its end and returns its exit status, its standard output as parsed JSON lines, and stderr.
private func sluiceRun(
    _ arguments: [String], environment: [String: String] = [:]
) async throws -> (status: Int32, lines: [[String: Any]], stderr: String) {
    let process = try ChildProcess(sluiceExecutable, ["run"] + arguments, environment: environment)
    let output = try await process.readRest()
    let status = await process.wait()
    let lines = try output.split(separator: "\n").map { line in
        try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }
    return (status, lines, process.standardError)
}

@Suite("sluice run: a pipeline in process, its result and its lineage events")
struct RunCommandTests {
    let input = #"{"text": "the quick brown fox"}"#

    @Test(arguments: [
        ("BATCH", "BATCH", 9), ("REALTIME", "REALTIME", 9), ("OFF", "OFF", 8),
        (#"{"mode": "REALTIME", "runs": "off"}"#, "MEMORY", 0),
    ])
    func eachModePrintsTheResultAndItsEvents(capture: String, label: String, events: Int) async throws {
        let (status, lines, stderr) = try await sluiceRun(
            ["--pipeline", "text-stats", "--capture", capture, "--data", input, "--events"])
        #expect(status == 0, "\(stderr)")
        let result = try #require(lines.first)
        #expect(result["status"] as? String == "ok")
        #expect(result["capture"] as? String == label)
        let output = try #require(result["output"] as? [String: Any])
        #expect(
            output["tokens"] as? Int == 4 && output["first"] as? String == "the" && output["last"] as? String == "fox")
        // The run's events as one lineage record v2.
        #expect(lines.count == (events > 0 ? 2 : 1))
        let record = lines.count == 2 ? lines[1] : [:]
        let recordEvents = record["events"] as? [[String: Any]] ?? []
        #expect(recordEvents.count == events)
        let types = recordEvents.compactMap { $0["type"] as? String }
        if events > 0 {
            #expect(record["v"] as? Int == 2)
            #expect(types.first == "run_started" && types.last == "run_completed")
            #expect(recordEvents.compactMap { $0["seq"] as? Int } == Array(0..<events))
            #expect(record["run_id"] as? String == result["run_id"] as? String)
        } else {
            #expect(result["run_id"] is NSNull)
        }
        #expect(types.contains("metadata") == (events == 9))
        #expect(stderr.contains("capture \(label)"))
    }

    @Test func eachLineOfStandardInputIsOneRun() async throws {
        let shell = try ChildProcess(
            "/bin/sh",
            [
                "-c", "printf '%s\\n' '{\"text\":\"a b\"}' '' 'not json' | \"$0\" run --pipeline text-stats",
                sluiceExecutable,
            ])
        let lines = try await shell.readRest().split(separator: "\n")
        #expect(await shell.wait() == 1)
        #expect(lines.count == 2)
        #expect(lines[0].contains(#""status":"ok""#))
        #expect(lines[1].contains(#""code":"invalid_input""#))
    }

    @Test func badInputIsAnInvalidInputResult() async throws {
        let (status, lines, _) = try await sluiceRun(["--pipeline", "text-stats", "--data", #"{"text": 3}"#])
        #expect(status == 1)
        let error = try #require(lines.first?["error"] as? [String: Any])
        #expect(error["code"] as? String == "invalid_input")
        #expect(error["message"] as? String == "'text' is not of type String")
    }

    @Test func captureComesFromTheStrongestSource() async throws {
        let file = NSTemporaryDirectory() + "sluice-run-config-\(UUID().uuidString).yaml"
        try "capture:\n  mode: OFF\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let environment = ["SLUICE_CAPTURE_MODE": "REALTIME", "SLUICE_SERVING_CAPTURE_DEFAULT": "CUSTOM"]
        let cases: [([String], [String: String], String, String)] = [
            (["--capture", "BATCH", "--config", file], environment, "BATCH", "--capture"),
            (["--config", file], environment, "OFF", "run-config YAML"),
            ([], environment, "REALTIME", "SLUICE_CAPTURE_MODE"),
            ([], ["SLUICE_SERVING_CAPTURE_DEFAULT": "CUSTOM"], "CUSTOM", "SLUICE_SERVING_CAPTURE_DEFAULT"),
            ([], [:], "BATCH", "the default (BATCH)"),
        ]
        for (arguments, environment, label, source) in cases {
            let (status, lines, stderr) = try await sluiceRun(
                ["--pipeline", "text-stats", "--data", input] + arguments, environment: environment)
            #expect(status == 0)
            #expect(lines.first?["capture"] as? String == label)
            #expect(stderr.contains("from \(source)"), "\(stderr)")
        }
    }

    @Test func badCaptureValuesAndNamesAreStartUpErrors() async throws {
        let file = NSTemporaryDirectory() + "sluice-run-config-\(UUID().uuidString).yaml"
        try "capture: {logs: loud}\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let cases: [([String], [String: String], String)] = [
            (["--capture", "FAST"], [:], "'FAST'"),
            (["--config", file], [:], "logs \"loud\" from run-config YAML '\(file)'"),
            (["--config", "/no/such/file.yaml"], [:], "/no/such/file.yaml"),
            ([], ["SLUICE_CAPTURE_MODE": "REALTIM"], "'REALTIM' from SLUICE_CAPTURE_MODE"),
        ]
        for (arguments, environment, named) in cases {
            let (status, lines, stderr) = try await sluiceRun(
                ["--pipeline", "text-stats", "--data", input] + arguments, environment: environment)
            #expect(status != 0)
            #expect(lines.isEmpty)
            #expect(stderr.contains(named), "\(stderr)")
        }
        let (status, _, stderr) = try await sluiceRun(["--pipeline", "word-count", "--data", input])
        #expect(status != 0)
        #expect(stderr.contains("no pipeline named 'word-count'") && stderr.contains("text-stats"))
    }
}
