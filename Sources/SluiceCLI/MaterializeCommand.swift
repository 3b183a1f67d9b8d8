import ArgumentParser
import AsyncHTTPClient
import Foundation
import Kafka
import Lineage
import Logging
import Pipelines
import ServiceLifecycle

/// `sluice materialize`: folds the lineage topic into the file store (docs/operations.md).
struct MaterializeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "materialize",
        abstract: "Turn the lineage topic into the file store: one line per finished run, large artifacts by hash.",
        discussion: """
            Members of one --group share the lineage topic's partitions; each partition's segments have one \
            writer. SIGTERM (or SIGINT) stops reading, commits what is durable and exits 0; a second signal exits \
            at once with status 2. A restart (or a kill -9) resumes where the store is durable and writes each run \
            once.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @OptionGroup(title: "Logging") var logging: LogOptions

    @Option(name: .long, help: "The store's root directory (created if missing).")
    var store: String

    @Option(name: .customLong("lineage-topic"), help: "Default: sluice.lineage.")
    var lineageTopic = "sluice.lineage"

    @Option(name: .long, help: "Consumer group (default: sluice.materializer).")
    var group = "sluice.materializer"

    @Option(
        name: .customLong("inline-limit"),
        help: "Artifact values up to this many bytes stay in their run's line; larger ones go to artifacts/.")
    var inlineLimit = 1024

    @Option(
        name: .customLong("incomplete-after"),
        help: "Events of a partition after which a run that saw none of its own is closed as incomplete.")
    var incompleteAfter = 100_000

    @Option(name: .customLong("segment-max-bytes"), help: "A segment rolls when it reaches this size.")
    var segmentMaxBytes = 64 << 20

    @Option(name: .customLong("segment-max-lines"), help: "A segment rolls when it holds this many runs.")
    var segmentMaxLines = 100_000

    @Option(
        name: .customLong("batch-size"),
        help: "Records folded between two syncs of the store, at most (larger: fewer fsyncs; smaller: less re-read).")
    var batchSize = 32_768

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Own the lineage partitions whose number modulo N is I, instead of joining the group's assignment.",
            valueName: "I/N"))
    var shard: String?

    @Option(name: .long, help: "Serve GET /health and GET /metrics on HOST:PORT.")
    var http: String?

    @Option(
        name: .customLong("openlineage-url"),
        help:
            "Also POST each stored run as OpenLineage events to this endpoint, at least once (Marquez: http://HOST:5000; docs/openlineage.md)."
    )
    var openLineageURL: String?

    @Option(
        name: .customLong("openlineage-namespace"),
        help: "The namespace of the OpenLineage jobs and of the artifacts' datasets.")
    var openLineageNamespace = "sluice"

    /// `--shard I/N` as a ``Shard``.
    /// - Throws: a `ValidationError` naming the value unless it is two integers with `0 <= I < N`.
    static func parseShard(_ text: String) throws -> Shard {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]), count >= 1, (0..<count) ~= index
        else {
            throw ValidationError("--shard '\(text)' is not I/N with 0 <= I < N (for example 0/3)")
        }
        return Shard(index: index, count: count)
    }

    func validate() throws {
        if let http { _ = try StatusServer.parse(http) }
        if let shard { _ = try Self.parseShard(shard) }
        if let openLineageURL, OpenLineageEndpoint(openLineageURL) == nil {
            throw ValidationError("--openlineage-url \(openLineageURL) is not an http:// or https:// URL")
        }
        guard !store.isEmpty else { throw ValidationError("--store needs a directory") }
        guard inlineLimit >= 0 else { throw ValidationError("--inline-limit \(inlineLimit) must be >= 0") }
        guard incompleteAfter >= 1 else {
            throw ValidationError("--incomplete-after \(incompleteAfter) must be at least 1")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size \(batchSize) must be at least 1") }
        guard segmentMaxBytes >= 1, segmentMaxLines >= 1 else {
            throw ValidationError("--segment-max-bytes and --segment-max-lines must be at least 1")
        }
    }

    func run() async throws {
        try logging.bootstrap()
        let logger = Logger(label: "sluice.materialize")
        var configuration = MaterializerConfiguration(kafka: try connection.configuration(), store: store)
        configuration.lineageTopic = lineageTopic
        configuration.group = group
        configuration.storeInlineLimit = inlineLimit
        configuration.incompleteAfter = incompleteAfter
        configuration.segments = SegmentLimits(maxBytes: segmentMaxBytes, maxLines: segmentMaxLines)
        configuration.batchSize = batchSize
        configuration.shard = try shard.map(Self.parseShard)
        guard try await connection.existingTopics(logger: logger).contains(lineageTopic) else {
            throw UnavailableError(
                "lineage topic \(lineageTopic) does not exist on \(connection.bootstrapServers): workers publish to it; create it first"
            )
        }
        // A signal from here on stops the materializer gracefully, even one that comes while it starts.
        let signals = await ServiceRunner.trapTerminationSignals()
        let registry = PrometheusExport.bootstrap()
        let (openLineage, httpClient) = openLineageFollower(logger: logger)
        let materializer = Materializer(configuration: configuration, openLineage: openLineage, logger: logger)
        do {
            let server = try StatusServer.healthAndMetrics(
                address: http, logger: logger,
                health: { out in
                    let status = materializer.status
                    out.field("status", status.phase.rawValue)
                    out.field("assigned_partitions", status.assignedPartitions)
                    out.field("open_runs", status.openRuns)
                    out.field("events", status.counts.events)
                    out.field("runs_written", status.counts.runsWritten)
                    out.field("joined_group", status.joinedGroup)
                    if let openLineage { out.field("openlineage_backlog_bytes", openLineage.backlogBytes) }
                    return StatusServer.Probes(
                        live: status.phase != .stopping, ready: status.phase == .running && status.joinedGroup)
                },
                metrics: {
                    materializer.refreshMetrics()
                    openLineage?.refreshMetrics()
                    return PrometheusExport.text(registry)
                })
            // Stopped in reverse: the materializer, then the follower, then the status server.
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
            if let server { services.append(.init(service: server)) }
            if let openLineage { services.append(.init(service: openLineage)) }
            services.append(.init(service: materializer, successTerminationBehavior: .gracefullyShutdownGroup))
            try await ServiceRunner.run(services, signals: signals, logger: logger)
        } catch {
            try? await httpClient?.shutdown()
            throw error
        }
        try? await httpClient?.shutdown()
    }

    /// With `--openlineage-url`, the follower that POSTs stored runs to it and the HTTP client it uses (shut down by
    /// the caller).
    private func openLineageFollower(logger: Logger) -> (OpenLineageFollower?, HTTPClient?) {
        guard let openLineageURL, let endpoint = OpenLineageEndpoint(openLineageURL) else { return (nil, nil) }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        var settings = OpenLineageSettings(producer: "urn:sluice:\(SluiceCommand.version)")
        settings.namespace = openLineageNamespace
        settings.kafkaNamespace = connection.bootstrapServers.split(separator: ",").first.map { "kafka://\($0)" }
        settings.lineageTopic = lineageTopic
        let follower = OpenLineageFollower(root: store, settings: settings, logger: logger) { event in
            try await endpoint.post(event, with: client)
        }
        return (follower, client)
    }
}
