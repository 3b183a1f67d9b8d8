import Tracing

// MARK: - Running a step inside a tracked run

extension RunRecorder {
    /// Runs one step as a step run: cache lookup, attempts with their events, cache store, flush on step end. With a
    /// tracer, inside a span named after the step, a child of the current one, whose id the step run's events carry.
    @usableFromInline func runStep<Output: Codable & Sendable>(
        _ step: StepDescription, inputs: [any Codable & Sendable], invoke: () async throws -> Output
    ) async throws -> Output {
        try await inStepRun(of: step) { identity in try await runStep(step, identity, inputs: inputs, invoke: invoke) }
    }

    /// Runs one call of a batched step as a step run of this run: `step_started` when the call joins a batch, a
    /// `step_failed` (retrying) and `step_started` for each failed attempt of the batch that is tried again, the
    /// batch's size as the step run's metadata (`batch_size`), then `step_completed` with this run's own output, or
    /// `step_failed`.
    @usableFromInline func runBatchedStep<Item: Sendable, Output: Codable & Sendable>(
        _ step: StepDescription, inputs: [any Codable & Sendable], item: Item, batcher: StepBatcher<Item, Output>
    ) async throws -> Output {
        try await inStepRun(of: step) { identity in
            let stepRun = identity.id
            let inputArtifacts = inputs.enumerated().compactMap { index, value in
                artifact("\(stepRun)/in\(index)", .consumed, value)
            }
            emit(.stepStarted(step: identity, attempt: 1, inputs: inputArtifacts))
            let outcome = await batcher.submit(item) { [self] attempt, error, micros in
                _ = recordFailure(error, of: step, identity, attempt: attempt, micros: micros, retrying: true)
                emit(.stepStarted(step: identity, attempt: attempt + 1, inputs: inputArtifacts))
            }
            if configuration.metadata {
                emit(.metadata(stepRun: stepRun, values: ["batch_size": .int(Int64(outcome.batchSize))]))
            }
            switch outcome.output {
            case .success(let output):
                recordCompletion(output, of: step, identity, attempt: outcome.attempt, micros: outcome.micros)
                try await flushStepIfAsked(step.name)
                return output
            case .failure(let error):
                let failure = recordFailure(
                    error, of: step, identity, attempt: outcome.attempt, micros: outcome.micros, retrying: false)
                try? await flushStepIfAsked(step.name)
                throw failure
            }
        }
    }

    /// Runs `body` as the next step run of `step`: with a tracer, inside a span named after the step, a child of the
    /// current one, whose id the step run's events carry.
    private func inStepRun<Output>(
        of step: StepDescription, _ body: (StepRunID) async throws -> Output
    ) async throws -> Output {
        let stepRun = nextStepRun(of: step.name)
        guard let tracer else {
            return try await body(StepRunID(step: step.name, id: stepRun, version: step.version))
        }
        let span = tracer.startSpan(step.name, context: ServiceContext.current ?? .topLevel, ofKind: .internal)
        defer { span.end() }
        span.attributes["sluice.pipeline"] = pipeline
        span.attributes["sluice.run_id"] = runID
        span.attributes["sluice.step_run"] = stepRun
        let identity = StepRunID(
            step: step.name, id: stepRun, version: step.version,
            spanID: SpanIDs(of: span.context, tracer: tracer)?.spanID)
        do {
            return try await ServiceContext.withValue(span.context) { try await body(identity) }
        } catch {
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error, message: ErrorDetail(describing: error).message))
            throw error
        }
    }

    private func runStep<Output: Codable & Sendable>(
        _ step: StepDescription, _ identity: StepRunID, inputs: [any Codable & Sendable],
        invoke: () async throws -> Output
    ) async throws -> Output {
        let stepRun = identity.id
        let inputArtifacts = inputs.enumerated().compactMap { index, value in
            artifact("\(stepRun)/in\(index)", .consumed, value)
        }
        let cacheKey = step.cache && configuration.cachesSteps ? Self.cacheKey(step, inputs) : nil
        if let cacheKey, let hit = cache.lookup(cacheKey), let output = hit.output as? Output {
            emit(
                .stepCached(
                    step: identity, inputs: inputArtifacts, output: artifact("\(stepRun)/out", .produced, output),
                    cachedFrom: hit.source))
            try await flushStepIfAsked(step.name)
            return output
        }

        var attempt = 1
        while true {
            emit(.stepStarted(step: identity, attempt: attempt, inputs: inputArtifacts))
            let started = Timestamps.monotonicMicros()
            let output: Output
            do {
                output = try await RunContext.$current.withValue(RunContext(run: self, stepRun: stepRun)) {
                    try await invoke()
                }
            } catch let notDurable as LineageNotDurable {
                // A step this one called could not make its lineage durable: the run fails with that, untried again.
                throw notDurable
            } catch {
                // A cancelled run is not tried again.
                let retrying = !Task.isCancelled && step.retry.retries(after: attempt)
                let failure = recordFailure(
                    error, of: step, identity, attempt: attempt, micros: Timestamps.monotonicMicros() - started,
                    retrying: retrying)
                guard retrying else {
                    // The step's failure is what the run reports, even if waiting for its events fails too.
                    try? await flushStepIfAsked(step.name)
                    throw failure
                }
                await step.retry.wait(after: attempt)
                attempt += 1
                continue
            }
            recordCompletion(
                output, of: step, identity, attempt: attempt, micros: Timestamps.monotonicMicros() - started)
            if let cacheKey {
                cache.store(
                    cacheKey, StepCache.Entry(output: output, source: CachedStepRun(runID: runID, stepRun: stepRun)))
            }
            // Outside the step's own failure handling: lineage that is not durable is not the step's failure.
            try await flushStepIfAsked(step.name)
            return output
        }
    }

    /// Records a completed attempt of a step run: its duration and `step_completed` with the output.
    private func recordCompletion<Output: Codable & Sendable>(
        _ output: Output, of step: StepDescription, _ identity: StepRunID, attempt: Int, micros: Int64
    ) {
        stepMetrics.record(pipeline: pipeline, step: step.name, completed: true, micros: micros)
        emit(
            .stepCompleted(
                step: identity, attempt: attempt, durationMicros: micros,
                output: artifact("\(identity.id)/out", .produced, output)))
    }

    /// Records a failed attempt of a step run: its duration and `step_failed`. Returns the failure as the step
    /// reports it: a step that failed because a step it called failed reports that step's failure.
    private func recordFailure(
        _ error: any Error, of step: StepDescription, _ identity: StepRunID, attempt: Int, micros: Int64,
        retrying: Bool
    ) -> StepError {
        let failure = error as? StepError ?? StepError(step: step.name, stepRun: identity.id, underlying: error)
        stepMetrics.record(pipeline: pipeline, step: step.name, completed: false, micros: micros)
        emit(
            .stepFailed(
                step: identity, attempt: attempt, durationMicros: micros,
                error: ErrorDetail(code: failure.code, message: failure.message), retrying: retrying))
        return failure
    }

    /// `<step>@<version>:<sha256 of the inputs' canonical JSON>`, or `nil` when an input cannot be encoded.
    private static func cacheKey(_ step: StepDescription, _ inputs: [any Codable & Sendable]) -> String? {
        var bytes: [UInt8] = []
        for input in inputs {
            guard let json = try? CanonicalJSON.encode(input) else { return nil }
            // Each input's length first, so that different splits of the same bytes differ.
            bytes.append(contentsOf: String(json.count).utf8)
            bytes.append(UInt8(ascii: ":"))
            bytes.append(contentsOf: json)
        }
        return "\(step.name)@\(step.version):\(ContentHash.sha256(bytes))"
    }
}
