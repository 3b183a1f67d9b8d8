import Kafka
import Synchronization

/// Which pipelines a caller may call by name: those whose requests topic exists on the cluster (and, when a list is
/// given, only those on it). For callers that take a pipeline's name from outside, such as `sluice gateway`, which
/// must not produce to a topic that does not exist (a cluster that creates topics on first use would create it).
///
/// The cluster's topic list is cached: a name found is trusted for `knownLifetime`, a name not found makes the
/// directory list the topics again, at most once per `listingInterval` (concurrent lookups share one listing).
public final class PipelineDirectory: Sendable {
    /// What a lookup found.
    public enum Lookup: Sendable, Equatable {
        /// The pipeline can be called on `requestsTopic`.
        case found(requestsTopic: String)
        /// No such pipeline, and why.
        case notFound(String)
        /// The cluster did not answer the listing.
        case unavailable(String)
    }

    private struct State {
        var topics: Set<String> = []
        var listedAt: ContinuousClock.Instant?
        var listing: Task<Void, Never>?
        var listingError: String?

        enum Decision {
            case found
            case notFound
            case wait(Task<Void, Never>)
            case list
        }

        /// What a lookup of `topic` does now.
        mutating func decide(
            _ topic: String, now: ContinuousClock.Instant, knownLifetime: Duration, interval: Duration
        )
            -> Decision
        {
            let age = listedAt.map { now - $0 }
            if let age, topics.contains(topic), age < knownLifetime { return .found }
            if let listing { return .wait(listing) }
            if let age, age < interval { return topics.contains(topic) ? .found : .notFound }
            return .list
        }
    }

    private let admin: KafkaAdmin
    private let allowed: Set<String>?
    private let knownLifetime: Duration
    private let listingInterval: Duration
    private let state = Mutex(State())

    /// - Parameters:
    ///   - allowed: the only pipelines that may be called; `nil`: any whose requests topic exists.
    public init(
        admin: KafkaAdmin, allowed: Set<String>? = nil, knownLifetime: Duration = .seconds(60),
        listingInterval: Duration = .seconds(1)
    ) {
        self.admin = admin
        self.allowed = allowed
        self.knownLifetime = knownLifetime
        self.listingInterval = listingInterval
    }

    /// Whether `name` is a pipeline that can be called, and its requests topic.
    public func lookup(_ name: String) async -> Lookup {
        for _ in 0..<2 {
            switch step(name) {
            case .answer(let lookup): return lookup
            case .listing(let listing): await listing.value
            }
        }
        let topic = WireProtocol.requestsTopic(name)
        if let error = state.withLock({ $0.listingError }) { return .unavailable(error) }
        return state.withLock { $0.topics.contains(topic) } ? .found(requestsTopic: topic) : notFound(name, topic)
    }

    /// ``lookup(_:)`` for a caller that must not wait: `nil` when the answer needs the cluster's topics listed (the
    /// listing starts; ``lookup(_:)`` waits for it).
    public func lookupNow(_ name: String) -> Lookup? {
        if case .answer(let lookup) = step(name) { return lookup }
        return nil
    }

    private enum Step {
        case answer(Lookup)
        /// The answer comes once `listing` has listed the cluster's topics.
        case listing(Task<Void, Never>)
    }

    private func step(_ name: String) -> Step {
        guard Self.isPipelineName(name) else {
            return .answer(
                .notFound("'\(name)' is not a pipeline name (letters, digits, '.', '_' and '-', at most 200)"))
        }
        if let allowed, !allowed.contains(name) {
            return .answer(.notFound("this gateway does not serve pipeline '\(name)'"))
        }
        let topic = WireProtocol.requestsTopic(name)
        switch state.withLock({ $0.decide(topic, now: .now, knownLifetime: knownLifetime, interval: listingInterval) })
        {
        case .found: return .answer(.found(requestsTopic: topic))
        case .notFound: return .answer(notFound(name, topic))
        case .wait(let listing): return .listing(listing)
        case .list: return .listing(list())
        }
    }

    private func notFound(_ name: String, _ topic: String) -> Lookup {
        if let error = state.withLock({ $0.listingError }) { return .unavailable(error) }
        return .notFound("no pipeline '\(name)': its requests topic \(topic) does not exist")
    }

    /// Starts a listing of the cluster's topics, or joins the one in flight.
    private func list() -> Task<Void, Never> {
        state.withLock { state in
            if let listing = state.listing { return listing }
            let listing = Task { [admin, self] in
                let result: Result<Set<String>, any Error>
                do {
                    result = .success(Set(try await admin.listTopics(timeout: .seconds(10)).map(\.name)))
                } catch {
                    result = .failure(error)
                }
                self.state.withLock { state in
                    state.listing = nil
                    state.listedAt = .now
                    switch result {
                    case .success(let topics):
                        state.topics = topics
                        state.listingError = nil
                    case .failure(let error):
                        state.listingError = "the Kafka cluster did not list its topics: \(error)"
                    }
                }
            }
            state.listing = listing
            return listing
        }
    }

    /// Whether `name` can be a pipeline's: Kafka's topic name characters, with room for the `.requests` suffix.
    public static func isPipelineName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 200
            && name.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
            }
    }
}
