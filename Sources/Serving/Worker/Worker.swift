import CoreMetrics
import Kafka
import Logging
import Pipelines
import ServiceLifecycle
import Synchronization
import Tracing

/// A worker: consumes requests, runs the pipeline, produces responses, publishes lineage, stores offsets in order.
///
/// A `Service` of swift-service-lifecycle: in a `ServiceGroup`, a graceful shutdown (or the task's cancellation)
/// stops it as ``stop()`` does, and ``run()`` returns once it has drained.
///
/// - Important: An offset is stored only when its request's response (and DLQ copy) is acknowledged, and every
///   earlier request of its partition is too; in BATCH the response is produced only after the run's events are
///   acknowledged. librdkafka's auto-commit commits what is stored; a revoke and a stop commit at once.
public final class Worker: Service, Sendable {
    private typealias State = WorkerStateMachine<
        KafkaConsumer, CheckedContinuation<Void, Never>, CheckedContinuation<Bool, Never>
    >

    public let configuration: WorkerConfiguration
    public let metrics: WorkerMetrics
    private let logger: Logger
    private let producer: KafkaProducer
    /// The producer's `message.max.bytes`: no record the worker sends is larger.
    private let recordLimit: Int
    private let tracker: KafkaTracker?
    private let runner: PipelineRunner
    private let state: Mutex<State>

    /// A request whose response was acknowledged in the producer's current delivery round.
    private struct Acknowledged {
        /// Where its request was read.
        let partition: TopicPartition
        let offset: Int64
        /// The response's error code; `nil` for `ok`.
        let code: String?
        /// When it was taken (``Timestamps/monotonicMicros()``).
        let started: Int64
    }

    /// Requests acknowledged in the current delivery round, finished together when it ends (``finishAcknowledged()``).
    private let acknowledged = Mutex<[Acknowledged]>([])

    /// - Throws: ``KafkaError`` when the producer cannot be created from the configuration.
    public init(configuration: WorkerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "pipeline"] = .string(configuration.pipeline.name)
        self.logger = logger
        state = Mutex(State(concurrency: configuration.concurrency))
        metrics = WorkerMetrics(
            pipeline: configuration.pipeline.name, capture: configuration.capture.label,
            factory: configuration.metricsFactory ?? MetricsSystem.factory)
        var producerSettings = configuration.kafka
        if producerSettings["message.max.bytes"] == nil {
            try producerSettings.set("message.max.bytes", String(Self.defaultRecordLimit(configuration)))
        }
        let recordLimit =
            producerSettings["message.max.bytes"].flatMap { Int($0) } ?? Self.defaultRecordLimit(configuration)
        self.recordLimit = recordLimit
        // Records waiting in librdkafka, responses and lineage together, stay within this many KiB: past it the
        // tracker's thread waits, then the backlog bound holds the readers (librdkafka's own default is 1 GiB).
        if producerSettings["queue.buffering.max.kbytes"] == nil {
            try producerSettings.set(
                "queue.buffering.max.kbytes", String(Self.defaultProducerQueueKilobytes(recordLimit: recordLimit)))
        }
        producer = try KafkaProducer(configuration: producerSettings, logger: logger)
        // Memory-only publishes nothing: no tracker, and no lineage topic is needed.
        let tracker =
            configuration.capture.isMemoryOnly
            ? nil
            : try KafkaTracker(
                producer: producer, topic: configuration.lineageTopic, recordLimit: recordLimit, logger: logger)
        self.tracker = tracker
        runner = PipelineRunner(
            tracker: tracker.map { $0 as any Tracker } ?? DiscardingTracker(), logger: self.logger,
            metricsFactory: configuration.metricsFactory, tracer: configuration.tracer)
        producer.onDeliveryRound { [weak self] in self?.finishAcknowledged() }
    }

    /// librdkafka's `queue.buffering.max.kbytes` for the producer unless the configuration sets it: 64 MiB, or room
    /// for four of the largest records when they are larger (a record larger than the queue could never be sent).
    static func defaultProducerQueueKilobytes(recordLimit: Int) -> Int {
        max(65_536, 4 * recordLimit / 1024)
    }

    /// librdkafka's `auto.commit.interval.ms` unless the configuration sets it (librdkafka's own default is 5000).
    static let defaultCommitIntervalMilliseconds = 1000

    /// The producer's `message.max.bytes` unless the configuration sets it: librdkafka's default of 1 000 000, or
    /// room for a dead-letter copy of the largest request accepted and its headers.
    static func defaultRecordLimit(_ configuration: WorkerConfiguration) -> Int {
        max(1_000_000, configuration.maxPayloadBytes + 64 * 1024)
    }

    public var health: WorkerHealth {
        let now = ContinuousClock.now
        let (status, consumer, requests) = state.withLock { state in
            (state.status(at: now, stallLimit: configuration.deliveryStallLimit), state.consumer, state.requests)
        }
        // Outside the state lock: the consumer takes its own.
        var health = WorkerHealth(
            status: status, assignedPartitions: consumer?.assignment.count ?? 0, inFlight: requests,
            joinedGroup: consumer?.hasJoinedGroup ?? false)
        if health.status == .serving, let consumer, consumer.timeSinceLastPoll > configuration.pollStallLimit {
            health.status = .notPolling
        }
        return health
    }

    /// Brings the worker's gauges (in flight, partitions, consumer lag) and lineage counters up to date: call it
    /// before reading the metrics factory's registry.
    public func refreshMetrics() {
        let consumer = state.withLock { $0.consumer }
        metrics.refresh(health, lag: consumer?.lag() ?? [:], lineage: tracker?.counts ?? (0, 0))
    }

    // MARK: - Life

    /// Consumes and serves until ``stop()``, a graceful shutdown or cancellation, then drains: waits for requests in
    /// flight (at most `drainTimeout`), publishes all lineage, commits, leaves the group.
    /// - Throws: ``KafkaError`` when the consumer cannot be created.
    public func run() async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await serve()
        } onCancelOrGracefulShutdown: { [self] in
            stop()
        }
    }

    private func serve() async throws {
        var consumerSettings = configuration.kafka
        try consumerSettings.set("group.id", configuration.group)
        if consumerSettings["auto.offset.reset"] == nil { try consumerSettings.set("auto.offset.reset", "earliest") }
        // A crash re-serves what was finished since the last commit: commit stored offsets every second.
        if consumerSettings["auto.commit.interval.ms"] == nil {
            try consumerSettings.set("auto.commit.interval.ms", String(Self.defaultCommitIntervalMilliseconds))
        }
        let consumer = try KafkaConsumer(
            configuration: consumerSettings, topics: [configuration.requestsTopic],
            bufferCapacity: max(64, 2 * configuration.concurrency),
            rebalanceHandler: RebalanceHandler(partitionsRevoked: { [self] partitions, lost in
                await revoked(partitions, lost: lost)
            }),
            logger: logger)
        let stopped = state.withLock { $0.consumerCreated(consumer) }
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
        await commitFinished(consumer)
        await consumer.close()
        await producer.close()
        logger.info("stopped")
    }

    /// Commits the offsets the drain stored. A group coordinator refuses commits while the group rebalances
    /// (`REBALANCE_IN_PROGRESS`, and `ILLEGAL_GENERATION` until this member has rejoined; the embedded broker does so
    /// for a whole join window, docs/operations.md): the commit is tried again, with back-off, for up to
    /// `drainTimeout`, since what is not committed is served again by the partitions' next owner.
    private func commitFinished(_ consumer: KafkaConsumer) async {
        let deadline = ContinuousClock.now + configuration.drainTimeout
        var attempt = 0
        while true {
            do {
                try await consumer.commit()
                if attempt > 0 { logger.info("final commit accepted after \(attempt) refusal(s)") }
                return
            } catch let error as KafkaError
                where [.rebalanceInProgress, .illegalGeneration].contains(error.code) && ContinuousClock.now < deadline
            {
                attempt += 1
                if attempt == 1 {
                    logger.info("final commit refused while the group rebalances, trying again: \(error)")
                }
                try? await Task.sleep(for: .milliseconds(50 * min(attempt, 10)))
            } catch {
                logger.warning("final commit: \(error)")
                return
            }
        }
    }

    /// Stops taking requests; ``run()`` then drains and returns. Requests being run are not cancelled.
    public func stop() {
        let (consumer, slotWaiters) = state.withLock { $0.stop() }
        for waiter in slotWaiters { waiter.resume() }
        tracker?.releaseRoomWaits()
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
                            releaseSlots(endingRequests: false)
                            return
                        }
                        state.withLock { $0.begin(message.topicPartition, offset: message.offset) }
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
        let waits = !capture.isMemoryOnly && capture.waitForTracking || capture.flushesEachStep
        return waits ? configuration.concurrency : min(configuration.concurrency, 64)
    }

    /// Waits for room under `concurrency`; `false` when stopping.
    private func acquireSlot() async -> Bool {
        while true {
            if let granted = state.withLock({ $0.acquireSlot() }) { return granted }
            await withCheckedContinuation { continuation in
                if !state.withLock({ $0.waitForSlot(continuation) }) { continuation.resume() }
            }
        }
    }

    /// Frees `count` slots, and ends their requests if they held them: wakes a reader waiting for a slot per slot
    /// (one slot serves one reader), and the drains and revokes whose wait is over.
    private func releaseSlots(_ count: Int = 1, endingRequests: Bool) {
        let (slotWaiters, progressed) = state.withLock { $0.releaseSlots(count, endingRequests: endingRequests) }
        for waiter in slotWaiters { waiter.resume() }
        for waiter in progressed { waiter.resume(returning: true) }
    }

    /// Waits until `isDone` holds for the state, checked now and whenever a request ends, or until `deadline`.
    /// - Returns: whether `isDone` held (`false`: the deadline passed).
    private func waitForRequests(
        until deadline: ContinuousClock.Instant, _ isDone: @escaping @Sendable (State) -> Bool
    ) async -> Bool {
        let id = state.withLock { $0.makeWaitID() }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { [self] in
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let outcome = state.withLock {
                            $0.waitForProgress(id: id, until: isDone, continuation, cancelled: Task.isCancelled)
                        }
                        if let outcome { continuation.resume(returning: outcome) }
                    }
                } onCancel: {
                    state.withLock { $0.cancelProgressWait(id: id) }?.resume(returning: false)
                }
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Holds the reader while the lineage backlog is over its limit: memory stays bounded when Kafka is slower
    /// than the pipeline. ``stop()`` ends the wait.
    private func waitForLineageBacklog() async {
        await tracker?.waitForRoom(backlog: configuration.maxLineageBacklog)
    }

    /// Waits until no request is in flight, at most `timeout`.
    private func drain(timeout: Duration) async {
        let drained = await waitForRequests(until: .now + timeout) { $0.slotsTaken == 0 }
        if !drained {
            logger.warning("giving up \(state.withLock { $0.requests }) request(s) in flight after \(timeout)")
        }
    }

    // MARK: - Rebalance

    /// Before partitions are given up: wait for their requests in flight (at most `drainTimeout`), so that their
    /// offsets are stored and the consumer commits them; what is still running then is given up (its request is
    /// served again by the next owner, with the same request id). Requests of other partitions go on meanwhile.
    private func revoked(_ partitions: [TopicPartition], lost: Bool) async {
        let revoked = Set(partitions)
        if !lost {
            let finished = await waitForRequests(until: .now + configuration.drainTimeout) { state in
                // Once stopping with no slot taken, what is left was given up by the drain: nothing will end.
                revoked.allSatisfy { state.inFlight(of: $0) == 0 } || (state.isStopping && state.slotsTaken == 0)
            }
            if !finished {
                logger.warning("revoking \(partitions.sorted()) with requests still running: they are served again")
            }
        }
        state.withLock { $0.forget(revoked) }
    }

    // MARK: - Serving one request

    private func handle(_ message: KafkaMessage) async {
        let started = Timestamps.monotonicMicros()
        let request = Request(message)
        if request.traceparentError != nil { metrics.recordInvalidTraceparent() }
        guard let tracer = configuration.tracer else {
            // Not tracing: the response echoes the request's trace context when it is one.
            let traceparent = request.traceparentError == nil ? request.traceparent : nil
            await respond(to: request, started: started, traceparent: traceparent, span: nil)
            return
        }
        // The request's span: a child of the request's trace context, if it has one; the runner's step spans are its
        // children, and the response carries it on.
        var context = ServiceContext.topLevel
        if request.traceparentError == nil {
            tracer.extract(message.headers, into: &context, using: KafkaHeadersExtractor())
        }
        let span = tracer.startSpan(configuration.pipeline.name, context: context, ofKind: .consumer)
        span.attributes["messaging.system"] = "kafka"
        span.attributes["messaging.operation.type"] = "process"
        span.attributes["messaging.destination.name"] = message.topic
        span.attributes["messaging.destination.partition.id"] = "\(message.partition)"
        span.attributes["messaging.kafka.offset"] = Int(message.offset)
        span.attributes["messaging.message.id"] = request.requestID
        await ServiceContext.withValue(span.context) {
            await respond(
                to: request, started: started, traceparent: W3CTraceparent.of(span.context, tracer: tracer), span: span)
        }
        span.end()
    }

    /// Answers `request` (taken at `started`): runs it, unless it is refused, and sends the response with
    /// `traceparent`; `span`, when tracing, learns the run and the outcome.
    private func respond(to request: Request, started: Int64, traceparent: String?, span: (any Span)?) async {
        let message = request.message
        // Where the response goes: the request's reply-to topic and partition when its headers are usable, else the
        // responses topic.
        let replyToAllowed = request.replyTo.map(configuration.allowsReply(to:)) ?? true
        let honoursHeaders = request.headerError == nil && replyToAllowed
        let replyTopic = honoursHeaders ? request.replyTo ?? configuration.responsesTopic : configuration.responsesTopic
        let replyPartition = honoursHeaders ? request.replyPartition : nil
        var response: Response
        var failure: ErrorDetail?

        func reject(_ code: String, _ text: String) -> Response {
            Response(
                requestID: request.requestID, pipeline: configuration.pipeline.name, output: nil,
                error: ErrorDetail(code: code, message: text), runID: nil, capture: configuration.capture.label,
                durationMicros: Timestamps.monotonicMicros() - started)
        }

        if let problem = request.headerError {
            response = reject(WireProtocol.ErrorCode.invalidInput, problem)
        } else if !replyToAllowed, let replyTo = request.replyTo {
            response = reject(
                WireProtocol.ErrorCode.replyToNotAllowed,
                "reply-to topic '\(replyTo)' is not allowed (allowed: topics starting with "
                    + configuration.allowedReplyPrefixes.map { "'\($0)'" }.joined(separator: ", ") + ")")
        } else if let deadline = request.deadlineMilliseconds, Timestamps.wallMicros() / 1000 > deadline {
            response = reject(
                WireProtocol.ErrorCode.deadlineExceeded, "the deadline \(deadline) passed before the request ran")
        } else if let value = message.value, value.count > configuration.maxPayloadBytes {
            response = reject(
                WireProtocol.ErrorCode.payloadTooLarge,
                "the request is \(value.count) bytes; this worker accepts at most \(configuration.maxPayloadBytes)")
        } else if message.value == nil {
            response = reject(WireProtocol.ErrorCode.invalidInput, "the request has no value (a tombstone)")
        } else {
            let result = await configuration.pipeline.run(
                json: message.value ?? [], runner: runner,
                options: RunOptions(
                    capture: configuration.capture,
                    // Hashing the message's position is only worth it when the run is tracked.
                    runID: configuration.capture.isMemoryOnly ? nil : request.runID, requestID: request.requestID,
                    traceparent: request.traceparent, traceparentError: request.traceparentError,
                    worker: configuration.name))
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
        response.traceparent = traceparent
        if let error = response.error, error.code != WireProtocol.ErrorCode.deadlineExceeded { failure = error }
        if let span {
            if let runID = response.runID { span.attributes["sluice.run_id"] = runID }
            if let error = response.error {
                span.attributes["sluice.error_code"] = error.code
                span.setStatus(SpanStatus(code: .error, message: error.message))
            }
        }

        // The common case: no dead-letter copy. The delivery report finishes the request on the producer's thread,
        // with the others of its delivery round, so no task waits for it; a failed delivery takes the slow path below.
        if failure == nil {
            let topic = replyTopic
            let partition = replyPartition
            do {
                try await producer.send(response.message(topic: topic, partition: partition, key: message.key)) {
                    [self, response] result in
                    if case .success = result {
                        let acknowledgement = Acknowledged(
                            partition: message.topicPartition, offset: message.offset, code: response.error?.code,
                            started: started)
                        acknowledged.withLock { $0.append(acknowledgement) }
                        return
                    }
                    Task {
                        await deliverSlowly(
                            response, to: topic, partition: partition, request: request, deadLetter: nil,
                            started: started)
                    }
                }
                return
            } catch {
                // Not enqueued (too large, unknown topic, ...): the slow path tries again and says why.
            }
        }
        await deliverSlowly(
            response, to: replyTopic, partition: replyPartition, request: request, deadLetter: failure,
            started: started)
    }

    // MARK: - Delivering

    /// Delivers with ``deliver(_:to:partition:request:deadLetter:)`` and finishes the request (taken at `started`)
    /// with the code of the response delivered; when the worker stops first, only frees its slot (the request is
    /// served again after a restart).
    private func deliverSlowly(
        _ response: Response, to replyTopic: String, partition replyPartition: Int32?, request: Request,
        deadLetter: ErrorDetail?, started: Int64
    ) async {
        if let delivered = await deliver(
            response, to: replyTopic, partition: replyPartition, request: request, deadLetter: deadLetter)
        {
            finish([
                Acknowledged(
                    partition: request.message.topicPartition, offset: request.message.offset,
                    code: delivered.error?.code, started: started)
            ])
        } else {
            releaseSlots(endingRequests: true)
        }
    }

    /// What Kafka said to one record.
    private enum SendOutcome {
        case acknowledged
        /// An error that retrying cannot cure (``KafkaError/Code/isRetriable`` is `false`).
        case refused(KafkaError)
        /// An error worth retrying.
        case failed(KafkaError)
    }

    private func send(_ record: OutgoingMessage) async -> SendOutcome {
        do {
            _ = try await producer.send(record)
            return .acknowledged
        } catch let error as KafkaError {
            return error.code.isRetriable ? .failed(error) : .refused(error)
        } catch {
            return .failed(KafkaError(code: .invalidArgument, message: "producing to \(record.topic): \(error)"))
        }
    }

    /// Produces the dead-letter copy (if any), then the response, and waits for their acknowledgements.
    ///
    /// Errors worth retrying are retried with back-off while the worker runs (the first, then every power-of-two
    /// try is logged; the health turns `stalled` after ``WorkerConfiguration/deliveryStallLimit``). Errors that
    /// retrying cannot cure end the tries, each logged once and counted: a copy too large for the broker is sent
    /// again within ``DeadLetter/refusedCopyBudget``, else the request goes without a copy. A response its reply-to
    /// topic does not take (refused or failed), or its reply partition refuses (one that does not exist), goes to the
    /// responses topic, partitioned by its key, as an `internal` error; any other refused response is replaced once
    /// by an `internal` error naming the cause. A request that ran fine and is
    /// answered `internal` so gets a dead-letter copy. When even the `internal` error is refused, the request is
    /// given up as answered, so that its offset is stored and nothing waits for it.
    /// - Returns: the response delivered (or given up), or `nil` when the worker stopped first.
    private func deliver(
        _ response: Response, to replyTopic: String, partition replyPartition: Int32?, request: Request,
        deadLetter: ErrorDetail?
    ) async -> Response? {
        var response = response
        var topic = replyTopic
        var partition = replyPartition
        var deadLetter = deadLetter
        var copyBudget = recordLimit
        var replaced = false
        // Whether the request has (or needs no) dead-letter copy: it failed before delivery, or expired.
        var copied = deadLetter != nil || response.error != nil
        var attempt = 0
        defer { if attempt > 0 { endRetrying() } }
        /// The worker's logger with the request's ids, made only when something is logged.
        func logger() -> Logger {
            var logger = self.logger
            logger[metadataKey: "request_id"] = .string(request.requestID)
            if let runID = response.runID { logger[metadataKey: "run_id"] = .string(runID) }
            return logger
        }
        func retry(_ what: String, _ error: KafkaError) async -> Bool {
            attempt += 1
            if attempt == 1 { beginRetrying() }
            if attempt & (attempt - 1) == 0 {
                logger().error("\(what) of \(request.requestID) not delivered (try \(attempt); trying again): \(error)")
            }
            return await retryLater(attempt)
        }
        while true {
            if let error = deadLetter {
                let copy = DeadLetter.message(
                    for: request, error: error, topic: configuration.deadLetterTopic, budget: copyBudget)
                switch await send(copy) {
                case .acknowledged:
                    metrics.recordDeadLetter()
                    deadLetter = nil
                case .refused(let refusal)
                where Self.isSizeRefusal(refusal) && copyBudget > DeadLetter.refusedCopyBudget:
                    logger().warning(
                        "dead-letter copy of \(request.requestID) refused as too large (\(refusal)); sending a copy of at most \(DeadLetter.refusedCopyBudget) bytes"
                    )
                    copyBudget = DeadLetter.refusedCopyBudget
                    continue
                case .refused(let refusal):
                    logger().error("dead-letter copy of \(request.requestID) refused, sent without it: \(refusal)")
                    metrics.recordRefusal(record: "dead_letter", code: refusal.code.name)
                    deadLetter = nil
                case .failed(let failure):
                    guard await retry("dead-letter copy", failure) else { return nil }
                    continue
                }
            }
            let outcome = await send(response.message(topic: topic, partition: partition, key: request.message.key))
            let detail: ErrorDetail
            switch outcome {
            case .acknowledged:
                return response
            case .failed(let failure) where topic == configuration.responsesTopic:
                guard await retry("response", failure) else { return nil }
                continue
            case .refused(let error), .failed(let error):
                if case .refused = outcome { metrics.recordRefusal(record: "response", code: error.code.name) }
                if topic != configuration.responsesTopic || partition != nil {
                    let destination = "reply-to topic '\(topic)'" + (partition.map { " partition \($0)" } ?? "")
                    logger().error("response to \(request.requestID) not delivered to \(destination): \(error)")
                    detail = ErrorDetail(
                        code: WireProtocol.ErrorCode.internal,
                        message: "the response could not be delivered to \(destination): \(error)")
                    topic = configuration.responsesTopic
                    partition = nil
                } else if !replaced {
                    logger().error("response to \(request.requestID) refused, answering internal: \(error)")
                    detail = ErrorDetail(
                        code: WireProtocol.ErrorCode.internal,
                        message: "the response (\(response.json().count) bytes) could not be delivered: \(error)")
                    replaced = true
                } else {
                    logger().error("response to \(request.requestID) refused, giving the request up: \(error)")
                    return response
                }
            }
            // A request that ran fine has failed now: it gets its dead-letter copy too.
            if !copied { deadLetter = detail }
            copied = true
            response.replaceWithError(code: detail.code, message: detail.message)
        }
    }

    private static func isSizeRefusal(_ error: KafkaError) -> Bool {
        [KafkaError.Code.messageSizeTooLarge, .recordListTooLarge].contains(error.code)
    }

    /// Waits before another try (up to a second); `false` when the worker is stopping: the request is then served
    /// again after a restart.
    private func retryLater(_ attempt: Int) async -> Bool {
        if state.withLock({ $0.isStopping }) { return false }
        try? await Task.sleep(for: .milliseconds(min(1000, 10 << min(attempt, 7))))
        return !state.withLock { $0.isStopping }
    }

    private func beginRetrying() {
        let now = ContinuousClock.now
        state.withLock { $0.beginRetrying(at: now) }
    }

    private func endRetrying() {
        state.withLock { $0.endRetrying() }
    }

    /// Finishes the requests acknowledged in the delivery round that just ended.
    private func finishAcknowledged() {
        var requests: [Acknowledged] = []
        acknowledged.withLock { swap(&requests, &$0) }
        if !requests.isEmpty { finish(requests) }
    }

    /// The requests are done: count their responses, move their partitions' watermarks, store the offsets they
    /// allow and free their slots.
    private func finish(_ requests: [Acknowledged]) {
        let micros = Timestamps.monotonicMicros()
        metrics.recordResponses(requests.lazy.map { ($0.code, (micros - $0.started) * 1000) })
        let now = ContinuousClock.now
        let (offsets, consumer) = state.withLock { state in
            (state.finish(requests.lazy.map { (partition: $0.partition, offset: $0.offset) }, at: now), state.consumer)
        }
        if let consumer, !offsets.isEmpty {
            do {
                try consumer.storeOffsets(offsets)
            } catch {
                logger.warning("storing offsets \(offsets): \(error)")
            }
        }
        releaseSlots(requests.count, endingRequests: true)
    }
}

/// Reads a request's trace context (`traceparent`, `tracestate`) from its Kafka headers.
private struct KafkaHeadersExtractor: Extractor {
    func extract(key: String, from headers: [KafkaHeader]) -> String? {
        headers.string(named: key)
    }
}
