import CoreMetrics
import Kafka
import Pipelines
import Synchronization

/// What a worker counts, through swift-metrics (docs/operations.md, "Metrics"): whatever factory the process
/// bootstrapped (`sluice worker` exports them with swift-prometheus on `GET /metrics`), or the one given.
///
/// - `sluice_requests_total{pipeline, capture, status, code}`: responses produced (`code` is empty for `ok`).
/// - `sluice_request_duration_seconds{pipeline, capture}`: from taking a request to its response's acknowledgement.
/// - `sluice_requests_in_flight{pipeline}`, `sluice_assigned_partitions{pipeline}`: gauges, set by ``refresh(_:)``.
/// - `sluice_lineage_events_total{pipeline}`, `sluice_lineage_failures_total{pipeline}`: events acknowledged and
///   failed.
/// - `sluice_dead_letters_total{pipeline}`.
/// - `sluice_delivery_refusals_total{pipeline, record, code}`: responses and dead-letter copies Kafka refused with an
///   error that retrying cannot cure (`record` is `response` or `dead_letter`, `code` librdkafka's error name).
/// - `sluice_consumer_lag_records{pipeline, topic, partition}`: records of an assigned partition not yet taken.
public final class WorkerMetrics: Sendable {
    private let factory: any MetricsFactory
    private let pipeline: String
    private let capture: String
    private let ok: Counter
    /// Error responses by code, made on first use.
    private let errors = Mutex<[String: Counter]>([:])
    private let duration: Timer
    private let inFlight: Gauge
    private let assignedPartitions: Gauge
    private let deadLetters: Counter
    private let refusals = Mutex<[String: Counter]>([:])
    private let lag: KeyedGauges<TopicPartition>
    private let lineageEvents: Counter
    private let lineageFailures: Counter
    private let invalidTraceparents: Counter
    /// The tracker's totals as last reported to the lineage counters.
    private let lineageReported = Mutex((published: 0, failed: 0))

    init(pipeline: String, capture: String, factory: any MetricsFactory) {
        self.factory = factory
        self.pipeline = pipeline
        self.capture = capture
        ok = Self.requestCounter(pipeline, capture, status: "ok", code: "", factory)
        duration = Timer(
            label: "sluice_request_duration_seconds", dimensions: [("pipeline", pipeline), ("capture", capture)],
            factory: factory)
        inFlight = Gauge(label: "sluice_requests_in_flight", dimensions: [("pipeline", pipeline)], factory: factory)
        assignedPartitions = Gauge(
            label: "sluice_assigned_partitions", dimensions: [("pipeline", pipeline)], factory: factory)
        deadLetters = Counter(
            label: "sluice_dead_letters_total", dimensions: [("pipeline", pipeline)], factory: factory)
        lag = KeyedGauges(label: "sluice_consumer_lag_records", factory: factory) { partition in
            [("pipeline", pipeline), ("topic", partition.topic), ("partition", "\(partition.partition)")]
        }
        lineageEvents = Counter(
            label: "sluice_lineage_events_total", dimensions: [("pipeline", pipeline)], factory: factory)
        lineageFailures = Counter(
            label: "sluice_lineage_failures_total", dimensions: [("pipeline", pipeline)], factory: factory)
        invalidTraceparents = Counter(
            label: "sluice_traceparent_invalid_total", dimensions: [("pipeline", pipeline)], factory: factory)
    }

    private static func requestCounter(
        _ pipeline: String, _ capture: String, status: String, code: String, _ factory: any MetricsFactory
    ) -> Counter {
        Counter(
            label: "sluice_requests_total",
            dimensions: [("pipeline", pipeline), ("capture", capture), ("status", status), ("code", code)],
            factory: factory)
    }

    /// Counts responses delivered: each with its error code (`nil` for `ok`) and its nanoseconds since the request
    /// was taken.
    func recordResponses(_ responses: some Sequence<(code: String?, nanoseconds: Int64)>) {
        var okCount = 0
        for (code, nanoseconds) in responses {
            duration.recordNanoseconds(nanoseconds)
            guard let code else {
                okCount += 1
                continue
            }
            let counter = errors.withLock { counters in
                if let counter = counters[code] { return counter }
                let counter = Self.requestCounter(pipeline, capture, status: "error", code: code, factory)
                counters[code] = counter
                return counter
            }
            counter.increment()
        }
        if okCount > 0 { ok.increment(by: okCount) }
    }

    /// Counts a request whose `traceparent` is not W3C trace context.
    func recordInvalidTraceparent() {
        invalidTraceparents.increment()
    }

    func recordDeadLetter() {
        deadLetters.increment()
    }

    func recordRefusal(record: String, code: String) {
        let counter = refusals.withLock { counters in
            let key = "\(record) \(code)"
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "sluice_delivery_refusals_total",
                dimensions: [("pipeline", pipeline), ("record", record), ("code", code)], factory: factory)
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    /// Brings the gauges and the lineage counters up to date, before the metrics are read: the worker's health, its
    /// consumer's lag, and the tracker's totals of events acknowledged and failed.
    func refresh(
        _ health: WorkerHealth, lag consumerLag: [TopicPartition: Int64], lineage: (published: Int, failed: Int)
    ) {
        let (published, failed) = lineageReported.withLock { reported in
            defer { reported = lineage }
            return (lineage.published - reported.published, lineage.failed - reported.failed)
        }
        if published > 0 { lineageEvents.increment(by: published) }
        if failed > 0 { lineageFailures.increment(by: failed) }
        inFlight.record(health.inFlight)
        assignedPartitions.record(health.assignedPartitions)
        lag.record(consumerLag)
    }
}
