// The runner's own overhead per step, in process: `swift run -c release pipelines-benchmark`.
// `pipelines-benchmark --records N` measures only what a tracker does with N runs' events (one lineage record per
// run); `--critical-path N` only a REALTIME run's critical path and a request's work, memory-only and REALTIME, N runs
// a round: loops to `perf record` on their own; `--batching LANES` the digits pipeline with `predict` batched and not,
// LANES runs at a time. Instruction counts, for callgrind: `record-probe`.
//
// Each figure is the median of several rounds of many runs of a 3-step pipeline whose steps do almost nothing, so
// what is measured is the runner and the tracking on the critical path, not the work. docs/benchmarks.md has the
// figures and how to read them.
import Examples
import Foundation
import Kafka
import Pipelines
import Serving
import Synchronization

struct Document: Codable, Sendable {
    var text: String
}

struct Stats: Codable, Sendable {
    var tokens: Int
    var first: String?
    var last: String?
}

let tokenize = Step("tokenize") { (document: Document) in document.text.split(separator: " ").map(String.init) }
let count = Step("count") { (tokens: [String]) in tokens.count }
let summarize = Step("summarize") { (tokens: [String]) in
    Stats(tokens: tokens.count, first: tokens.first, last: tokens.last)
}
let textStats = Pipeline("text-stats") { (document: Document) in
    let tokens = try await tokenize(document)
    _ = try await count(tokens)
    return try await summarize(tokens)
}

/// The same work as plain async functions: the baseline the runner is compared with.
@inline(never) func plainTokenize(_ document: Document) async throws -> [String] {
    document.text.split(separator: " ").map(String.init)
}
@inline(never) func plainCount(_ tokens: [String]) async throws -> Int { tokens.count }
@inline(never) func plainSummarize(_ tokens: [String]) async throws -> Stats {
    Stats(tokens: tokens.count, first: tokens.first, last: tokens.last)
}
@inline(never) func plainPipeline(_ document: Document) async throws -> Stats {
    let tokens = try await plainTokenize(document)
    _ = try await plainCount(tokens)
    return try await plainSummarize(tokens)
}

/// Takes events on the critical path as a real tracker does (hand-off under a lock), and drops them in batches.
final class HandOffTracker: Tracker {
    private let buffer = Mutex<[PendingEvent]>([])
    func record(_ event: PendingEvent) {
        buffer.withLock { buffer in
            buffer.append(event)
            if buffer.count >= 4096 { buffer.removeAll(keepingCapacity: true) }
        }
    }
    func flush(runID: String) async throws {}
}

let steps = 3
let input = Document(text: "the quick brown fox jumps over the lazy dog")
let runsPerRound = 100_000
let rounds = 7

/// Nanoseconds per run: the median over `rounds`.
func measure(_ name: String, runs: Int = runsPerRound, _ body: () async throws -> Void) async rethrows -> Double {
    for _ in 0..<1000 { try await body() }
    var samples: [Double] = []
    for _ in 0..<rounds {
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<runs { try await body() }
        let elapsed = start.duration(to: clock.now)
        samples.append(nanoseconds(elapsed) / Double(runs))
    }
    let median = samples.sorted()[rounds / 2]
    print(name.padding(toLength: 44, withPad: " ", startingAt: 0), String(format: "%9.0f ns/run", median))
    return median
}

func format(_ value: Double) -> String { String(format: "%.0f", value) }

/// Keeps every pending event, to measure what a tracker does with them later.
final class KeepingTracker: Tracker {
    let events = Mutex<[PendingEvent]>([])
    func record(_ event: PendingEvent) { events.withLock { $0.append(event) } }
    func flush(runID: String) async throws {}
}

/// The events of `runCount` REALTIME runs, grouped by run.
func pendingRuns(_ runCount: Int) async -> [[PendingEvent]] {
    let realtime = RunOptions(capture: .realtime)
    let keeping = KeepingTracker()
    for _ in 0..<runCount { _ = await PipelineRunner(tracker: keeping).run(textStats, input, options: realtime) }
    var runs: [[PendingEvent]] = []
    for event in keeping.events.withLock({ $0 }) {
        if runs.last?.first?.runID == event.runID { runs[runs.count - 1].append(event) } else { runs.append([event]) }
    }
    return runs
}

/// `duration` in nanoseconds.
func nanoseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1e9 + Double(duration.components.attoseconds) / 1e9
}

/// What a tracker does off the critical path with runs' events: one lineage record per run (as a BATCH worker
/// publishes it), its artifacts resolved (serialised, hashed, matched to producers) as the record is written. The
/// median over `rounds` rounds of `runCount` fresh runs each. Returns nanoseconds per event for all of it and for the
/// writing alone, bytes per event, events per run.
func measureRecords(runs runCount: Int, rounds: Int) async -> (Double, Double, Int, Int) {
    let clock = ContinuousClock()
    var total: [Double] = []
    var writing: [Double] = []
    var bytes = 0
    var events = 0
    for _ in 0..<rounds {
        let runs = await pendingRuns(runCount)
        events = runs.reduce(0) { $0 + $1.count }
        bytes = 0
        let started = clock.now
        for run in runs { bytes += LineageRecord.encode(run).count }
        total.append(nanoseconds(started.duration(to: clock.now)) / Double(events))
        // The writing alone: the same records from events resolved beforehand.
        let resolvedRuns = runs.map { run in run.map { $0.resolve() } }
        let writingStarted = clock.now
        for run in resolvedRuns { _ = LineageRecord.encode(run).count }
        writing.append(nanoseconds(writingStarted.duration(to: clock.now)) / Double(events))
    }
    return (total.sorted()[rounds / 2], writing.sorted()[rounds / 2], bytes / events, events / runCount)
}

/// A memory-only worker's own work on one request, without Kafka: reading the request's headers, decoding its input,
/// running `text-stats` and writing the response's record, for the referee's load generator's request (its default
/// 200-byte payload; `../shared/bench/loadgen.c`).
func measureRequestWork(_ runner: PipelineRunner, capture: CaptureConfiguration = .memoryOnly) async -> Double {
    let id = "0123abcd-1234"
    let text = (0..<29).map { ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "again"][$0 % 10] }
    let payload = #"{"id":"\#(id)","seq":1234,"text":"\#(text.joined(separator: " "))","meta":{"src":"loadgen"}}"#
    let message = KafkaMessage(
        topic: "bench.requests", partition: 3, offset: 12_345, key: Array(id.utf8), value: Array(payload.utf8),
        headers: [KafkaHeader(WireProtocol.Header.requestID, id)])
    let pipeline = AnyPipeline(TextStats.pipeline)
    let name = capture.isMemoryOnly ? "a request's work in a memory-only worker" : "a request's work, \(capture.label)"
    return await measure(name) {
        let request = Request(message)
        let result = await pipeline.run(
            json: message.value ?? [], runner: runner,
            options: RunOptions(capture: capture, requestID: request.requestID))
        guard case .success(let output) = result.outcome else { fatalError("text-stats failed: \(result.outcome)") }
        let response = Response(
            requestID: request.requestID, pipeline: pipeline.name, output: output, error: nil, runID: nil,
            capture: "MEMORY", durationMicros: 10)
        _ = response.message(topic: "bench.responses", key: message.key)
    }
}

/// Everything runs in this nonisolated function: top-level code is on the main actor, and every call from there into
/// the pipeline would hop threads.
func runBenchmarks() async throws {
    let runner = PipelineRunner(tracker: HandOffTracker())
    let memoryOnly = RunOptions(capture: .memoryOnly)
    let realtime = RunOptions(capture: .realtime)

    print("3-step text-stats pipeline, \(rounds) rounds of \(runsPerRound) runs, median")
    let plain = try await measure("plain async functions") { _ = try await plainPipeline(input) }
    let direct = try await measure("Pipeline.run (untracked)") { _ = try await textStats.run(input) }
    let memory = await measure("runner, memory-only") { _ = await runner.run(textStats, input, options: memoryOnly) }
    let tracked = await measure("runner, REALTIME (critical path)") {
        _ = await runner.run(textStats, input, options: realtime)
    }

    let requestWork = await measureRequestWork(runner)

    let (perEvent, writingPerEvent, bytes, eventsPerRun) = await measureRecords(runs: 5_000, rounds: rounds)

    print("")
    print("memory-only overhead per step:   \(format((memory - plain) / Double(steps))) ns over a plain async call")
    print("Pipeline.run overhead per step:  \(format((direct - plain) / Double(steps))) ns")
    print(
        "REALTIME critical path per step: \(format((tracked - plain) / Double(steps))) ns (\(eventsPerRun) events a run)"
    )
    print(
        "a memory-only worker's own work:  \(format(requestWork)) ns a request (headers, input, text-stats, response)")
    print(
        "off the critical path:           \(format(perEvent)) ns per event to resolve and write (\(bytes) bytes), of which \(format(writingPerEvent)) ns to write"
    )
}

/// Only the REALTIME runs' critical path, `count` runs a round, and a request's work memory-only and REALTIME
/// (nonisolated, as ``runBenchmarks()``).
func measureCriticalPath(runs count: Int) async {
    let runner = PipelineRunner(tracker: HandOffTracker())
    let realtime = RunOptions(capture: .realtime)
    _ = await measure("runner, REALTIME (critical path)", runs: count) {
        _ = await runner.run(textStats, input, options: realtime)
    }
    _ = await measureRequestWork(runner)
    _ = await measureRequestWork(runner, capture: .realtime)
}

/// `digits` (predict batched) and `digits-unbatched`, memory-only, in process: `lanes` runs in flight at once, as a
/// worker's lanes, `runs` in all. Prints the wall-clock and CPU nanoseconds per run of each (the median of `rounds`).
func measureBatching(lanes: Int, runs: Int) async {
    let image = Digits.Image(pixels: (0..<64).map { Double(($0 * 7) % 17) })
    func cpuNanoseconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
        return Double(time.tv_sec) * 1e9 + Double(time.tv_nsec)
    }
    for (name, pipeline) in [("digits", Digits.pipeline), ("digits-unbatched", Digits.unbatched)] {
        var wall: [Double] = []
        var cpu: [Double] = []
        for _ in 0..<rounds {
            let clock = ContinuousClock()
            let started = clock.now
            let cpuStarted = cpuNanoseconds()
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<runs {
                    if index >= lanes { await group.next() }
                    group.addTask { _ = try? await pipeline.run(image) }
                }
            }
            wall.append(nanoseconds(started.duration(to: clock.now)) / Double(runs))
            cpu.append((cpuNanoseconds() - cpuStarted) / Double(runs))
        }
        print(
            "\(name), \(lanes) at a time".padding(toLength: 44, withPad: " ", startingAt: 0),
            String(format: "%9.0f ns/run wall %9.0f ns/run CPU", wall.sorted()[rounds / 2], cpu.sorted()[rounds / 2]))
    }
}

if let flag = CommandLine.arguments.firstIndex(of: "--batching"), flag + 1 < CommandLine.arguments.count,
    let lanes = Int(CommandLine.arguments[flag + 1])
{
    await measureBatching(lanes: lanes, runs: 20_000)
} else if CommandLine.arguments.contains("--critical-path"), let count = Int(CommandLine.arguments.last ?? "") {
    await measureCriticalPath(runs: count)
} else if let flag = CommandLine.arguments.firstIndex(of: "--records"),
    let count = Int(CommandLine.arguments.last ?? ""),
    flag + 1 < CommandLine.arguments.count
{
    let (perEvent, _, bytes, _) = await measureRecords(runs: count, rounds: 1)
    print("\(count) runs: \(format(perEvent)) ns per event to resolve and write (\(bytes) bytes)")
} else {
    try await runBenchmarks()
}
