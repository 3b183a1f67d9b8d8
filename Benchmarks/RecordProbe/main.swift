// Instruction counts of a tracker's work per run, for `valgrind --tool=callgrind`: synchronous, since valgrind 3.19
// crashes in libdispatch as soon as Swift's concurrency starts. docs/benchmarks.md has the command and the counts.
//
// usage: record-probe [N] (default 10 000): writes the lineage record of the referee's text-stats request (as a
// REALTIME worker publishes it) N times from its events, then encodes and hashes its four artifact values
// canonically N times, as a tracker resolves them. Instructions per run = (total − N = 0 run) / N.
//        record-probe [N] --fold [--index]: what a materializer does with that record instead: N copies of it (each
// with a run id of its own) decoded, folded and appended to a store in a temporary directory by one
// `PartitionMaterializer`, synced every 4 096 records, and with `--index` indexed.
//        record-probe [N] --request: what a worker does with the referee's text-stats request before the pipeline: its
// JSON decoded into the pipeline's input type N times (`JSONValueDecoder`, which shares the materializer's tape).
import Examples
import Foundation
import Lineage
import Logging
import Pipelines

/// `sluice run --pipeline text-stats --capture REALTIME --events` on the load generator's 200-byte request.
let record = #"""
    {"v":2,"run_id":"e2f9cb94a68279390000000000000001","pipeline":"text-stats","request_id":null,"capture":"REALTIME","attempt":1,"events":[{"seq":0,"type":"run_started","ts":1796052414063303,"configuration":{"artifacts":true,"caching":true,"flush_on_step_end":false,"inline_limit":4096,"logs":"all","metadata":true,"mode":"REALTIME","persistence":"durable","runs":"on","wait_for_tracking":false},"input":{"id":"input","type":"Request","sha256":"fd7ff65fcc29064bf2e668f24b708d5ef83ef93cb3537d988b3cd39bf03d3f16","size":154,"value":{"text":"the quick brown fox jumps over a lazy dog again the quick brown fox jumps over a lazy dog again the quick brown fox jumps over a lazy dog again"}},"traceparent":null,"worker":null},{"seq":1,"type":"step_started","ts":1796052414063734,"step":"tokenize","step_run":"tokenize#1","version":1,"step_attempt":1,"inputs":[{"id":"tokenize#1/in0","type":"Request","sha256":"fd7ff65fcc29064bf2e668f24b708d5ef83ef93cb3537d988b3cd39bf03d3f16","size":154,"produced_by":"input"}]},{"seq":2,"type":"step_completed","ts":1796052414063746,"step":"tokenize","step_run":"tokenize#1","version":1,"step_attempt":1,"duration_us":8,"output":{"id":"tokenize#1/out","type":"Array<String>","sha256":"0ec05c51a1b428aa1e15bbada7c2ef6aa7afe803871279662fb0349782e8819b","size":205,"value":["the","quick","brown","fox","jumps","over","a","lazy","dog","again","the","quick","brown","fox","jumps","over","a","lazy","dog","again","the","quick","brown","fox","jumps","over","a","lazy","dog","again"]}},{"seq":3,"type":"step_started","ts":1796052414063864,"step":"count","step_run":"count#1","version":1,"step_attempt":1,"inputs":[{"id":"count#1/in0","type":"Array<String>","sha256":"0ec05c51a1b428aa1e15bbada7c2ef6aa7afe803871279662fb0349782e8819b","size":205,"produced_by":"tokenize#1/out"}]},{"seq":4,"type":"metadata","ts":1796052414063869,"step_run":"count#1","values":{"tokens":30}},{"seq":5,"type":"step_completed","ts":1796052414063871,"step":"count","step_run":"count#1","version":1,"step_attempt":1,"duration_us":6,"output":{"id":"count#1/out","type":"Int","sha256":"624b60c58c9d8bfb6ff1886c2fd605d2adeb6ea4da576068201b6c6958ce93f4","size":2,"value":30}},{"seq":6,"type":"step_started","ts":1796052414063997,"step":"summarize","step_run":"summarize#1","version":1,"step_attempt":1,"inputs":[{"id":"summarize#1/in0","type":"Array<String>","sha256":"0ec05c51a1b428aa1e15bbada7c2ef6aa7afe803871279662fb0349782e8819b","size":205,"produced_by":"tokenize#1/out"},{"id":"summarize#1/in1","type":"Int","sha256":"624b60c58c9d8bfb6ff1886c2fd605d2adeb6ea4da576068201b6c6958ce93f4","size":2,"produced_by":"count#1/out"}]},{"seq":7,"type":"step_completed","ts":1796052414064002,"step":"summarize","step_run":"summarize#1","version":1,"step_attempt":1,"duration_us":3,"output":{"id":"summarize#1/out","type":"Summary","sha256":"0a95bcd68fc703692fe0d2a96e8571507b67aa4b7dea9fe2438731ac51840525","size":42,"value":{"first":"the","last":"again","tokens":30}}},{"seq":8,"type":"run_completed","ts":1796052414064005,"status":"completed","duration_us":1029,"output":{"id":"output","type":"Summary","sha256":"0a95bcd68fc703692fe0d2a96e8571507b67aa4b7dea9fe2438731ac51840525","size":42,"produced_by":"summarize#1/out"}}]}
    """#

let runs = CommandLine.arguments.dropFirst().compactMap { Int($0) }.first ?? 10_000
if CommandLine.arguments.contains("--fold") {
    let bytes = Array(record.utf8)
    // The run id's last 16 hex digits, replaced by the record's number.
    let idEnd = bytes.firstRange(of: Array("0000000000000001\"".utf8))!.lowerBound
    let root = NSTemporaryDirectory() + "record-probe-\(UUID().uuidString)"
    var logger = Logger(label: "record-probe")
    logger.logLevel = .error
    let partition = try PartitionMaterializer(root: root, partition: 0, logger: logger)
    let index = CommandLine.arguments.contains("--index") ? try StoreIndex(root: root) : nil
    var counts = FoldCounts()
    var copy = bytes
    for run in 0..<runs {
        let digits = Array(String(run, radix: 16).utf8)
        copy.replaceSubrange(idEnd + 16 - digits.count..<idEnd + 16, with: digits)
        try partition.take(copy, at: Int64(run), counts: &counts)
        if run % 4096 == 4095 { try index?.add(partition.sync()) }
    }
    try index?.add(partition.sync())
    print("\(runs) records of \(counts.events / max(runs, 1)) events folded, \(counts.runsWritten) runs written")
    // `exit` runs no `defer`: the store is removed here.
    try? FileManager.default.removeItem(atPath: root)
    exit(counts.runsWritten == runs ? 0 : 1)
}
let words = (0..<30).map { ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "again"][$0 % 10] }
if CommandLine.arguments.contains("--request") {
    let request = Array(#"{"text": "\#(words.joined(separator: " "))"}"#.utf8)
    var characters = 0
    for _ in 0..<runs { characters &+= try JSONValueDecoder.decode(TextStats.Request.self, from: request).text.count }
    print("\(runs) requests of \(request.count) bytes decoded, \(characters / max(runs, 1)) characters of text each")
    exit(0)
}
let events = try LineageRecord.decode(Array(record.utf8))
let values: [any Encodable & Sendable] = [
    TextStats.Request(text: words.joined(separator: " ")), words, words.count,
    TextStats.Summary(tokens: words.count, first: words.first, last: words.last),
]
var written = 0
for _ in 0..<runs { written &+= LineageRecord.encode(events).count }
var hashed = 0
for _ in 0..<runs {
    for value in values { hashed &+= try ContentHash.sha256(CanonicalJSON.encode(value)).utf8.count }
}
print("\(runs) records of \(written / max(runs, 1)) bytes, \(runs) × \(values.count) values encoded and hashed")
