import ArgumentParser
import Foundation
import Pipelines
import Serving

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

    @OptionGroup(title: "Logging") var logging: LogOptions

    @Option(name: .long, help: "One input as JSON; without it, each line of standard input is one.")
    var data: String?

    @Flag(name: .long, help: "Print each run's lineage events, as one lineage record, after its result.")
    var events = false

    func run() async throws {
        try logging.bootstrap()
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

    /// The result as one JSON object: the worker's response object, with no request id.
    static func resultLine(_ result: RunResult<[UInt8]>, pipeline: String) -> [UInt8] {
        let output: [UInt8]?
        let error: ErrorDetail?
        switch result.outcome {
        case .success(let bytes): (output, error) = (bytes, nil)
        case .failure(let failure): (output, error) = (nil, failure)
        }
        return Response.json(
            requestID: nil, pipeline: pipeline, output: output, error: error, runID: result.runID,
            capture: result.capture.label, durationMicros: result.durationMicros)
    }

    private func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
