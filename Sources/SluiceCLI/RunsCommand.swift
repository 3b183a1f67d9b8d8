import ArgumentParser
import Foundation
import Lineage
import Pipelines

/// `sluice runs`: reads the store through its index (docs/store.md).
struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "Browse the lineage store: list runs, show one as a DAG, trace an artifact, rebuild the index.",
        discussion: "Every subcommand first indexes what the segments hold beyond the index (cheap when up to date).",
        subcommands: [List.self, Show.self, LineageOf.self, Export.self, Reindex.self]
    )

    @OptionGroup var options: StoreOptions

    struct StoreOptions: ParsableArguments {
        @Option(name: .long, help: "The store's root directory (what `sluice materialize --store` writes).")
        var store: String

        /// Refuses a directory that `sluice materialize` did not write.
        func checkStore() throws {
            guard FileManager.default.fileExists(atPath: "\(store)/runs") else {
                throw ValidationError("\(store) is not a store: it has no runs/ directory")
            }
        }

        /// The store's index, caught up with its segments; a catch-up that takes more than a second shows its
        /// progress on standard error.
        func index() throws -> StoreIndex {
            try checkStore()
            let index = try StoreIndex(root: store)
            var line = ProgressLine(started: Timestamps.monotonicMicros())
            try index.catchUp { done, total, runs in
                guard line.shouldShow(at: Timestamps.monotonicMicros()) || (line.isShown && done == total) else {
                    return
                }
                FileHandle.standardError.write(
                    Data("\rindexing the store: \(done) of \(total) segments, \(runs) runs".utf8))
            }
            if line.isShown { FileHandle.standardError.write(Data("\n".utf8)) }
            return index
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The newest runs, one per line.")

        @ParentCommand var runs: RunsCommand
        var options: StoreOptions { runs.options }

        @Option(name: .long, help: "Only runs of this pipeline.")
        var pipeline: String?

        @Option(name: .long, help: "Only runs with this status.")
        var status: RunStatus?

        @Option(
            name: .long,
            help: ArgumentHelp(
                "Only runs started at or after this time: RFC 3339 (2026-11-25T10:00:00Z), a day (2026-11-25, UTC) or an age (90s, 15m, 2h, 7d).",
                valueName: "time"))
        var since: Since?

        @Option(name: .long, help: "At most this many runs.")
        var limit = 20

        @Flag(name: .long, help: "One JSON object per run and line (JSON Lines), for jq and scripts.")
        var json = false

        func validate() throws {
            guard limit >= 1 else { throw ValidationError("--limit \(limit) must be at least 1") }
        }

        func run() throws {
            let runs = try options.index().runs(
                pipeline: pipeline, status: status, sinceMicros: since?.micros(now: Timestamps.wallMicros()),
                limit: limit)
            if json {
                for run in runs { print(String(decoding: Self.json(run), as: UTF8.self)) }
                return
            }
            print(
                [
                    pad("RUN", 32), pad("ATTEMPT", 7), pad("PIPELINE", 16), pad("STATUS", 10), pad("CAPTURE", 8),
                    pad("STARTED (UTC)", 27), pad("DURATION", 10), "STEPS",
                ].joined(separator: " "))
            for run in runs {
                print(
                    [
                        pad(run.runID, 32), pad("\(run.attempt)", 7), pad(run.pipeline, 16),
                        pad(run.status.rawValue, 10),
                        pad(run.capture, 8), pad(run.startedMicros.map { Timestamps.rfc3339(micros: $0) } ?? "-", 27),
                        pad(run.durationMicros.map(duration) ?? "-", 10), "\(run.steps)",
                    ].joined(separator: " "))
            }
        }

        /// A run as `--json` writes it.
        static func json(_ run: IndexedRun) -> [UInt8] {
            var out = JSONWriter(capacity: 512)
            out.object { out in
                out.field("run_id", run.runID)
                out.field("attempt", run.attempt)
                out.field("pipeline", run.pipeline)
                out.field("status", run.status.rawValue)
                out.field("capture", run.capture)
                out.field("request_id", run.requestID)
                out.key("started_us")
                if let started = run.startedMicros { out.int(started) } else { out.null() }
                out.field("started_at", run.startedMicros.map { Timestamps.rfc3339(micros: $0) })
                out.key("duration_us")
                if let duration = run.durationMicros { out.int(duration) } else { out.null() }
                out.field("steps", run.steps)
                out.field("segment", run.segment)
                out.field("line_offset", run.lineOffset)
            }
            return out.bytes
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A run's steps as a DAG, with artifacts and timings (--dot: Graphviz).")

        @ParentCommand var runs: RunsCommand
        var options: StoreOptions { runs.options }

        @Argument(help: "The run's id.")
        var runID: String

        @Option(
            name: .long,
            help: "Which delivery of the run, counted from 1 in the order they started (default: the last one stored).")
        var delivery: Int?

        @Flag(name: .long, help: "Write the DAG in Graphviz dot instead of text.")
        var dot = false

        func run() throws {
            let index = try options.index()
            let lines = try index.lines(ofRun: runID)
            guard !lines.isEmpty else { throw NotFound(description: "no run \(runID) in \(options.store)") }
            let number = delivery ?? lines.count
            guard (1...lines.count) ~= number else {
                throw NotFound(description: "run \(runID) has no delivery \(number): \(lines.count) stored")
            }
            let run = RunView(try index.line(of: lines[number - 1]))
            print(dot ? run.dot() : run.text(delivery: number, of: lines.count))
        }
    }

    struct LineageOf: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lineage", abstract: "Who produced an artifact, and who consumed it.")

        @ParentCommand var runs: RunsCommand
        var options: StoreOptions { runs.options }

        @Argument(help: "The artifact's SHA-256 (64 hex digits).")
        var sha256: String

        func run() throws {
            let uses = try options.index().uses(ofArtifact: sha256.lowercased())
            guard !uses.isEmpty else { throw NotFound(description: "no artifact \(sha256) in \(options.store)") }
            for role in [ArtifactUse.Role.produced, .consumed] {
                print(role == .produced ? "produced by:" : "consumed by:")
                for use in uses where use.role == role {
                    let place = use.stepRun.map { "step \($0)" } ?? (role == .produced ? "run input" : "run output")
                    print(
                        "  \(use.pipeline) run \(use.runID) (attempt \(use.attempt)), \(place) as \(use.artifactID): \(use.type), \(use.size) B"
                    )
                }
            }
        }
    }

    struct Reindex: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rebuild the index from the segments.")

        @ParentCommand var runs: RunsCommand
        var options: StoreOptions { runs.options }

        func run() throws {
            try options.checkStore()
            let (_, runs) = try StoreIndex.rebuild(root: options.store)
            print("indexed \(runs) run(s)")
        }
    }
}

/// What a look-up did not find: reported without the usage text, exit status 1.
private struct NotFound: Error, CustomStringConvertible {
    let description: String
}

/// `text` in a column of `width` characters: padded, or cut to end in `…` when longer.
private func pad(_ text: String, _ width: Int) -> String {
    if text.count > width { return text.prefix(width - 1) + "…" }
    return text + String(repeating: " ", count: width - text.count)
}

/// When `sluice runs` shows how far the index's catch-up is: only once it has taken more than `after` microseconds,
/// then at most every `every`.
struct ProgressLine {
    let started: Int64
    var after: Int64 = 1_000_000
    var every: Int64 = 250_000
    private var lastShown: Int64?

    init(started: Int64) {
        self.started = started
    }

    /// Whether a line was shown.
    var isShown: Bool { lastShown != nil }

    /// Whether to show the progress at `now`; records it when so.
    mutating func shouldShow(at now: Int64) -> Bool {
        guard now - started > after, lastShown.map({ now - $0 >= every }) ?? true else { return false }
        lastShown = now
        return true
    }
}

/// `--since`: a point in time, or an age counted back from when the command runs.
struct Since: ExpressibleByArgument {
    private enum Value {
        case at(micros: Int64)
        case age(micros: Int64)
    }

    private let value: Value

    init?(argument: String) {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = argument.last.flatMap({ units[$0] }), let count = Int64(argument.dropLast()), count >= 0,
            !argument.dropLast().contains(where: { !$0.isASCII || !$0.isNumber })
        {
            let (micros, overflow) = count.multipliedReportingOverflow(by: unit * 1_000_000)
            guard !overflow else { return nil }
            value = .age(micros: micros)
            return
        }
        let text = argument.count == 10 ? argument + "T00:00:00Z" : argument
        let formats: [Date.ISO8601FormatStyle] = [
            .iso8601,
            .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted),
        ]
        guard let date = formats.lazy.compactMap({ try? Date(text, strategy: $0) }).first else { return nil }
        value = .at(micros: Int64((date.timeIntervalSince1970 * 1_000_000).rounded(.down)))
    }

    /// The time in microseconds since 1970, for an age counted back from `now`.
    func micros(now: Int64) -> Int64 {
        switch value {
        case .at(let micros): micros
        case .age(let micros): now - micros
        }
    }
}

private func duration(_ micros: Int64) -> String {
    micros < 10_000 ? "\(micros) µs" : String(format: "%.1f ms", Double(micros) / 1000)
}

/// A stored run, shown as text or as a Graphviz DAG.
private struct RunView {
    let run: StoredRun

    init(_ run: StoredRun) {
        self.run = run
    }

    private static func errorText(_ error: ErrorDetail?) -> String? {
        error.map { "\($0.code): \($0.message)" }
    }

    /// The step run that produced an artifact id (`input` is the run's own input).
    private static func node(ofArtifact id: String) -> String {
        id == "input" ? "input" : String(id.split(separator: "/").first ?? Substring(id))
    }

    private static func describe(_ artifact: StoredRun.Artifact) -> String {
        var text = "\(artifact.type), \(artifact.size) B"
        if let sha256 = artifact.sha256 { text += ", sha256 \(sha256.prefix(12))…" }
        if let file = artifact.file { text += ", in \(file)" }
        if let value = artifact.value {
            let json = String(decoding: value, as: UTF8.self)
            text += ": " + (json.count > 60 ? json.prefix(57) + "..." : json)
        }
        return text
    }

    func text(delivery: Int, of deliveries: Int) -> String {
        var lines: [String] = []
        lines.append("run \(run.runID) (delivery \(delivery) of \(deliveries) stored, attempt \(run.attempt))")
        lines.append(
            "  pipeline \(run.pipeline), \(run.status.rawValue), capture \(run.capture)"
                + (run.durationMicros.map { ", \(duration($0))" } ?? "")
                + (run.startedMicros.map { ", started \(Timestamps.rfc3339(micros: $0))" } ?? ""))
        if let request = run.requestID { lines.append("  request \(request)") }
        if let worker = run.worker { lines.append("  worker \(worker)") }
        if let error = Self.errorText(run.error) { lines.append("  error \(error)") }
        if let input = run.input { lines.append("input: \(Self.describe(input))") }
        for step in run.steps {
            let took = step.durationMicros.map { ", \(duration($0))" } ?? ""
            let attempts = step.attempts > 1 ? ", \(step.attempts) attempts" : ""
            lines.append("\(step.stepRun) [\(step.step)] \(step.status.rawValue)\(took)\(attempts)")
            for input in step.inputs {
                let from = input.producedBy.map { "← \(Self.node(ofArtifact: $0))" } ?? "← (outside the run)"
                lines.append("    in  \(input.id) \(from): \(Self.describe(input))")
            }
            if let output = step.output { lines.append("    out \(output.id): \(Self.describe(output))") }
            if let error = Self.errorText(step.error) { lines.append("    error \(error)") }
        }
        if let output = run.output {
            let from = output.producedBy.map { " ← \(Self.node(ofArtifact: $0))" } ?? ""
            lines.append("output\(from): \(Self.describe(output))")
        }
        return lines.joined(separator: "\n")
    }

    func dot() -> String {
        /// A dot string of `parts`, one per label line.
        func quoted(_ parts: String...) -> String {
            let escaped = parts.map {
                $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            }
            return "\"" + escaped.joined(separator: "\\n") + "\""
        }
        var lines = ["digraph run {", "  rankdir=LR;", "  node [shape=box, fontname=\"Helvetica\"];"]
        lines.append("  \"input\" [shape=ellipse];")
        for step in run.steps {
            let label = quoted(
                step.stepRun, step.status.rawValue + (step.durationMicros.map { ", \(duration($0))" } ?? ""))
            lines.append("  \(quoted(step.stepRun)) [label=\(label)];")
        }
        lines.append("  \"output\" [shape=ellipse];")
        for step in run.steps {
            for input in step.inputs {
                let from = input.producedBy.map(Self.node(ofArtifact:)) ?? "input"
                lines.append("  \(quoted(from)) -> \(quoted(step.stepRun)) [label=\(quoted(input.type))];")
            }
        }
        if let output = run.output, let producer = output.producedBy {
            lines.append("  \(quoted(Self.node(ofArtifact: producer))) -> \"output\" [label=\(quoted(output.type))];")
        }
        lines.append("}")
        return lines.joined(separator: "\n")
    }
}

extension RunStatus: ExpressibleByArgument {}
