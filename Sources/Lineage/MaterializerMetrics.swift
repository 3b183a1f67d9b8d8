import CoreMetrics
import Kafka
import Pipelines

/// What a materializer counts, through swift-metrics (docs/operations.md, "Metrics"): the counts of its folds, its
/// gauges, and how long a batch's phases take.
///
/// - `sluice_materializer_records_total`, `_events_total`, `_runs_written_total`, `_malformed_total`,
///   `_incomplete_total`, `_partial_total`: what ``FoldCounts`` counts.
/// - `sluice_materializer_open_runs`, `sluice_materializer_assigned_partitions`, `sluice_materializer_lag_records`
///   (over the partitions) and `sluice_materializer_partition_lag_records{partition}`: gauges, set by ``refresh(_:)``.
/// - `sluice_materializer_phase_duration_seconds{phase}`: per batch, `fold` (events into runs, lines written) and
///   `sync` (made durable) per partition; `index`: per transaction of the index's thread (one batch, or several when
///   it is behind).
final class MaterializerMetrics: Sendable {
    private let records: Counter
    private let events: Counter
    private let runsWritten: Counter
    private let malformed: Counter
    private let incomplete: Counter
    private let partial: Counter
    private let openRuns: Gauge
    private let assignedPartitions: Gauge
    private let lag: Gauge
    private let partitionLag: KeyedGauges<TopicPartition>
    let fold: Timer
    let sync: Timer
    let index: Timer

    init(factory: any MetricsFactory) {
        func counter(_ name: String) -> Counter {
            Counter(label: "sluice_materializer_\(name)_total", factory: factory)
        }
        func gauge(_ name: String) -> Gauge { Gauge(label: "sluice_materializer_\(name)", factory: factory) }
        func phase(_ name: String) -> Timer {
            Timer(label: "sluice_materializer_phase_duration_seconds", dimensions: [("phase", name)], factory: factory)
        }
        records = counter("records")
        events = counter("events")
        runsWritten = counter("runs_written")
        malformed = counter("malformed")
        incomplete = counter("incomplete")
        partial = counter("partial")
        openRuns = gauge("open_runs")
        assignedPartitions = gauge("assigned_partitions")
        lag = gauge("lag_records")
        partitionLag = KeyedGauges(label: "sluice_materializer_partition_lag_records", factory: factory) {
            [("partition", "\($0.partition)")]
        }
        fold = phase("fold")
        sync = phase("sync")
        index = phase("index")
    }

    /// Counts a batch's folds.
    func record(_ counts: FoldCounts) {
        for (counter, value) in [
            (records, counts.records), (events, counts.events), (runsWritten, counts.runsWritten),
            (malformed, counts.malformed), (incomplete, counts.incomplete), (partial, counts.partial),
        ] where value > 0 {
            counter.increment(by: value)
        }
    }

    /// Sets the gauges from `status`, before the metrics are read. A partition no longer reported loses its series.
    func refresh(_ status: MaterializerStatus) {
        openRuns.record(status.openRuns)
        assignedPartitions.record(status.assignedPartitions)
        lag.record(status.lag.values.reduce(0, +))
        partitionLag.record(status.lag)
    }
}
