import CoreMetrics
import Kafka
import Pipelines
import Tracing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Everything a worker needs to know, with the defaults of docs/configuration.md.
public struct WorkerConfiguration: Sendable {
    public var pipeline: AnyPipeline
    public var capture: CaptureConfiguration
    /// librdkafka properties for the consumer and the producer (`bootstrap.servers` and the `--kafka` flags).
    public var kafka: KafkaConfiguration
    public var group: String
    public var requestsTopic: String
    public var responsesTopic: String
    public var deadLetterTopic: String
    public var lineageTopic: String
    /// Requests run at once, at most.
    public var concurrency = 1024
    /// Request values larger than this get `payload_too_large`.
    public var maxPayloadBytes = 1 << 20
    /// Reply-to topics a request may name: these topics and the topics that start with one of them. Default: the
    /// responses topic and `sluice gateway`'s reply topic (``WireProtocol/gatewayRepliesTopic``).
    public var allowedReplyPrefixes: [String]
    /// How long a revoke or a stop waits for requests in flight before giving them up.
    public var drainTimeout: Duration = .seconds(30)
    /// Lineage events waiting for the tracker's thread past which the worker stops taking requests (a bound on
    /// memory when Kafka or the tracker is slower than the pipeline).
    public var maxLineageBacklog = 16_384
    /// How long responses (or dead-letter copies) may keep failing with errors worth retrying, with nothing
    /// acknowledged meanwhile, before ``WorkerHealth`` reports the worker `stalled` (and `/health` answers 503).
    public var deliveryStallLimit: Duration = .seconds(60)
    /// How long the consumer's poll thread may go without going round its loop (it does so every second or so)
    /// before `/health` says `not_polling` and a liveness probe restarts the worker.
    public var pollStallLimit: Duration = .seconds(30)
    /// Recorded on every run's `run_started` as `worker`. Default: `<host name>:<process id>` (a pod's name on
    /// Kubernetes).
    public var name = WorkerConfiguration.defaultName
    /// Where the worker's metrics go (``WorkerMetrics``); `nil`: the factory swift-metrics was bootstrapped with.
    public var metricsFactory: (any MetricsFactory)?
    /// Starts a span per request and per step run of a tracked run (docs/operations.md, "Traces"); `nil`: none.
    public var tracer: (any Tracer)?

    public init(pipeline: AnyPipeline, capture: CaptureConfiguration, kafka: KafkaConfiguration) {
        self.pipeline = pipeline
        self.capture = capture
        self.kafka = kafka
        group = "sluice.\(pipeline.name)"
        requestsTopic = WireProtocol.requestsTopic(pipeline.name)
        responsesTopic = WireProtocol.responsesTopic(pipeline.name)
        deadLetterTopic = WireProtocol.deadLetterTopic(pipeline.name)
        lineageTopic = WireProtocol.lineageTopic
        allowedReplyPrefixes = [responsesTopic, WireProtocol.gatewayRepliesTopic]
    }

    /// `<host name>:<process id>`.
    public static var defaultName: String {
        var host = [CChar](repeating: 0, count: 256)
        let name =
            gethostname(&host, host.count - 1) == 0
            ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown-host"
        return "\(name):\(getpid())"
    }

    /// Whether a request may ask for its response on `topic`.
    public func allowsReply(to topic: String) -> Bool {
        allowedReplyPrefixes.contains { topic.hasPrefix($0) }
    }
}
