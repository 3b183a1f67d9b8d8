import ArgumentParser
import Foundation
import Kafka
import Logging
import Pipelines
import ServiceLifecycle
import Serving

/// `sluice worker`: serves one pipeline from its requests topic (docs/operations.md, docs/protocol.md).
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Serve a pipeline: consume requests, run the pipeline, produce responses and lineage.",
        discussion: """
            Members of one --group share the requests topic's partitions. SIGTERM (or SIGINT) stops taking \
            requests, drains those in flight, publishes all lineage, commits and exits 0; a second signal exits at \
            once with status 2.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @OptionGroup(title: "Logging") var logging: LogOptions

    @Option(name: .long, help: "The pipeline to serve.")
    var pipeline: String

    @Option(name: .long, help: "Consumer group (default: sluice.<pipeline>).")
    var group: String?

    @Option(name: .customLong("requests-topic"), help: "Default: <pipeline>.requests.")
    var requestsTopic: String?

    @Option(name: .customLong("responses-topic"), help: "Default: <pipeline>.responses.")
    var responsesTopic: String?

    @Option(name: .customLong("dlq-topic"), help: "Dead-letter topic. Default: <pipeline>.dlq.")
    var deadLetterTopic: String?

    @Option(name: .customLong("lineage-topic"), help: "Default: sluice.lineage.")
    var lineageTopic: String?

    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: "Requests run at once, at most.")
    var concurrency = 1024

    @Option(name: .customLong("max-payload-bytes"), help: "Larger request values get payload_too_large.")
    var maxPayloadBytes = 1 << 20

    @Option(
        name: .customLong("allow-reply-prefix"),
        help: "A reply-to topic prefix requests may name, besides the responses topic. Repeatable.")
    var allowedReplyPrefixes: [String] = []

    @Option(name: .customLong("drain-seconds"), help: "How long a stop or a revoke waits for requests in flight.")
    var drainSeconds = 30.0

    @Option(
        name: .customLong("delivery-stall-seconds"),
        help: "How long deliveries may keep failing, nothing acknowledged, before /health answers 503 (stalled).")
    var deliveryStallSeconds = 60.0

    @Option(name: .long, help: "Serve GET /health and GET /metrics on HOST:PORT.")
    var http: String?

    @Option(name: .long, help: "This worker's name in the lineage of its runs (default: <host name>:<process id>).")
    var name: String?

    @Flag(name: .customLong("create-topics"), help: "Create missing topics instead of refusing to start.")
    var createTopics = false

    @Option(name: .long, help: "Partitions of topics --create-topics creates.")
    var partitions = 8

    func validate() throws {
        if let http { _ = try StatusServer.parse(http) }
        guard concurrency >= 1 else { throw ValidationError("--concurrency \(concurrency) must be at least 1") }
        guard maxPayloadBytes >= 1 else { throw ValidationError("--max-payload-bytes \(maxPayloadBytes) must be >= 1") }
        guard drainSeconds >= 0 else { throw ValidationError("--drain-seconds \(drainSeconds) must be >= 0") }
        guard deliveryStallSeconds > 0 else {
            throw ValidationError("--delivery-stall-seconds \(deliveryStallSeconds) must be > 0")
        }
        guard partitions >= 1 else { throw ValidationError("--partitions \(partitions) must be at least 1") }
    }

    func run() async throws {
        try logging.bootstrap()
        let logger = Logger(label: "sluice.worker")
        let pipeline = try PipelineRegistry.pipeline(named: pipeline)
        let resolved = try capture.resolve(for: pipeline)
        logger.info("\(pipeline.name): capture \(resolved.configuration.summary) from \(resolved.source.rawValue)")

        let settings = try connection.configuration()
        var configuration = WorkerConfiguration(pipeline: pipeline, capture: resolved.configuration, kafka: settings)
        if let group { configuration.group = group }
        if let requestsTopic { configuration.requestsTopic = requestsTopic }
        if let responsesTopic {
            configuration.responsesTopic = responsesTopic
            configuration.allowedReplyPrefixes = [responsesTopic, WireProtocol.gatewayRepliesTopic]
        }
        if let deadLetterTopic { configuration.deadLetterTopic = deadLetterTopic }
        if let lineageTopic { configuration.lineageTopic = lineageTopic }
        configuration.allowedReplyPrefixes += allowedReplyPrefixes
        configuration.concurrency = concurrency
        configuration.maxPayloadBytes = maxPayloadBytes
        configuration.drainTimeout = .milliseconds(Int(drainSeconds * 1000))
        configuration.deliveryStallLimit = .milliseconds(Int(deliveryStallSeconds * 1000))
        if let name { configuration.name = name }

        try await checkTopics(configuration, logger: logger)
        let captureLabel = configuration.capture.label
        // A signal from here on stops the worker gracefully, even one that comes while it starts.
        let signals = await ServiceRunner.trapTerminationSignals()
        let registry = PrometheusExport.bootstrap()
        let tracing = try TracingExport.bootstrap(
            serviceName: "sluice", environment: ProcessInfo.processInfo.environment, logger: logger)
        configuration.tracer = tracing?.tracer
        let worker = try Worker(configuration: configuration, logger: logger)
        let server = try StatusServer.healthAndMetrics(
            address: http, logger: logger,
            health: { out in
                let health = worker.health
                out.field("status", health.status.rawValue)
                out.field("assigned_partitions", health.assignedPartitions)
                out.field("in_flight", health.inFlight)
                out.field("joined_group", health.joinedGroup)
                out.field("pipeline", pipeline.name)
                out.field("capture", captureLabel)
                return StatusServer.Probes(live: health.isLive, ready: health.isReady)
            },
            metrics: {
                worker.refreshMetrics()
                return PrometheusExport.text(registry)
            })
        // The worker stops first (it drains) while /health reports it stopping; the server goes when it is done, and
        // the span exporter last, with the worker's last spans.
        try await ServiceRunner.run(
            (tracing.map { [.init(service: $0.service)] } ?? []) + (server.map { [.init(service: $0)] } ?? [])
                + [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup)],
            signals: signals, logger: logger)
    }

    /// Refuses to start when a topic the worker uses is missing, naming it, unless `--create-topics`.
    private func checkTopics(_ configuration: WorkerConfiguration, logger: Logger) async throws {
        var needed = [configuration.requestsTopic, configuration.responsesTopic]
        if !configuration.capture.isMemoryOnly { needed.append(configuration.lineageTopic) }
        let existing = try await connection.existingTopics(logger: logger)
        // The dead-letter topic is written only when a request fails: its absence is worth a warning, not a refusal
        // (a failed request is then answered without its copy once Kafka reports the topic unknown).
        if !existing.contains(configuration.deadLetterTopic) && !createTopics {
            logger.warning(
                "dead-letter topic \(configuration.deadLetterTopic) does not exist: failed requests get no copy")
        }
        if createTopics, !existing.contains(configuration.deadLetterTopic) {
            needed.append(configuration.deadLetterTopic)
        }
        try await connection.ensureTopics(
            needed, existing: existing, create: createTopics, partitions: partitions, logger: logger)
    }
}
