import Synchronization

/// How much of a run is tracked and whether the response waits for it: the pipeline's capture mode and its knobs.
///
/// Each mode sets every knob (see ``init(mode:)``); a mapping may then set knobs one by one. See docs/capture.md.
public struct CaptureConfiguration: Sendable, Hashable {
    /// The capture modes of docs/capture.md. Memory-only is REALTIME with `runs: off` or `persistence: memory`.
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        case batch = "BATCH"
        case realtime = "REALTIME"
        case off = "OFF"
        case custom = "CUSTOM"
    }

    /// Which log lines a step's run keeps.
    public enum Logs: String, Sendable, Hashable, CaseIterable {
        /// Every line.
        case all
        /// Warnings and errors only.
        case errors
        /// None.
        case off
    }

    /// Which runs are tracked.
    public enum Runs: String, Sendable, Hashable, CaseIterable {
        /// Every run.
        case on
        /// None: the run is memory-only.
        case off
        /// Only runs that fail: a run's events wait in memory and are published only if it fails (at most
        /// ``CaptureConfiguration/errorsOnlyEventLimit`` of them).
        case errors
    }

    /// Where tracking goes. `memory` keeps nothing: the run is memory-only.
    public enum Persistence: String, Sendable, Hashable, CaseIterable {
        case durable
        case memory
    }

    public var mode: Mode
    /// Whether runs and step runs are tracked: every run, none (memory-only), or only those that fail.
    public var runs: Runs
    public var persistence: Persistence
    /// Whether the response waits until every event of the run is acknowledged (BATCH).
    public var waitForTracking: Bool
    /// Whether each step waits until its events are acknowledged before the next step runs.
    public var flushOnStepEnd: Bool
    /// Whether step runs carry their input and output artifacts (`false`: ids, status and timings only).
    public var artifacts: Bool
    public var metadata: Bool
    public var logs: Logs
    /// Whether steps that ask for caching are cached.
    public var caching: Bool
    /// Artifact values up to this many bytes of canonical JSON travel inside events; larger ones by hash and size.
    public var inlineLimit: Int
    /// The fraction of runs tracked as the rest of the configuration says, from 0 to 1; the others run memory-only.
    /// Which runs is a function of the run id alone (``tracks(runID:)``), so a redelivered request decides the same.
    public var sampleRate: Double

    /// The defaults of `mode`; CUSTOM starts from BATCH's.
    public init(mode: Mode) {
        self.mode = mode
        runs = .on
        persistence = .durable
        waitForTracking = mode == .batch || mode == .custom
        flushOnStepEnd = false
        artifacts = true
        metadata = mode != .off
        logs = mode == .off ? .off : .all
        caching = mode != .off
        inlineLimit = 4096
        sampleRate = 1
    }

    public static let batch = CaptureConfiguration(mode: .batch)
    public static let realtime = CaptureConfiguration(mode: .realtime)
    public static let off = CaptureConfiguration(mode: .off)
    /// Nothing tracked, nothing published: REALTIME with `runs: off`.
    public static let memoryOnly: CaptureConfiguration = {
        var configuration = CaptureConfiguration(mode: .realtime)
        configuration.runs = .off
        return configuration
    }()

    /// REALTIME with `flush_on_step_end` as given.
    public static func realtime(flushOnStepEnd: Bool) -> CaptureConfiguration {
        var configuration = CaptureConfiguration.realtime
        configuration.flushOnStepEnd = flushOnStepEnd
        return configuration
    }

    /// Nothing is tracked or published: `runs: off` or `persistence: memory`. No run id, no events, no caching.
    public var isMemoryOnly: Bool { runs == .off || persistence == .memory }

    /// A run's events wait in memory and are published only if the run fails (`runs: errors`).
    public var keepsFailedRunsOnly: Bool { runs == .errors && persistence == .durable }

    /// Whether each step waits for its events before the next one runs: `flush_on_step_end`, except where only
    /// failed runs are kept, whose events wait for the run's end.
    public var flushesEachStep: Bool { flushOnStepEnd && runs == .on && persistence == .durable }

    /// The most events a run of ``keepsFailedRunsOnly`` holds, and so publishes; at the limit it drops its oldest
    /// events but the first (docs/capture.md, "Errors-only runs").
    public static let errorsOnlyEventLimit = 1024

    /// Whether steps that ask for caching are cached under this configuration.
    public var cachesSteps: Bool { caching && !isMemoryOnly }

    /// The mode as recorded on runs and responses: `BATCH`, `REALTIME`, `OFF`, `CUSTOM`, or `MEMORY` for memory-only.
    public var label: String { isMemoryOnly ? "MEMORY" : mode.rawValue }

    /// Whether the run `runID` is tracked at this ``sampleRate``: every run at 1, none at 0, and otherwise the runs
    /// whose id hashes below the rate (docs/capture.md, "Sampled runs", gives the hash for other languages).
    public func tracks(runID: String) -> Bool {
        if sampleRate >= 1 { return true }
        if sampleRate <= 0 { return false }
        return Self.sampleFraction(runID: runID) < sampleRate
    }

    /// Where `runID` falls in [0, 1): FNV-1a (64 bits) of its UTF-8, mixed by SplitMix64's finalizer, top 53 bits.
    public static func sampleFraction(runID: String) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in runID.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        hash ^= hash >> 31
        return Double(hash >> 11) * 0x1p-53
    }
}

// MARK: - Knobs as text

extension CaptureConfiguration {
    /// The knobs a mapping may set, in the order they are printed.
    public static let knobNames = [
        "mode", "runs", "persistence", "wait_for_tracking", "flush_on_step_end", "artifacts", "metadata", "logs",
        "caching", "inline_limit", "sample_rate",
    ]

    /// Every knob and its value, as recorded on runs and printed at start-up.
    public var knobs: [(name: String, value: JSONValue)] {
        [
            ("mode", .string(mode.rawValue)), ("runs", .string(runs.rawValue)),
            ("persistence", .string(persistence.rawValue)), ("wait_for_tracking", .bool(waitForTracking)),
            ("flush_on_step_end", .bool(flushOnStepEnd)), ("artifacts", .bool(artifacts)),
            ("metadata", .bool(metadata)), ("logs", .string(logs.rawValue)), ("caching", .bool(caching)),
            ("inline_limit", .int(Int64(inlineLimit))), ("sample_rate", .double(sampleRate)),
        ]
    }

    /// The knobs as one JSON object, as `run_started` records them. Computed once per distinct configuration.
    public var knobsObject: JSONValue {
        // The last one asked for first: a worker asks for its one configuration's at every run, and comparing the
        // knobs costs a fraction of hashing them.
        if let last = Self.lastKnobObject.withLock({ $0 }), last.configuration == self { return last.object }
        let object =
            Self.knobObjects.withLock { $0[self] }
            ?? JSONValue.object(Dictionary(uniqueKeysWithValues: knobs.map { ($0.name, $0.value) }))
        Self.knobObjects.withLock { objects in
            if objects.count >= 64 { objects.removeAll() }
            objects[self] = object
        }
        Self.lastKnobObject.withLock { $0 = (self, object) }
        return object
    }

    private static let knobObjects = Mutex<[CaptureConfiguration: JSONValue]>([:])
    private static let lastKnobObject = Mutex<(configuration: CaptureConfiguration, object: JSONValue)?>(nil)

    /// One line: `REALTIME (runs=on, persistence=durable, ...)`.
    public var summary: String {
        "\(label) (" + knobs.dropFirst().map { "\($0.name)=\(Self.text($0.value))" }.joined(separator: ", ") + ")"
    }

    private static func text(_ value: JSONValue) -> String {
        switch value {
        case .string(let text): text
        case .bool(let flag): String(flag)
        case .int(let number): String(number)
        case .double(let number): String(number)
        default: "\(value)"
        }
    }
}
