import Kafka
import Logging
import Pipelines
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Everything a worker needs to know, with the defaults of docs/configuration.md.
public struct WorkerConfiguration: Sendable {
    public var pipeline: AnyPipeline
    public var capture: CaptureConfiguration
    /// librdkafka properties for the consumer and the producer (`bootstrap.servers` and the `--kafka` flags).
    public var kafka: KafkaConfiguration
    public var group: String
    public var requestsTopic: String
    public var responsesTopic: String
    public var deadLetterTopic: String
    public var lineageTopic: String
    /// Requests run at once, at most.
    public var concurrency = 1024
    /// Request values larger than this get `payload_too_large`.
    public var maxPayloadBytes = 1 << 20
    /// Reply-to topics a request may name: these topics and the topics that start with one of them. Default: the
    /// responses topic.
    public var allowedReplyPrefixes: [String]
    /// How long a revoke or a stop waits for requests in flight before giving them up.
    public var drainTimeout: Duration = .seconds(30)
    /// Lineage events waiting to be published past which the worker stops taking requests.
    public var maxLineageBacklog = 65_536
    /// Recorded on every run's `run_started` as `worker`. Default: `<host name>:<process id>` (a pod's name on
    /// Kubernetes).
    public var name = WorkerConfiguration.defaultName

    public init(pipeline: AnyPipeline, capture: CaptureConfiguration, kafka: KafkaConfiguration) {
        self.pipeline = pipeline
        self.capture = capture
        self.kafka = kafka
        group = "sluice.\(pipeline.name)"
        requestsTopic = WireProtocol.requestsTopic(pipeline.name)
        responsesTopic = WireProtocol.responsesTopic(pipeline.name)
        deadLetterTopic = WireProtocol.deadLetterTopic(pipeline.name)
        lineageTopic = WireProtocol.lineageTopic
        allowedReplyPrefixes = [responsesTopic]
    }

    /// `<host name>:<process id>`.
    public static var defaultName: String {
        var host = [CChar](repeating: 0, count: 256)
        let name =
            gethostname(&host, host.count - 1) == 0
            ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown-host"
        return "\(name):\(getpid())"
    }

    /// Whether a request may ask for its response on `topic`.
    public func allowsReply(to topic: String) -> Bool {
        allowedReplyPrefixes.contains { topic.hasPrefix($0) }
    }
}

/// What `GET /health` reports.
public struct WorkerHealth: Sendable {
    /// `starting` until the consumer has joined, `serving`, then `stopping`.
    public var status: String
    public var assignedPartitions: Int
    public var inFlight: Int
}

/// A worker: consumes requests, runs the pipeline, produces responses, publishes lineage, stores offsets in order.
///
/// - Important: An offset is stored only when its request's response (and DLQ copy) is acknowledged, and every
///   earlier request of its partition is too; in BATCH the response is produced only after the run's events are
///   acknowledged. librdkafka's auto-commit commits what is stored; a revoke and a stop commit at once.
public final class Worker: Sendable {
    private struct State {
        var phase = "starting"
        var stopping = false
        var watermarks: [TopicPartition: OffsetWatermark] = [:]
        var inFlight = 0
        var slotWaiters: [CheckedContinuation<Void, Never>] = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var consumer: KafkaConsumer?
    }

    public let configuration: WorkerConfiguration
    public let metrics: WorkerMetrics
    private let logger: Logger
    private let producer: KafkaProducer
    private let tracker: KafkaTracker?
    private let runner: PipelineRunner
    private let state = Mutex(State())

    /// - Throws: ``KafkaError`` when the producer cannot be created from the configuration.
    public init(configuration: WorkerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        metrics = WorkerMetrics(pipeline: configuration.pipeline.name, capture: configuration.capture.label)
        producer = try KafkaProducer(configuration: configuration.kafka, logger: logger)
        // Memory-only publishes nothing: no tracker, and no lineage topic is needed.
        let tracker =
            configuration.capture.isMemoryOnly
            ? nil : KafkaTracker(producer: producer, topic: configuration.lineageTopic, logger: logger)
        self.tracker = tracker
        runner = PipelineRunner(tracker: tracker.map { $0 as any Tracker } ?? DiscardingTracker())
    }

    public var health: WorkerHealth {
        state.withLock { state in
            WorkerHealth(
                status: state.phase, assignedPartitions: state.consumer?.assignment.count ?? 0,
                inFlight: state.inFlight)
        }
    }

    /// The Prometheus text of ``metrics`` with the current gauges.
    public var metricsText: String {
        let health = health
        return metrics.text(
            inFlight: health.inFlight, assignedPartitions: health.assignedPartitions,
            lineage: tracker?.counts ?? (0, 0))
    }

    // MARK: - Life

    /// Consumes and serves until ``stop()``, then drains: waits for requests in flight (at most `drainTimeout`),
    /// publishes all lineage, commits, leaves the group.
    /// - Throws: ``KafkaError`` when the consumer cannot be created.
    public func run() async throws {
        var consumerSettings = configuration.kafka
        try consumerSettings.set("group.id", configuration.group)
        if consumerSettings["auto.offset.reset"] == nil { try consumerSettings.set("auto.offset.reset", "earliest") }
        let consumer = try KafkaConsumer(
            configuration: consumerSettings, topics: [configuration.requestsTopic],
            bufferCapacity: max(64, 2 * configuration.concurrency),
            rebalanceHandler: RebalanceHandler(partitionsRevoked: { [self] partitions, lost in
                await revoked(partitions, lost: lost)
            }),
            logger: logger)
        let stopped = state.withLock { state -> Bool in
            state.consumer = consumer
            if !state.stopping { state.phase = "serving" }
            return state.stopping
        }
        if stopped { consumer.stopReading() }
        let reader = Task { [self] in await read(consumer) }
        logger.info(
            "serving \(configuration.pipeline.name) from \(configuration.requestsTopic) (group \(configuration.group), capture \(configuration.capture.summary))"
        )
        await reader.value
        await drain(timeout: configuration.drainTimeout)
        await tracker?.close(timeout: .seconds(10))
        do {
            try await producer.flush(timeout: .seconds(10))
        } catch {
            logger.error("responses not acknowledged when stopping: \(error)")
        }
        do {
            try await consumer.commit()
        } catch {
            logger.warning("final commit: \(error)")
        }
        await consumer.close()
        await producer.close()
        logger.info("stopped")
    }

    /// Stops taking requests; ``run()`` then drains and returns. Requests being run are not cancelled.
    public func stop() {
        let consumer = state.withLock { state -> KafkaConsumer? in
            state.stopping = true
            state.phase = "stopping"
            defer { state.slotWaiters.removeAll() }
            for waiter in state.slotWaiters { waiter.resume() }
            return state.consumer
        }
        consumer?.stopReading()
    }

    // MARK: - Reading

    /// Reading lanes: each takes a record, runs it, takes the next. A record waiting in the consumer's buffer is
    /// taken without a thread switch; no task is created per request. A lane moves on once its response is handed
    /// to the producer; the request's slot is released when the response is acknowledged (see `handle`).
    private func read(_ consumer: KafkaConsumer) async {
        await withDiscardingTaskGroup { group in
            for _ in 0..<lanes {
                group.addTask { [self] in
                    var messages = consumer.messages.makeAsyncIterator()
                    while await acquireSlot() {
                        await waitForLineageBacklog()
                        guard let message = await messages.next() else {
                            releaseSlot()
                            return
                        }
                        state.withLock {
                            $0.watermarks[message.topicPartition, default: OffsetWatermark()].begin(message.offset)
                        }
                        await handle(message)
                    }
                }
            }
        }
    }

    /// Requests that run at once. A run that waits for its lineage (BATCH, `flush_on_step_end`) spends most of its
    /// time waiting for Kafka, so then every slot gets a lane; otherwise 64 overlap pipelines that wait for I/O and
    /// stay cheap.
    private var lanes: Int {
        let capture = configuration.capture
        let waits = !capture.isMemoryOnly && (capture.waitForTracking || capture.flushOnStepEnd)
        return waits ? configuration.concurrency : min(configuration.concurrency, 64)
    }

    /// Waits for room under `concurrency`; `false` when stopping.
    private func acquireSlot() async -> Bool {
        while true {
            let granted = state.withLock { state -> Bool? in
                if state.stopping { return false }
                if state.inFlight < configuration.concurrency {
                    state.inFlight += 1
                    return true
                }
                return nil
            }
            if let granted { return granted }
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Bool in
                    if state.stopping || state.inFlight < configuration.concurrency { return true }
                    state.slotWaiters.append(continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// Frees a slot: wakes one reader waiting for it (one slot serves one reader), and the drain when none is left.
    private func releaseSlot() {
        let (slotWaiter, drainWaiters) = state.withLock { state in
            state.inFlight -= 1
            defer { if state.inFlight == 0 { state.drainWaiters.removeAll() } }
            let slotWaiter = state.slotWaiters.isEmpty ? nil : state.slotWaiters.removeFirst()
            return (slotWaiter, state.inFlight == 0 ? state.drainWaiters : [])
        }
        slotWaiter?.resume()
        for waiter in drainWaiters { waiter.resume() }
    }

    /// Holds the reader while the lineage backlog is over its limit: memory stays bounded when Kafka is slower
    /// than the pipeline.
    private func waitForLineageBacklog() async {
        guard let tracker else { return }
        while tracker.backlog > configuration.maxLineageBacklog, !state.withLock({ $0.stopping }) {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Waits until no request is in flight, at most `timeout`.
    private func drain(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while state.withLock({ $0.inFlight }) > 0 {
            if ContinuousClock.now >= deadline {
                logger.warning("giving up \(state.withLock { $0.inFlight }) request(s) in flight after \(timeout)")
                return
            }
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { continuation in
                        let done = self.state.withLock { state -> Bool in
                            if state.inFlight == 0 { return true }
                            state.drainWaiters.append(continuation)
                            return false
                        }
                        if done { continuation.resume() }
                    }
                }
                group.addTask { try? await Task.sleep(for: .milliseconds(100)) }
                await group.next()
                group.cancelAll()
            }
        }
    }

    // MARK: - Rebalance

    /// Before partitions are given up: wait for their requests in flight (at most `drainTimeout`), so that their
    /// offsets are stored and the consumer commits them; what is still running then is given up (its request is
    /// served again by the next owner, with the same request id).
    private func revoked(_ partitions: [TopicPartition], lost: Bool) async {
        let revoked = Set(partitions)
        let deadline = ContinuousClock.now + configuration.drainTimeout
        while !lost, ContinuousClock.now < deadline {
            let pending = state.withLock { state in
                revoked.reduce(0) { $0 + (state.watermarks[$1]?.count ?? 0) }
            }
            if pending == 0 { break }
            try? await Task.sleep(for: .milliseconds(5))
        }
        state.withLock { state in
            for partition in revoked { state.watermarks[partition] = nil }
        }
    }

    // MARK: - Serving one request

    private func handle(_ message: KafkaMessage) async {
        let started = Timestamps.monotonicMicros()
        let request = Request(message)
        var replyTopic = configuration.responsesTopic
        let response: Response
        var failure: ErrorDetail?

        func reject(_ code: String, _ text: String) -> Response {
            Response(
                requestID: request.requestID, pipeline: configuration.pipeline.name, output: nil,
                error: ErrorDetail(code: code, message: text), runID: nil, capture: configuration.capture.label,
                durationMicros: Timestamps.monotonicMicros() - started)
        }

        if let problem = request.headerError {
            response = reject(WireProtocol.ErrorCode.invalidInput, problem)
        } else if let replyTo = request.replyTo, !configuration.allowsReply(to: replyTo) {
            response = reject(
                WireProtocol.ErrorCode.replyToNotAllowed,
                "reply-to topic '\(replyTo)' is not allowed (allowed: topics starting with "
                    + configuration.allowedReplyPrefixes.map { "'\($0)'" }.joined(separator: ", ") + ")")
        } else if let deadline = request.deadlineMilliseconds, Timestamps.wallMicros() / 1000 > deadline {
            replyTopic = request.replyTo ?? replyTopic
            response = reject(
                WireProtocol.ErrorCode.deadlineExceeded, "the deadline \(deadline) passed before the request ran")
        } else if let value = message.value, value.count > configuration.maxPayloadBytes {
            replyTopic = request.replyTo ?? replyTopic
            response = reject(
                WireProtocol.ErrorCode.payloadTooLarge,
                "the request is \(value.count) bytes; this worker accepts at most \(configuration.maxPayloadBytes)")
        } else if message.value == nil {
            replyTopic = request.replyTo ?? replyTopic
            response = reject(WireProtocol.ErrorCode.invalidInput, "the request has no value (a tombstone)")
        } else {
            replyTopic = request.replyTo ?? replyTopic
            let result = await configuration.pipeline.run(
                json: message.value ?? [], runner: runner,
                options: RunOptions(
                    capture: configuration.capture,
                    // Hashing the message's position is only worth it when the run is tracked.
                    runID: configuration.capture.isMemoryOnly ? nil : request.runID, requestID: request.requestID,
                    traceparent: request.traceparent, worker: configuration.name))
            switch result.outcome {
            case .success(let output):
                response = Response(
                    requestID: request.requestID, pipeline: configuration.pipeline.name, output: output, error: nil,
                    runID: result.runID, capture: result.capture.label,
                    durationMicros: Timestamps.monotonicMicros() - started)
            case .failure(let error):
                response = Response(
                    requestID: request.requestID, pipeline: configuration.pipeline.name, output: nil, error: error,
                    runID: result.runID, capture: result.capture.label,
                    durationMicros: Timestamps.monotonicMicros() - started)
            }
        }
        if let error = response.error, error.code != WireProtocol.ErrorCode.deadlineExceeded { failure = error }

        let done: @Sendable () -> Void = { [self] in
            metrics.recordResponse(
                code: response.error?.code, seconds: Double(Timestamps.monotonicMicros() - started) / 1_000_000)
            finish(message)
            releaseSlot()
        }
        // The common case: no dead-letter copy. The delivery report finishes the request on the producer's thread,
        // so no task waits for it; a failed delivery takes the slow path below.
        if failure == nil {
            let topic = replyTopic
            do {
                try await producer.send(response.message(topic: topic, key: message.key)) { [self] result in
                    if case .success = result { return done() }
                    Task { await deliverSlowly(response, to: topic, request: request, deadLetter: nil, done: done) }
                }
                return
            } catch {
                logger.warning("response to \(request.requestID) not enqueued: \(error)")
            }
        }
        await deliverSlowly(response, to: replyTopic, request: request, deadLetter: failure, done: done)
    }

    /// Delivers with ``deliver(_:to:request:deadLetter:)`` and finishes the request if it was delivered; releases
    /// its slot either way.
    private func deliverSlowly(
        _ response: Response, to replyTopic: String, request: Request, deadLetter: ErrorDetail?,
        done: @Sendable () -> Void
    ) async {
        if await deliver(response, to: replyTopic, request: request, deadLetter: deadLetter) {
            done()
        } else {
            releaseSlot()
        }
    }

    /// Produces the response (and the DLQ copy) and waits for their acknowledgements, trying again while the
    /// worker runs. A response its reply-to topic refuses goes to the responses topic as an `internal` error.
    /// - Returns: whether both were acknowledged, so the request's offset may be stored.
    private func deliver(
        _ response: Response, to replyTopic: String, request: Request, deadLetter: ErrorDetail?
    ) async -> Bool {
        var response = response
        var topic = replyTopic
        var attempt = 0
        while true {
            do {
                if let deadLetter {
                    _ = try await producer.send(
                        DeadLetter.message(for: request, error: deadLetter, topic: configuration.deadLetterTopic))
                    metrics.recordDeadLetter()
                }
                break
            } catch {
                attempt += 1
                logger.error("dead-letter copy of \(request.requestID) not delivered (try \(attempt)): \(error)")
                guard await retryLater(attempt) else { return false }
            }
        }
        attempt = 0
        while true {
            do {
                _ = try await producer.send(response.message(topic: topic, key: request.message.key))
                return true
            } catch {
                attempt += 1
                logger.error("response to \(request.requestID) on \(topic) not delivered (try \(attempt)): \(error)")
                if topic != configuration.responsesTopic {
                    response.output = nil
                    response.error = ErrorDetail(
                        code: WireProtocol.ErrorCode.internal,
                        message: "the response could not be delivered to reply-to topic '\(topic)': \(error)")
                    topic = configuration.responsesTopic
                    continue
                }
                guard await retryLater(attempt) else { return false }
            }
        }
    }

    /// Waits before another try (up to a second); `false` when the worker is stopping: the request is then served
    /// again after a restart.
    private func retryLater(_ attempt: Int) async -> Bool {
        if state.withLock({ $0.stopping }) { return false }
        try? await Task.sleep(for: .milliseconds(min(1000, 10 << min(attempt, 7))))
        return !state.withLock { $0.stopping }
    }

    /// The request is done: move its partition's watermark and store the offset it allows.
    private func finish(_ message: KafkaMessage) {
        let partition = message.topicPartition
        let (next, consumer) = state.withLock { state in
            (state.watermarks[partition]?.finish(message.offset), state.consumer)
        }
        guard let next, let consumer else { return }
        do {
            try consumer.storeOffset(partition, nextOffset: next)
        } catch {
            logger.warning("storing offset \(next) of \(partition): \(error)")
        }
    }
}

/// The tracker of memory-only workers: nothing is recorded, since memory-only runs report nothing.
struct DiscardingTracker: Tracker {
    func record(_ event: PendingEvent) {}
    func flush(runID: String) async throws {}
}
