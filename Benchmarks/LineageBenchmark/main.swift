// The materializer's fold-and-write path on its own, without Kafka: lineage records of text-stats-like runs, as
// BATCH workers publish them (one record of 9 events per run), decoded, folded and appended to a store in a temporary directory, synced and indexed
// every 4096 records as `sluice materialize` does. docs/benchmarks.md has the command and the figures.
//
// usage: lineage-benchmark [RUNS] [--no-index] (default 100000 runs, about 900 000 events; --no-index leaves the
// index out, to tell its cost apart)
//        lineage-benchmark [RUNS] --produce BOOTSTRAP [TOPIC]: produce the same events to a lineage topic (default
// sluice.lineage), keyed by run id as workers do, instead: the backlog scripts/materialize-benchmark.sh times.

import Foundation
import Kafka
import Lineage
import Logging
import Pipelines
import Synchronization

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
var keys: [[UInt8]] = []
records.reserveCapacity(runs)
for run in 0..<runs {
    let runID = String(format: "%032x", run)
    records.append(
        LineageRecord.encode(
            templates[run % 16].map { event in
                var event = event
                event.runID = runID
                return event
            }))
    keys.append(Array(runID.utf8))
}
let events = runs * templates[0].count
let bytes = records.reduce(0) { $0 + $1.count }
var logger = Logger(label: "lineage-benchmark")
logger.logLevel = .error

if let flag = CommandLine.arguments.firstIndex(of: "--produce"), flag + 1 < CommandLine.arguments.count {
    let arguments = CommandLine.arguments
    let topic = flag + 2 < arguments.count ? arguments[flag + 2] : "sluice.lineage"
    let producer = try KafkaProducer(
        configuration: KafkaConfiguration([
            "bootstrap.servers": arguments[flag + 1], "linger.ms": "20", "batch.size": "1000000",
            "queue.buffering.max.messages": "1000000", "queue.buffering.max.kbytes": "1048576",
        ]),
        logger: logger)
    let failures = Mutex(0)
    for (key, value) in zip(keys, records) {
        try await producer.send(OutgoingMessage(topic: topic, key: key, value: value)) { result in
            if case .failure = result { failures.withLock { $0 += 1 } }
        }
    }
    try await producer.flush(timeout: .seconds(120))
    await producer.close()
    print(
        "produced \(records.count) records of \(events) events (\(bytes / events) bytes per event, \(runs) runs) to \(topic); failed \(failures.withLock { $0 })"
    )
    exit(failures.withLock { $0 } == 0 ? 0 : 1)
}
let root = NSTemporaryDirectory() + "lineage-benchmark-\(UUID().uuidString)"
defer { try? FileManager.default.removeItem(atPath: root) }

/// The process's CPU time (user and system) in seconds: steadier than the wall clock on a shared machine.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
    return user + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

let clock = ContinuousClock()
let started = clock.now
let cpuStarted = cpuSeconds()
let partition = try PartitionMaterializer(root: root, partition: 0, logger: logger)
let index = indexing ? try StoreIndex(root: root) : nil
var counts = FoldCounts()
for (offset, record) in records.enumerated() {
    try partition.take(record, at: Int64(offset), counts: &counts)
    if offset % 4096 == 4095 {
        let appended = try partition.sync()
        try index?.add(appended)
    }
}
try index?.add(partition.sync())
let written = counts.runsWritten
let elapsed = started.duration(to: clock.now)
let cpu = cpuSeconds() - cpuStarted
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
print(
    "\(events) events in \(records.count) records (\(bytes / events) bytes per event, \(written) runs) in \(String(format: "%.2f", seconds)) s: "
        + "\(Int(Double(events) / seconds)) events/s, \(String(format: "%.2f", seconds * 1e6 / Double(events))) µs per event "
        + "(CPU \(String(format: "%.2f", cpu * 1e6 / Double(events))) µs per event)"
)
