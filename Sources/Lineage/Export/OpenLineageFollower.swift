import CoreMetrics
import Logging
import Pipelines
import ServiceLifecycle
import Synchronization
import SystemSupport

#if canImport(Glibc)
    import Glibc
#endif

/// An OpenLineage endpoint's refusal of an event (for HTTP, a 4xx other than 429): sending it again would not help.
public struct OpenLineageRefusal: Error, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Sends each run a materializer stores to an OpenLineage endpoint, as ``OpenLineage/events(of:settings:)`` makes
/// them, at least once (`sluice materialize --openlineage-url`, docs/openlineage.md).
///
/// The store is the backlog. The follower reads the lines a batch made durable back from their segments, and records
/// per lineage partition how far it has sent each segment (`openlineage/p<N>.positions` under the store's root, written
/// after each chunk). A crash or a restart sends again what was not recorded; an endpoint that is down costs no memory
/// but those positions, and the follower tries again after a pause that grows to 30 s. An event the endpoint refuses
/// (``OpenLineageRefusal``) is logged, counted and skipped. A partition followed for the first time starts at the end
/// of its segments: what the store held before is `sluice runs export`'s to send.
///
/// A `Service` of swift-service-lifecycle: a graceful shutdown (or cancellation) stops it at once, keeping what was
/// sent.
public final class OpenLineageFollower: Service, Sendable {
    /// Sends one event (a JSON object). Throws ``OpenLineageRefusal`` when the endpoint refuses it, anything else when
    /// it could not be delivered (tried again later).
    public typealias Send = @Sendable (_ event: [UInt8]) async throws -> Void

    /// How far one segment is sent and how far it is durable.
    private struct Progress {
        let partition: Int32
        /// The segment's first offset: older segments are sent first.
        let firstOffset: Int64
        var sent: Int
        var durable: Int
    }

    /// A part of a segment to send: its whole lines in `start..<end`.
    private struct Chunk {
        let segment: String
        let partition: Int32
        let start: Int
        let end: Int
    }

    private struct State {
        var segments: [String: Progress] = [:]
        var partitions: Set<Int32> = []

        /// The next part of a segment that is durable but not sent, at most `maxBytes` of it (more when one line is
        /// longer).
        func nextChunk(maxBytes: Int) -> Chunk? {
            let waiting = segments.filter { $0.value.sent < $0.value.durable }
            guard let (segment, progress) = waiting.min(by: { $0.value.firstOffset < $1.value.firstOffset }) else {
                return nil
            }
            return Chunk(
                segment: segment, partition: progress.partition, start: progress.sent,
                end: min(progress.durable, progress.sent + maxBytes))
        }

        /// The partition's positions once `chunk` is sent up to `end`, to record before ``sent(_:upTo:)``; `nil` when
        /// the partition is no longer followed.
        func positions(after chunk: Chunk, upTo end: Int) -> [String: Int]? {
            guard partitions.contains(chunk.partition), let progress = segments[chunk.segment] else { return nil }
            var positions = positions(of: chunk.partition)
            positions[chunk.segment] = max(progress.sent, end)
            return positions
        }

        /// `chunk` is sent up to `end`, and recorded.
        mutating func sent(_ chunk: Chunk, upTo end: Int) {
            guard partitions.contains(chunk.partition), var progress = segments[chunk.segment] else { return }
            progress.sent = max(progress.sent, end)
            segments[chunk.segment] = progress
        }

        func positions(of partition: Int32) -> [String: Int] {
            segments.filter { $0.value.partition == partition }.mapValues(\.sent)
        }

        var backlogBytes: Int { segments.values.reduce(0) { $0 + $1.durable - $1.sent } }
    }

    private let root: String
    private let settings: OpenLineageSettings
    private let send: Send
    private let logger: Logger
    private let state = Mutex(State())
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    private let sentEvents: Counter
    private let refusedEvents: Counter
    private let failedAttempts: Counter
    private let backlog: Gauge

    /// Bytes of a segment read and sent at once, before the position is recorded.
    static let chunkBytes = 256 << 10
    /// Runs whose events are in flight at once (each run's events go one after the other).
    static let runsInFlight = 16
    /// The longest pause between two attempts to deliver an event.
    static let maxPause: Duration = .seconds(30)

    /// A follower of the store at `root`, sending through `send`.
    public init(
        root: String, settings: OpenLineageSettings, logger: Logger, metricsFactory: (any MetricsFactory)? = nil,
        send: @escaping Send
    ) {
        self.root = root
        self.settings = settings
        self.send = send
        self.logger = logger
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let factory = metricsFactory ?? MetricsSystem.factory
        sentEvents = Counter(
            label: "sluice_openlineage_events_total", dimensions: [("outcome", "sent")], factory: factory)
        refusedEvents = Counter(
            label: "sluice_openlineage_events_total", dimensions: [("outcome", "refused")], factory: factory)
        failedAttempts = Counter(label: "sluice_openlineage_failed_attempts_total", factory: factory)
        backlog = Gauge(label: "sluice_openlineage_backlog_bytes", factory: factory)
    }

    /// Bytes of run lines durable in the store but not sent yet, over the partitions followed.
    public var backlogBytes: Int { state.withLock { $0.backlogBytes } }

    /// Brings `sluice_openlineage_backlog_bytes` up to date: call it before reading the metrics.
    public func refreshMetrics() {
        backlog.record(backlogBytes)
    }

    // MARK: - What the materializer tells

    /// Starts following `partition`'s segments (the materializer opened it): from its recorded positions, or from the
    /// segments' ends when it has none. Blocking (files): call it from a thread of your own.
    /// - Throws: ``StoreError`` when the positions or the segments cannot be read or written.
    func follow(partition: Int32) throws {
        let recorded = try readPositions(of: partition)
        var found: [String: Progress] = [:]
        for segment in try StoreNames.segments(root: root) {
            guard let firstOffset = Self.firstOffset(ofSegment: segment, partition: partition) else { continue }
            let size = try FileSystem.size("\(root)/\(segment)")
            found[segment] = Progress(
                partition: partition, firstOffset: firstOffset,
                sent: recorded.map { min($0[segment] ?? 0, size) } ?? size, durable: size)
        }
        if recorded == nil { try writePositions(found.mapValues(\.sent), of: partition) }
        state.withLock { state in
            state.partitions.insert(partition)
            for (segment, progress) in found { state.segments[segment] = progress }
        }
        wake.yield()
    }

    /// `lines` are durable: sends them.
    func written(_ lines: [WrittenLine]) {
        guard !lines.isEmpty else { return }
        state.withLock { state in
            for line in lines where state.partitions.contains(line.partition) {
                let end = line.offset + line.length + 1
                // A segment created after `follow(partition:)` is new: none of it was sent.
                var progress =
                    state.segments[line.segment]
                    ?? Progress(
                        partition: line.partition,
                        firstOffset: Self.firstOffset(ofSegment: line.segment, partition: line.partition) ?? 0,
                        sent: 0, durable: 0)
                progress.durable = max(progress.durable, end)
                state.segments[line.segment] = progress
            }
        }
        wake.yield()
    }

    /// The first offset of `segment` (a path relative to the root) when it is one of `partition`'s.
    private static func firstOffset(ofSegment segment: String, partition: Int32) -> Int64? {
        segment.split(separator: "/").last.flatMap { StoreNames.firstOffset(ofSegment: $0, partition: partition) }
    }

    /// Stops following `partitions` (they were revoked): their positions stay as last recorded.
    func release(_ partitions: [Int32]) {
        state.withLock { state in
            state.partitions.subtract(partitions)
            state.segments = state.segments.filter { state.partitions.contains($0.value.partition) }
        }
    }

    // MARK: - Sending

    /// Sends what the store makes durable until a graceful shutdown or cancellation.
    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { [self] in
                for await _ in wakeups {
                    while let chunk = state.withLock({ $0.nextChunk(maxBytes: Self.chunkBytes) }) {
                        try Task.checkCancellation()
                        try await send(chunk)
                    }
                }
            }
        } catch is CancellationError {
            // Stopped: what was sent is recorded.
        }
    }

    /// Sends the runs of `chunk`'s whole lines, then records how far the segment is sent (on cancellation, up to the
    /// last of the runs before which all were sent).
    private func send(_ chunk: Chunk) async throws {
        let path = "\(root)/\(chunk.segment)"
        let lines = try await DedicatedThread.run(name: "sluice-openlineage") {
            var bytes = try FileSystem.readFile(path, from: chunk.start, limit: chunk.end - chunk.start)
            if bytes.last != UInt8(ascii: "\n"), let lastNewline = bytes.lastIndex(of: UInt8(ascii: "\n")) {
                bytes.removeSubrange((lastNewline + 1)...)
            }
            return bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast().map(
                Array.init)
        }
        if lines.isEmpty {
            let durable = state.withLock { $0.segments[chunk.segment]?.durable } ?? chunk.end
            if durable > chunk.end {
                // One line longer than a chunk: read it whole.
                return try await send(
                    Chunk(segment: chunk.segment, partition: chunk.partition, start: chunk.start, end: durable))
            }
            logger.warning("openlineage: \(chunk.segment) ends without a newline at byte \(chunk.end), skipped")
        }
        var ends: [Int] = []
        var end = chunk.start
        for line in lines {
            end += line.count + 1
            ends.append(end)
        }
        let sentRuns = await sendRuns(lines, of: chunk)
        let sentUpTo = lines.isEmpty ? chunk.end : sentRuns == 0 ? chunk.start : ends[sentRuns - 1]
        // Recorded first, then counted as sent: a backlog of 0 means the positions are on disk.
        if let positions = state.withLock({ $0.positions(after: chunk, upTo: sentUpTo) }) {
            try await DedicatedThread.run(name: "sluice-openlineage") { [self] in
                try writePositions(positions, of: chunk.partition)
            }
            state.withLock { $0.sent(chunk, upTo: sentUpTo) }
        }
        try Task.checkCancellation()
    }

    /// Sends each line's run, ``runsInFlight`` runs at a time. Returns how many lines from the first had their run sent
    /// (or refused, or unreadable): all of them unless cancelled.
    private func sendRuns(_ lines: [[UInt8]], of chunk: Chunk) async -> Int {
        var done = [Bool](repeating: false, count: lines.count)
        await withTaskGroup(of: (Int, Bool).self) { group in
            var next = 0
            func start() {
                let index = next
                next += 1
                let line = lines[index]
                group.addTask { [self] in (index, await sendRun(line, of: chunk)) }
            }
            while next < min(lines.count, Self.runsInFlight) { start() }
            for await (index, sent) in group {
                done[index] = sent
                if sent, next < lines.count, !Task.isCancelled { start() }
            }
        }
        return done.firstIndex(of: false) ?? lines.count
    }

    /// Sends one run's events in order, each until it is delivered or refused. Returns `false` when cancelled first.
    private func sendRun(_ line: [UInt8], of chunk: Chunk) async -> Bool {
        let run: StoredRun
        do {
            run = try StoredRun(line: line)
        } catch {
            logger.warning("openlineage: a line of \(chunk.segment) is not a run (\(error)), skipped")
            return true
        }
        for event in OpenLineage.events(of: run, settings: settings) {
            var pause: Duration = .seconds(1)
            while true {
                do {
                    try await send(event)
                    sentEvents.increment()
                    break
                } catch let refusal as OpenLineageRefusal {
                    refusedEvents.increment()
                    logger.error("openlineage: an event of run \(run.runID) refused, skipped: \(refusal)")
                    break
                } catch {
                    if Task.isCancelled { return false }
                    failedAttempts.increment()
                    logger.warning("openlineage: \(error); trying again in \(pause)")
                    do {
                        try await Task.sleep(for: pause)
                    } catch {
                        return false
                    }
                    pause = min(pause * 2, Self.maxPause)
                }
            }
        }
        return true
    }

    // MARK: - Positions

    /// `openlineage/p<N>.positions`: per segment of the partition, the bytes sent, as lines `<bytes>\t<segment>`.
    private func positionsPath(of partition: Int32) -> String {
        "\(root)/openlineage/p\(partition).positions"
    }

    /// The partition's recorded positions, `nil` when it has none.
    private func readPositions(of partition: Int32) throws -> [String: Int]? {
        let path = positionsPath(of: partition)
        guard FileSystem.fileExists(path) else { return nil }
        var positions: [String: Int] = [:]
        for line in try FileSystem.readFile(path).split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: "\t"), maxSplits: 1)
            guard fields.count == 2, let sent = Int(String(decoding: fields[0], as: UTF8.self)) else {
                throw StoreError("a line is not <bytes>\\t<segment> in", path: path)
            }
            positions[String(decoding: fields[1], as: UTF8.self)] = sent
        }
        return positions
    }

    /// Replaces the partition's recorded positions: written to a new file, then renamed over the old one.
    private func writePositions(_ positions: [String: Int], of partition: Int32) throws {
        let path = positionsPath(of: partition)
        try FileSystem.makeDirectories(FileSystem.parentDirectory(of: path))
        let text = positions.sorted { $0.key < $1.key }.map { "\($0.value)\t\($0.key)\n" }.joined()
        let temporary = "\(path).\(getpid()).new"
        try FileSystem.writeNewFile(temporary, Array(text.utf8))
        try FileSystem.rename(temporary, to: path)
    }
}
