import Kafka
import Prometheus
import Testing

@testable import Serving

/// A Prometheus registry of a test's own, for a worker's `metricsFactory`.
final class MetricsRegistry: Sendable {
    let registry = PrometheusCollectorRegistry()
    var factory: PrometheusMetricsFactory { PrometheusMetricsFactory(registry: registry) }

    /// The Prometheus text of the registry.
    var text: String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    /// The value of the first sample whose line starts with `prefix` (a name, or a name and the start of its labels).
    func value(of prefix: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { $0.split(separator: " ").last }
            .flatMap { Double($0) }
    }
}

@Suite("A worker's metrics through swift-metrics, read from a Prometheus registry")
struct WorkerMetricsTests {
    private let labels = #"pipeline="p",capture="REALTIME""#

    @Test func responsesAreCountedByStatusAndCodeAndTimedInSeconds() {
        let registry = MetricsRegistry()
        let metrics = WorkerMetrics(pipeline: "p", capture: "REALTIME", factory: registry.factory)
        metrics.recordResponses([
            (code: nil, nanoseconds: 200_000), (code: nil, nanoseconds: 3_000_000),
            (code: "invalid_input", nanoseconds: 50_000),
        ])
        metrics.recordResponses([(code: "invalid_input", nanoseconds: 50_000)])
        metrics.recordDeadLetter()
        metrics.recordRefusal(record: "response", code: "MSG_SIZE_TOO_LARGE")
        #expect(registry.value(of: #"sluice_requests_total{\#(labels),status="ok",code=""}"#) == 2)
        #expect(registry.value(of: #"sluice_requests_total{\#(labels),status="error",code="invalid_input"}"#) == 2)
        #expect(registry.value(of: #"sluice_request_duration_seconds_count{\#(labels)}"#) == 4)
        let sum = registry.value(of: #"sluice_request_duration_seconds_sum{\#(labels)}"#) ?? 0
        #expect(abs(sum - 0.0033) < 1e-9, "\(registry.text)")
        // swift-prometheus's default buckets start at 5 ms: all four are in the first.
        #expect(
            registry.value(of: #"sluice_request_duration_seconds_bucket{\#(labels),le="0.005"}"#) == 4,
            "\(registry.text)")
        #expect(registry.value(of: #"sluice_dead_letters_total{pipeline="p"}"#) == 1)
        #expect(
            registry.value(
                of: #"sluice_delivery_refusals_total{pipeline="p",record="response",code="MSG_SIZE_TOO_LARGE"}"#) == 1)
    }

    @Test func gaugesAndLineageCountersFollowWhatRefreshReads() {
        let registry = MetricsRegistry()
        let metrics = WorkerMetrics(pipeline: "p", capture: "REALTIME", factory: registry.factory)
        let health = WorkerHealth(status: .serving, assignedPartitions: 2, inFlight: 7, joinedGroup: true)
        let p0 = TopicPartition("p.requests", 0)
        let p1 = TopicPartition("p.requests", 1)
        metrics.refresh(health, lag: [p0: 12, p1: 0], lineage: (published: 30, failed: 1))
        metrics.refresh(health, lag: [p0: 5], lineage: (published: 45, failed: 1))
        #expect(registry.value(of: #"sluice_requests_in_flight{pipeline="p"}"#) == 7)
        #expect(registry.value(of: #"sluice_assigned_partitions{pipeline="p"}"#) == 2)
        #expect(registry.value(of: #"sluice_lineage_events_total{pipeline="p"}"#) == 45)
        #expect(registry.value(of: #"sluice_lineage_failures_total{pipeline="p"}"#) == 1)
        #expect(
            registry.value(of: #"sluice_consumer_lag_records{pipeline="p",topic="p.requests",partition="0"}"#) == 5)
        // Partition 1 is no longer assigned: its series is gone.
        #expect(!registry.text.contains(#"partition="1""#), "\(registry.text)")
    }
}
