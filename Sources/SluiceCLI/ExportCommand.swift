import ArgumentParser
import AsyncHTTPClient
import Foundation
import Lineage
import NIOCore
import NIOHTTP1
import Pipelines

extension RunsCommand {
    /// `sluice runs export --openlineage`: stored runs as OpenLineage events, to a file or an HTTP endpoint.
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write stored runs as OpenLineage 2 RunEvents: JSON lines to a file, or POSTed to an endpoint.",
            discussion: "docs/openlineage.md: what a run, a step run and an artifact become.")

        @ParentCommand var runs: RunsCommand
        var options: StoreOptions { runs.options }

        @Flag(name: .long, help: "OpenLineage events (the one format there is, named for what may come).")
        var openlineage = false

        @Option(name: .long, help: "The namespace of the jobs (a pipeline, a step) and of the artifacts' datasets.")
        var namespace = "sluice"

        @Option(
            name: .customLong("kafka"),
            help: ArgumentHelp(
                "The Kafka cluster the runs came through (HOST:PORT, its first bootstrap server): adds the request, responses and lineage topics as datasets.",
                valueName: "host:port"))
        var kafka: String?

        @Option(name: .long, help: "The lineage topic the runs went through.")
        var lineageTopic = "sluice.lineage"

        @Option(name: .long, help: "Only runs of this pipeline.")
        var pipeline: String?

        @Option(
            name: .long,
            help: ArgumentHelp("Only runs started at or after this time (as for `list`).", valueName: "time"))
        var since: Since?

        @Option(name: .long, help: "Write the events to this file (JSON Lines; - for standard output, the default).")
        var output: String?

        @Option(
            name: .long,
            help:
                "POST each event to this OpenLineage endpoint (Marquez: http://HOST:5000, to which /api/v1/lineage is added)."
        )
        var url: String?

        func validate() throws {
            guard openlineage else { throw ValidationError("say which format: --openlineage") }
            guard output == nil || url == nil else { throw ValidationError("--output and --url: choose one") }
            if let kafka, kafka.split(separator: ":").count != 2 || Int(kafka.split(separator: ":").last ?? "") == nil {
                throw ValidationError("--kafka \(kafka) is not HOST:PORT")
            }
            if let url, OpenLineageEndpoint(url) == nil {
                throw ValidationError("--url \(url) is not an http:// or https:// URL")
            }
        }

        func run() async throws {
            let index = try options.index()
            var settings = OpenLineageSettings(producer: "urn:sluice:\(SluiceCommand.version)")
            settings.namespace = namespace
            settings.kafkaNamespace = kafka.map { "kafka://\($0)" }
            settings.lineageTopic = lineageTopic
            // Oldest first: a consumer of the events sees runs in the order they started.
            let stored = try index.runs(
                pipeline: pipeline, sinceMicros: since?.micros(now: Timestamps.wallMicros()), limit: Int.max
            ).reversed()
            if let url, let endpoint = OpenLineageEndpoint(url) {
                var sent = 0
                try await endpoint.withClient { post in
                    for run in stored {
                        for event in OpenLineage.events(of: try index.line(of: run), settings: settings) {
                            try await post(event)
                            sent += 1
                        }
                    }
                }
                FileHandle.standardError.write(
                    Data("sent \(sent) events of \(stored.count) runs to \(endpoint.url)\n".utf8))
                return
            }
            let file: FileHandle
            if let output, output != "-" {
                guard FileManager.default.createFile(atPath: output, contents: nil) else {
                    throw ValidationError("cannot create \(output)")
                }
                file = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            } else {
                file = FileHandle.standardOutput
            }
            for run in stored {
                var lines: [UInt8] = []
                for event in OpenLineage.events(of: try index.line(of: run), settings: settings) {
                    lines += event + [UInt8(ascii: "\n")]
                }
                try file.write(contentsOf: lines)
            }
            if file !== FileHandle.standardOutput { try file.close() }
        }
    }
}

/// An OpenLineage HTTP endpoint (`POST /api/v1/lineage`, as Marquez serves it).
struct OpenLineageEndpoint {
    let url: String

    /// `nil` unless `text` is an http(s) URL; a URL without a path gets `/api/v1/lineage`.
    init?(_ text: String) {
        guard let parsed = URL(string: text), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil
        else { return nil }
        url = parsed.path.isEmpty || parsed.path == "/" ? text.trimmingSuffix("/") + "/api/v1/lineage" : text
    }

    /// Attempts per event: a refused connection, a 5xx or a 429 is tried again, after 0.1, 0.2, 0.4, 0.8 s.
    static let attempts = 5

    /// Calls `body` with a function that POSTs one event (as ``post(_:with:)``); shuts the client down after.
    func withClient(_ body: (_ post: ([UInt8]) async throws -> Void) async throws -> Void) async throws {
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await body { event in try await post(event, with: client) }
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    /// POSTs one event, trying again as ``attempts`` says.
    /// - Throws: `OpenLineageRefusal` when the event is refused (a 4xx other than 429), ``ExportError`` when every
    ///   attempt failed.
    func post(_ event: [UInt8], with client: HTTPClient) async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: event))
        var lastProblem = ""
        for attempt in 0..<Self.attempts {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(100 << (attempt - 1))) }
            do {
                let response = try await client.execute(request, timeout: .seconds(30))
                let body = try await response.body.collect(upTo: 64 << 10)
                let status = Int(response.status.code)
                if (200..<300).contains(status) { return }
                lastProblem = "HTTP \(status): \(String(buffer: body).prefix(500))"
                guard status >= 500 || status == 429 else {
                    throw OpenLineageRefusal("\(url) refused an event: \(lastProblem)")
                }
            } catch let refusal as OpenLineageRefusal {
                throw refusal
            } catch {
                try Task.checkCancellation()
                lastProblem = "\(error)"
            }
        }
        throw ExportError(description: "\(url): \(Self.attempts) attempts failed, the last with \(lastProblem)")
    }
}

/// An export that could not be delivered: reported without the usage text, exit status 1.
struct ExportError: Error, CustomStringConvertible {
    let description: String
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
