import CoreMetrics
import Synchronization

/// `sluice_step_duration_seconds{pipeline, step, status}`: how long each attempt of a tracked run's step took
/// (`status` is `completed` or `failed`), through swift-metrics. Memory-only runs are not timed per step: they bind no
/// run context, on purpose (docs/capture.md); their requests are timed whole by the worker.
final class StepMetrics: Sendable {
    private struct Key: Hashable {
        var pipeline: String
        var step: String
        var completed: Bool
    }

    private let factory: any MetricsFactory
    /// One timer per pipeline, step and status, made on first use.
    private let timers = Mutex<[Key: Timer]>([:])

    init(factory: any MetricsFactory) {
        self.factory = factory
    }

    func record(pipeline: String, step: String, completed: Bool, micros: Int64) {
        let key = Key(pipeline: pipeline, step: step, completed: completed)
        let timer = timers.withLock { timers in
            if let timer = timers[key] { return timer }
            let timer = Timer(
                label: "sluice_step_duration_seconds",
                dimensions: [("pipeline", pipeline), ("step", step), ("status", completed ? "completed" : "failed")],
                factory: factory)
            timers[key] = timer
            return timer
        }
        timer.recordMicroseconds(micros)
    }
}
