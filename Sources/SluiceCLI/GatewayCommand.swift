import ArgumentParser
import Foundation
import Hummingbird
import Kafka
import Logging
import Pipelines
import ServiceLifecycle
import Serving

/// `sluice gateway`: HTTP in front of the fleet, for callers without a Kafka client (docs/gateway.md).
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Serve pipelines over HTTP: POST /v1/pipelines/{name}/invoke becomes a request over Kafka.",
        discussion: """
            Gateways of one --group share the reply topic's partitions: each reads its own and names one in every \
            request, so give the topic at least as many partitions as there are gateways. SIGTERM stops taking \
            connections, answers the calls in flight and exits 0.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @OptionGroup(title: "Logging") var logging: LogOptions

    @Option(name: .long, help: "Serve HTTP on HOST:PORT (an IPv6 host in brackets: [::]:8080).")
    var http = "127.0.0.1:8080"

    @Option(
        name: .customLong("pipeline"),
        help: "A pipeline the gateway serves; repeatable. Default: any whose requests topic exists.")
    var pipelines: [String] = []

    @Option(name: .customLong("reply-topic"), help: "Where the gateways read their responses.")
    var replyTopic = WireProtocol.gatewayRepliesTopic

    @Option(name: .long, help: "The consumer group that shares the reply topic among gateways.")
    var group = "sluice.gateway"

    @Option(name: .long, help: "Seconds a call waits for its response, unless it asks otherwise (Prefer: wait=N).")
    var timeout = 30.0

    @Option(name: .customLong("max-timeout"), help: "The longest wait a call may ask for, in seconds.")
    var maxTimeout = 300.0

    @Option(name: .customLong("max-body-bytes"), help: "Larger request bodies get 413.")
    var maxBodyBytes = 1 << 20

    @Option(name: .customLong("max-waiting"), help: "Calls waiting for responses at once; more get 503.")
    var maxWaiting = 10_000

    @Option(name: .customLong("idle-timeout"), help: "Seconds an HTTP connection may stay idle before it is closed.")
    var idleTimeout = 60.0

    @Flag(name: .customLong("create-topics"), help: "Create the reply topic if it is missing.")
    var createTopics = false

    @Option(name: .long, help: "Partitions of the reply topic --create-topics creates.")
    var partitions = 8

    func validate() throws {
        _ = try StatusServer.parse(http)
        guard timeout > 0 else { throw ValidationError("--timeout \(timeout) must be positive") }
        guard maxTimeout >= timeout else {
            throw ValidationError("--max-timeout \(maxTimeout) must be at least --timeout \(timeout)")
        }
        guard maxBodyBytes >= 1 else { throw ValidationError("--max-body-bytes \(maxBodyBytes) must be >= 1") }
        guard maxWaiting >= 1 else { throw ValidationError("--max-waiting \(maxWaiting) must be at least 1") }
        guard idleTimeout > 0 else { throw ValidationError("--idle-timeout \(idleTimeout) must be positive") }
        guard partitions >= 1 else { throw ValidationError("--partitions \(partitions) must be at least 1") }
        for name in pipelines where !PipelineDirectory.isPipelineName(name) {
            throw ValidationError("--pipeline '\(name)' is not a pipeline name (letters, digits, '.', '_', '-')")
        }
    }

    func run() async throws {
        try logging.bootstrap()
        let logger = Logger(label: "sluice.gateway")
        let settings = try connection.configuration()
        let existing = try await connection.existingTopics(logger: logger)
        try await connection.ensureTopics(
            [replyTopic], existing: existing, create: createTopics, partitions: partitions, logger: logger)
        // A signal from here on stops the gateway gracefully, even one that comes while it starts.
        let signals = await ServiceRunner.trapTerminationSignals()
        let registry = PrometheusExport.bootstrap()
        let client = try PipelineClient(
            kafka: settings, replies: .sharedTopic(replyTopic, group: group), maxWaiting: maxWaiting, logger: logger)
        let directory = PipelineDirectory(
            admin: try KafkaAdmin(configuration: settings, logger: logger),
            allowed: pipelines.isEmpty ? nil : Set(pipelines))
        let gateway = Gateway(
            client: client, directory: directory,
            limits: Gateway.Limits(
                timeout: .milliseconds(Int(timeout * 1000)), maxTimeout: .milliseconds(Int(maxTimeout * 1000)),
                maxBodyBytes: maxBodyBytes),
            servedPipelines: pipelines.map { name in
                // A pipeline of this executable has its input's schema; another's input is any JSON value here.
                GatewayOpenAPI.Served(
                    name: name, inputSchema: PipelineRegistry.pipelines.first { $0.name == name }?.inputSchema)
            },
            metrics: GatewayMetrics(), logger: logger)
        let router = gateway.router()
        StatusServer.addRoutes(
            to: router,
            health: { out in
                let live = client.timeSinceLastPoll < .seconds(30)
                let ready = client.hasReplyPartition
                out.field("status", !live ? "not_polling" : ready ? "serving" : "joining")
                out.field("reply_partitions", client.replyPartitions.count)
                out.field("waiting", client.waitingCount)
                return StatusServer.Probes(live: live, ready: live && ready)
            },
            metrics: {
                gateway.refreshMetrics()
                return PrometheusExport.text(registry)
            })
        let (host, port) = try StatusServer.parse(http)
        let address = http
        let server = Application(
            router: router,
            server: .gateway(gateway, configuration: .init(idleTimeout: .milliseconds(Int64(idleTimeout * 1000)))),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "sluice"),
            onServerRunning: { channel in
                logger.info(
                    "gateway, health and metrics on http://\(address): port \(channel.localAddress?.port ?? port)")
            },
            logger: logger)
        // The server stops first, answering the calls in flight; the client closes after it.
        try await ServiceRunner.run(
            [.init(service: ClosingService(client: client)), .init(service: server)], signals: signals, logger: logger)
    }
}

/// Closes a ``PipelineClient`` when its group shuts down.
private struct ClosingService: Service {
    let client: PipelineClient

    func run() async throws {
        try? await gracefulShutdown()
        await client.close()
    }
}
