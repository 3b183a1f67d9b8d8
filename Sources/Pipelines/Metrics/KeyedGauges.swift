import CoreMetrics
import Synchronization

/// The gauges of one metric, one series per key (a partition, ...), made on first use: ``record(_:)`` sets those it is
/// given and removes the series of keys it is no longer given (a partition revoked), as Prometheus expects of a
/// series that ends.
package final class KeyedGauges<Key: Hashable & Sendable>: Sendable {
    private let label: String
    private let dimensions: @Sendable (Key) -> [(String, String)]
    private let factory: any MetricsFactory
    private let gauges = Mutex<[Key: Gauge]>([:])

    /// - Parameter dimensions: a key's labels.
    package init(
        label: String, factory: any MetricsFactory, dimensions: @escaping @Sendable (Key) -> [(String, String)]
    ) {
        self.label = label
        self.factory = factory
        self.dimensions = dimensions
    }

    package func record(_ values: [Key: Int64]) {
        let (current, gone) = gauges.withLock { gauges in
            var current: [(Gauge, Int64)] = []
            var kept: [Key: Gauge] = [:]
            for (key, value) in values {
                let gauge = gauges[key] ?? Gauge(label: label, dimensions: dimensions(key), factory: factory)
                kept[key] = gauge
                current.append((gauge, value))
            }
            let gone = gauges.filter { kept[$0.key] == nil }.map(\.value)
            gauges = kept
            return (current, gone)
        }
        for (gauge, value) in current { gauge.record(value) }
        for gauge in gone { gauge.destroy() }
    }
}
