import ArgumentParser
import Foundation
import Kafka
import Logging
import Pipelines
import Serving
import Synchronization

/// `sluice bench`: load against a running fleet, and what came back: throughput, latency percentiles, and whether
/// anything was missing or duplicated.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract:
            "Send requests to a running fleet and report throughput, latency percentiles, missing and duplicates.",
        discussion: """
            Keeps --window requests in flight (each response lets the next request go), for --requests requests or \
            --seconds, whichever ends first, then waits up to --timeout seconds for the stragglers. Latency is from \
            producing a request to reading its response. Prints one line of JSON.
            """
    )

    @OptionGroup var client: ClientOptions

    @Option(name: .long, help: "The input of every request, as JSON.")
    var data = #"{"text": "the quick brown fox jumps over the lazy dog"}"#

    @Option(name: .long, help: "Requests to send.")
    var requests = 10_000

    @Option(name: .long, help: "Requests in flight at once.")
    var window = 64

    @Option(name: .long, help: "Stop sending after this many seconds.")
    var seconds = 60.0

    @Option(name: .long, help: "Seconds to wait for the last responses.")
    var timeout = 30.0

    func validate() throws {
        guard requests >= 1, window >= 1, seconds > 0, timeout > 0 else {
            throw ValidationError("--requests, --window, --seconds and --timeout must be positive")
        }
    }

    func run() async throws {
        let logger = Logger(label: "sluice.bench")
        let settings = try client.settings()
        let requestsTopic = client.requestsTopic ?? WireProtocol.requestsTopic(client.pipeline)
        let responsesTopic = client.responsesTopic ?? WireProtocol.responsesTopic(client.pipeline)
        let load = BenchLoad(window: window)
        var generator = SystemRandomNumberGenerator()
        let prefix = String(generator.next() as UInt64, radix: 36)
        let (assignments, assigned) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let consumer = try KafkaConsumer(
            configuration: settings.merging([
                "group.id": "sluice.bench.\(prefix)", "auto.offset.reset": "latest", "enable.auto.commit": "false",
            ]),
            topics: [responsesTopic], bufferCapacity: 8192,
            rebalanceHandler: RebalanceHandler(partitionsAssigned: { _ in assigned.yield() }), logger: logger)
        // Ready once the responses partitions are assigned (at most 30 s), so that no response goes unread; then
        // half a second for the consumer to resolve where `latest` is.
        await Self.wait(until: { !consumer.assignment.isEmpty }, on: assignments, atMost: .seconds(30))
        try await Task.sleep(for: .milliseconds(500))
        let reader = Task {
            for await message in consumer.messages {
                guard let id = message.headers.string(named: WireProtocol.Header.requestID) else { continue }
                load.received(id, ok: message.headers.string(named: WireProtocol.Header.status) == "ok")
            }
        }
        // Like Sluice's request-reply client (PipelineClient), a request with no other in flight goes at once rather
        // than after linger.ms.
        let producer = try KafkaProducer(configuration: settings, promptLane: true, logger: logger)
        let value = Array(data.utf8)
        let started = ContinuousClock.now
        let sendUntil = started + .milliseconds(Int(seconds * 1000))
        var sent = 0
        while sent < requests, ContinuousClock.now < sendUntil {
            await load.acquire()
            let id = "\(prefix)-\(sent)"
            let inFlight = load.sending(id)
            try await producer.send(
                OutgoingMessage(
                    topic: requestsTopic, value: value,
                    headers: [
                        KafkaHeader(WireProtocol.Header.requestID, id),
                        KafkaHeader(WireProtocol.Header.replyTo, responsesTopic),
                    ]), promptly: inFlight == 1
            ) { result in
                if case .failure = result { load.failed(id) }
            }
            sent += 1
        }
        await Self.wait(
            until: { load.outstanding == 0 }, on: load.allAnswered, atMost: .milliseconds(Int(timeout * 1000)))
        let elapsed = started.duration(to: load.lastResponse ?? ContinuousClock.now)
        reader.cancel()
        await producer.close()
        await consumer.close()
        print(load.report(sent: sent, elapsed: elapsed))
    }

    /// Waits until `condition` holds, checked now and at each element of `events` (what can make it true), or for
    /// `limit`, whichever comes first.
    private static func wait(
        until condition: @escaping @Sendable () -> Bool, on events: AsyncStream<Void>, atMost limit: Duration
    ) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                if condition() { return }
                for await _ in events where condition() { return }
            }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }
}

/// The bookkeeping of one bench run: send times by request id, latencies, duplicates, and the window.
final class BenchLoad: Sendable {
    private struct State {
        var sentAt: [String: ContinuousClock.Instant] = [:]
        var latenciesMicros: [Int64] = []
        var errors = 0
        var duplicates = 0
        var failedSends = 0
        var answered: Set<String> = []
        var lastResponse: ContinuousClock.Instant?
        var free: Int
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state: Mutex<State>
    private let answered: AsyncStream<Void>.Continuation
    /// Yields each time no request is outstanding any more (every one answered, or failed to send); an element may be
    /// stale, so a waiter checks ``outstanding`` too.
    let allAnswered: AsyncStream<Void>

    init(window: Int) {
        state = Mutex(State(free: window))
        (allAnswered, answered) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    var outstanding: Int { state.withLock { $0.sentAt.count } }
    var lastResponse: ContinuousClock.Instant? { state.withLock { $0.lastResponse } }

    /// Waits for room in the window.
    func acquire() async {
        await withCheckedContinuation { continuation in
            let granted = state.withLock { state -> Bool in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiter = continuation
                return false
            }
            if granted { continuation.resume() }
        }
    }

    /// Notes that request `id` is being sent.
    /// - Returns: the requests in flight, this one included.
    func sending(_ id: String) -> Int {
        let now = ContinuousClock.now
        return state.withLock { state in
            state.sentAt[id] = now
            return state.sentAt.count
        }
    }

    func failed(_ id: String) {
        release { state in
            state.failedSends += 1
            return state.sentAt.removeValue(forKey: id) != nil
        }
    }

    func received(_ id: String, ok: Bool) {
        let now = ContinuousClock.now
        release { state in
            guard let sentAt = state.sentAt.removeValue(forKey: id) else {
                if state.answered.contains(id) { state.duplicates += 1 }
                return false
            }
            state.answered.insert(id)
            let latency = sentAt.duration(to: now)
            state.latenciesMicros.append(
                latency.components.seconds * 1_000_000 + latency.components.attoseconds / 1_000_000_000_000)
            if !ok { state.errors += 1 }
            state.lastResponse = now
            return true
        }
    }

    /// Runs `update`; when it frees a window slot, hands the slot to the waiting sender, if any.
    private func release(_ update: (inout State) -> Bool) {
        let (waiter, none) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Bool) in
            guard update(&state) else { return (nil, false) }
            let none = state.sentAt.isEmpty
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, none)
            }
            state.free += 1
            return (nil, none)
        }
        waiter?.resume()
        if none { answered.yield() }
    }

    /// One line of JSON.
    func report(sent: Int, elapsed: Duration) -> String {
        let snapshot = state.withLock { $0 }
        let sorted = snapshot.latenciesMicros.sorted()
        func percentile(_ fraction: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) / 1000
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        var writer = JSONWriter()
        writer.object { out in
            out.field("sent", sent)
            out.field("answered", sorted.count)
            out.field("missing", snapshot.sentAt.count)
            out.field("duplicates", snapshot.duplicates)
            out.field("errors", snapshot.errors)
            out.field("failed_sends", snapshot.failedSends)
            out.field("seconds", (seconds * 1000).rounded() / 1000)
            out.field("responses_per_second", seconds > 0 ? (Double(sorted.count) / seconds).rounded() : 0)
            out.field("p50_ms", percentile(0.5))
            out.field("p90_ms", percentile(0.9))
            out.field("p99_ms", percentile(0.99))
            out.field("max_ms", Double(sorted.last ?? 0) / 1000)
        }
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}
