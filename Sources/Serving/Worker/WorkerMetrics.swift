import Synchronization

/// What a worker counts, and its Prometheus text (`GET /metrics`).
///
/// - `sluice_requests_total{pipeline, status, code}`: responses produced (`code` is empty for `ok`).
/// - `sluice_request_duration_seconds{pipeline, capture}`: from taking a request to its response's acknowledgement.
/// - `sluice_requests_in_flight{pipeline}`, `sluice_assigned_partitions{pipeline}`.
/// - `sluice_lineage_events_total{pipeline}`, `sluice_lineage_failures_total{pipeline}`: events acknowledged and
///   failed.
/// - `sluice_dead_letters_total{pipeline}`.
/// - `sluice_delivery_refusals_total{pipeline, record, code}`: responses and dead-letter copies Kafka refused with an
///   error that retrying cannot cure (`record` is `response` or `dead_letter`, `code` librdkafka's error name).
public final class WorkerMetrics: Sendable {
    /// Upper bounds of the latency histogram's buckets, in seconds.
    static let bucketBounds: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]

    private struct State {
        var requests: [String: Int] = [:]  // "status code" -> count
        var buckets = [Int](repeating: 0, count: WorkerMetrics.bucketBounds.count + 1)
        var durationSum: Double = 0
        var durationCount = 0
        var deadLetters = 0
        var refusals: [String: Int] = [:]  // "record code" -> count
    }

    let pipeline: String
    let capture: String
    private let state = Mutex(State())

    init(pipeline: String, capture: String) {
        self.pipeline = pipeline
        self.capture = capture
    }

    /// Counts responses delivered: each with its error code (`nil` for `ok`) and its seconds since the request
    /// was taken.
    func recordResponses(_ responses: some Sequence<(code: String?, seconds: Double)>) {
        state.withLock { state in
            for (code, seconds) in responses {
                state.requests[code.map { "error \($0)" } ?? "ok ", default: 0] += 1
                let bucket = Self.bucketBounds.firstIndex { seconds <= $0 } ?? Self.bucketBounds.count
                state.buckets[bucket] += 1
                state.durationSum += seconds
                state.durationCount += 1
            }
        }
    }

    func recordDeadLetter() {
        state.withLock { $0.deadLetters += 1 }
    }

    func recordRefusal(record: String, code: String) {
        state.withLock { $0.refusals["\(record) \(code)", default: 0] += 1 }
    }

    /// The Prometheus text exposition.
    func text(inFlight: Int, assignedPartitions: Int, lineage: (published: Int, failed: Int)) -> String {
        let snapshot = state.withLock { $0 }
        let pipelineLabel = "pipeline=\"\(escape(pipeline))\""
        var lines: [String] = []
        lines.append("# HELP sluice_requests_total Responses produced, by status and error code.")
        lines.append("# TYPE sluice_requests_total counter")
        for (key, count) in snapshot.requests.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            let code = parts.count > 1 ? String(parts[1]) : ""
            lines.append(
                "sluice_requests_total{\(pipelineLabel),status=\"\(parts[0])\",code=\"\(escape(code))\"} \(count)")
        }
        let labels = "\(pipelineLabel),capture=\"\(escape(capture))\""
        lines.append("# HELP sluice_request_duration_seconds From taking a request to its response's acknowledgement.")
        lines.append("# TYPE sluice_request_duration_seconds histogram")
        var cumulative = 0
        for (index, bound) in Self.bucketBounds.enumerated() {
            cumulative += snapshot.buckets[index]
            lines.append("sluice_request_duration_seconds_bucket{\(labels),le=\"\(bound)\"} \(cumulative)")
        }
        cumulative += snapshot.buckets[Self.bucketBounds.count]
        lines.append("sluice_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(cumulative)")
        lines.append("sluice_request_duration_seconds_sum{\(labels)} \(snapshot.durationSum)")
        lines.append("sluice_request_duration_seconds_count{\(labels)} \(snapshot.durationCount)")
        lines.append("# HELP sluice_requests_in_flight Requests taken and not yet finished.")
        lines.append("# TYPE sluice_requests_in_flight gauge")
        lines.append("sluice_requests_in_flight{\(pipelineLabel)} \(inFlight)")
        lines.append("# HELP sluice_assigned_partitions Request partitions this process owns.")
        lines.append("# TYPE sluice_assigned_partitions gauge")
        lines.append("sluice_assigned_partitions{\(pipelineLabel)} \(assignedPartitions)")
        lines.append("# HELP sluice_lineage_events_total Lineage events acknowledged by Kafka.")
        lines.append("# TYPE sluice_lineage_events_total counter")
        lines.append("sluice_lineage_events_total{\(pipelineLabel)} \(lineage.published)")
        lines.append("# HELP sluice_lineage_failures_total Lineage events whose delivery failed.")
        lines.append("# TYPE sluice_lineage_failures_total counter")
        lines.append("sluice_lineage_failures_total{\(pipelineLabel)} \(lineage.failed)")
        lines.append("# HELP sluice_dead_letters_total Failed requests copied to the dead-letter topic.")
        lines.append("# TYPE sluice_dead_letters_total counter")
        lines.append("sluice_dead_letters_total{\(pipelineLabel)} \(snapshot.deadLetters)")
        lines.append(
            "# HELP sluice_delivery_refusals_total Responses and dead-letter copies refused with an error retrying cannot cure."
        )
        lines.append("# TYPE sluice_delivery_refusals_total counter")
        for (key, count) in snapshot.refusals.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: " ", maxSplits: 1)
            lines.append(
                "sluice_delivery_refusals_total{\(pipelineLabel),record=\"\(parts[0])\",code=\"\(escape(String(parts[1])))\"} \(count)"
            )
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func escape(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
