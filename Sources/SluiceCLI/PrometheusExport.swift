import CoreMetrics
import Prometheus

/// The process's metrics: swift-metrics bootstrapped once with swift-prometheus's factory, and the text `GET /metrics`
/// answers. Sluice's own metrics and any a user's step makes with swift-metrics (`Counter(label:)`, `Timer`, ...)
/// land in the same registry.
enum PrometheusExport {
    /// Histogram buckets of every `Timer`, in seconds: from 100 µs (a step, a memory-only request) to 10 s.
    static let durationBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Bootstraps swift-metrics with a Prometheus factory over a new registry (once per process) and returns it.
    static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// The registry's Prometheus text exposition.
    static func text(_ registry: PrometheusCollectorRegistry) -> String {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(8192)
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}
