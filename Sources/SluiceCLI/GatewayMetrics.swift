import CoreMetrics
import Serving
import Synchronization

/// What a gateway counts, through swift-metrics (exported on its `GET /metrics`; docs/gateway.md):
///
/// - `sluice_gateway_calls_total{pipeline, status}`: calls answered, by HTTP status (`pipeline` is empty for a name
///   that is no pipeline, so that callers cannot add labels).
/// - `sluice_gateway_call_duration_seconds{pipeline}`: from reading a call's headers to its answer.
/// - `sluice_gateway_waiting_calls`, `sluice_gateway_reply_partitions`: gauges, set by ``refresh(_:)``.
/// - `sluice_gateway_dropped_responses_total{reason}`: responses dropped, `late` (after their call timed out),
///   `duplicate` or `unmatched` (another gateway's).
final class GatewayMetrics: Sendable {
    /// A pipeline's series, made on its first call.
    private struct Series {
        var duration: Timer
        var calls: [Int: Counter] = [:]
    }

    private let series = Mutex<[String: Series]>([:])
    private let waiting = Gauge(label: "sluice_gateway_waiting_calls")
    private let replyPartitions = Gauge(label: "sluice_gateway_reply_partitions")
    private let late = Counter(label: "sluice_gateway_dropped_responses_total", dimensions: [("reason", "late")])
    private let duplicates = Counter(
        label: "sluice_gateway_dropped_responses_total", dimensions: [("reason", "duplicate")])
    private let unmatched = Counter(
        label: "sluice_gateway_dropped_responses_total", dimensions: [("reason", "unmatched")])
    /// The client's counts as last reported.
    private let reported = Mutex(PipelineClient.Dropped())

    /// Counts one call answered with `status` after `duration`.
    func record(pipeline: String, status: Int, duration: Duration) {
        let (counter, timer) = series.withLock { series in
            var entry =
                series[pipeline]
                ?? Series(
                    duration: Timer(label: "sluice_gateway_call_duration_seconds", dimensions: [("pipeline", pipeline)])
                )
            let counter =
                entry.calls[status]
                ?? Counter(
                    label: "sluice_gateway_calls_total",
                    dimensions: [("pipeline", pipeline), ("status", String(status))])
            if entry.calls[status] == nil {
                entry.calls[status] = counter
                series[pipeline] = entry
            }
            return (counter, entry.duration)
        }
        counter.increment()
        timer.recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    /// Sets the gauges, and the dropped-response counters to the client's counts.
    func refresh(_ client: PipelineClient) {
        waiting.record(client.waitingCount)
        replyPartitions.record(client.replyPartitions.count)
        let (before, now) = reported.withLock { reported in
            let before = reported
            reported = client.dropped
            return (before, reported)
        }
        if now.late > before.late { late.increment(by: now.late - before.late) }
        if now.duplicates > before.duplicates { duplicates.increment(by: now.duplicates - before.duplicates) }
        if now.unmatched > before.unmatched { unmatched.increment(by: now.unmatched - before.unmatched) }
    }
}
