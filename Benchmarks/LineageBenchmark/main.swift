// The materializer's fold-and-write path on its own, without Kafka: lineage events of text-stats-like runs, as the
// workers publish them (JSON), decoded, folded and appended to a store in a temporary directory, synced and indexed
// every 4096 records as `sluice materialize` does. docs/benchmarks.md has the command and the figures.
//
// usage: lineage-benchmark [RUNS] [--no-index] (default 100000 runs, about 900 000 events; --no-index leaves the
// index out, to tell its cost apart)

import Foundation
import Lineage
import Logging
import Pipelines

enum Document {
    struct Request: Codable, Sendable { var text: String }
    struct Summary: Codable, Sendable {
        var tokens: Int
        var first: String?
        var last: String?
    }
    static let tokenize = Step("tokenize") { (request: Request) in request.text.split(separator: " ").map(String.init) }
    static let count = Step("count") { (tokens: [String]) in
        RunContext.current?.addMetadata(["tokens": .int(Int64(tokens.count))])
        return tokens.count
    }
    static let summarize = Step("summarize") { (tokens: [String], count: Int) in
        Summary(tokens: count, first: tokens.first, last: tokens.last)
    }
    static let pipeline = Pipeline("text-stats") { (request: Request) in
        let tokens = try await tokenize(request)
        return try await summarize(tokens, count(tokens))
    }
}

let runs = CommandLine.arguments.dropFirst().compactMap { Int($0) }.first ?? 100_000
let indexing = !CommandLine.arguments.contains("--no-index")
// The events of a few distinct runs, re-keyed for every run: generating a million events through the runner would
// measure the runner.
let tracker = RecordingTracker()
let runner = PipelineRunner(tracker: tracker)
for index in 0..<16 {
    _ = await runner.run(
        Document.pipeline, Document.Request(text: "the quick brown fox \(index) jumps over the lazy dog"),
        options: RunOptions(capture: .realtime, runID: "template\(index)"))
}
let templates = (0..<16).map { tracker.events(ofRun: "template\($0)") }
var records: [[UInt8]] = []
records.reserveCapacity(runs * templates[0].count)
for run in 0..<runs {
    for var event in templates[run % 16] {
        event.runID = String(format: "%032x", run)
        records.append(event.json())
    }
}
let bytes = records.reduce(0) { $0 + $1.count }
let root = NSTemporaryDirectory() + "lineage-benchmark-\(UUID().uuidString)"
defer { try? FileManager.default.removeItem(atPath: root) }

let clock = ContinuousClock()
let started = clock.now
var logger = Logger(label: "lineage-benchmark")
logger.logLevel = .error
let partition = try PartitionMaterializer(root: root, partition: 0, logger: logger)
let index = indexing ? try StoreIndex(root: root) : nil
var counts = FoldCounts()
for (offset, record) in records.enumerated() {
    try partition.take(record, at: Int64(offset), counts: &counts)
    if offset % 4096 == 4095 {
        let appended = try partition.sync()
        try index?.catchUp(segments: appended)
    }
}
try index?.catchUp(segments: partition.sync())
let written = counts.runsWritten
let elapsed = started.duration(to: clock.now)
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
print(
    "\(records.count) events (\(bytes / records.count) bytes each, \(written) runs) in \(String(format: "%.2f", seconds)) s: "
        + "\(Int(Double(records.count) / seconds)) events/s, \(String(format: "%.2f", seconds * 1e6 / Double(records.count))) µs per event"
)
