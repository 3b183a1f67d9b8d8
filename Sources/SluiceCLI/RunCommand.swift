import ArgumentParser
import Foundation
import Pipelines

/// `sluice run`: runs a pipeline in process, without Kafka, and prints each result and, if asked, its lineage events.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a pipeline in process on JSON inputs and print the results (and the lineage events).",
        discussion: """
            Each input is the pipeline's input as JSON: --data, or one per line of standard input. For each, one \
            JSON line: {"pipeline", "status", "output", "error", "run_id", "capture", "duration_ms"}; with --events, \
            then the run's lineage events as one JSON line: a lineage record v2, as a worker publishes a BATCH run. The resolved \
            capture configuration is printed to standard error first. Exits 1 if any run failed.
            """
    )

    @Option(name: .long, help: "The pipeline to run.")
    var pipeline: String

    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: "One input as JSON; without it, each line of standard input is one.")
    var data: String?

    @Flag(name: .long, help: "Print each run's lineage events, as one lineage record, after its result.")
    var events = false

    func run() async throws {
        let pipeline = try PipelineRegistry.pipeline(named: pipeline)
        let resolved = try capture.resolve(for: pipeline)
        printError("\(pipeline.name): capture \(resolved.configuration.summary) from \(resolved.source.rawValue)")

        let tracker = RecordingTracker()
        let runner = PipelineRunner(tracker: tracker)
        var failures = 0
        func handle(_ input: String) async {
            let result = await pipeline.run(
                json: Array(input.utf8), runner: runner, options: RunOptions(capture: resolved.configuration))
            if case .failure = result.outcome { failures += 1 }
            print(String(decoding: Self.resultLine(result, pipeline: pipeline.name), as: UTF8.self))
            if events, let runID = result.runID {
                let run = tracker.events(ofRun: runID)
                if !run.isEmpty { print(String(decoding: LineageRecord.encode(run), as: UTF8.self)) }
            }
        }
        if let data {
            await handle(data)
        } else {
            while let line = readLine(strippingNewline: true) {
                if line.allSatisfy(\.isWhitespace) { continue }
                await handle(line)
            }
        }
        if failures > 0 { throw ExitCode(1) }
    }

    /// The result as one JSON object, shaped like the worker's response.
    static func resultLine(_ result: RunResult<[UInt8]>, pipeline: String) -> [UInt8] {
        var writer = JSONWriter()
        writer.object { out in
            out.field("pipeline", pipeline)
            switch result.outcome {
            case .success(let output):
                out.field("status", "ok")
                out.key("output")
                out.raw(output)
                out.key("error")
                out.null()
            case .failure(let error):
                out.field("status", "error")
                out.key("output")
                out.null()
                out.key("error")
                out.object { detail in
                    detail.field("code", error.code)
                    detail.field("message", error.message)
                    detail.field("step", error.step)
                }
            }
            out.field("run_id", result.runID)
            out.field("capture", result.capture.label)
            out.key("duration_ms")
            out.milliseconds(micros: result.durationMicros)
        }
        return writer.bytes
    }

    private func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
