import Logging
import MetricsTestKit
import Pipelines
import Synchronization
import Testing

@Suite("What each capture mode records")
struct CaptureModeTests {
    let input = Document(text: "the quick brown fox")
    let expectedOutput = Stats(tokens: 4, first: "the", last: "fox")

    @Test func batchRecordsEveryEventOfTheRun() async throws {
        let (result, events) = await track(textStats, input, capture: .batch)
        #expect(try result.outcome.get() == expectedOutput)
        #expect(
            shape(events) == [
                "run_started",
                "step_started tokenize#1", "log tokenize#1", "step_completed tokenize#1",
                "step_started count#1", "metadata count#1", "step_completed count#1",
                "step_started summarize#1", "step_completed summarize#1",
                "run_completed",
            ])
        #expect(events.map(\.seq) == Array(0..<events.count))
        #expect(Set(events.map(\.runID)) == [try #require(result.runID)])
        #expect(events.allSatisfy { $0.capture == "BATCH" && $0.pipeline == "text-stats" && $0.attempt == 1 })
        #expect(Set(events.map(\.eventID)).count == events.count)
        guard case .runStarted(let configuration, let runInput?, _, _, _, _) = events[0].body else {
            Issue.record("run_started carries no input")
            return
        }
        #expect(configuration["mode"] == "BATCH")
        #expect(configuration["wait_for_tracking"] == true)
        #expect(runInput.value == ["text": "the quick brown fox"])
        guard case .runCompleted(_, let output?) = events.last?.body else {
            Issue.record("run_completed carries no output")
            return
        }
        // The run's output is the last step's: it names that artifact and does not repeat the value.
        #expect(output.producedBy == "summarize#1/out")
        #expect(output.value == nil)
        guard case .stepCompleted(_, _, _, let summary?) = events[8].body else {
            Issue.record("expected .stepCompleted, got \(String(describing: events[8].body))")
            return
        }
        #expect(summary.value == ["tokens": 4, "first": "the", "last": "fox"])
        #expect(summary.sha256 == output.sha256)
    }

    @Test func realtimeRecordsTheSameEventsWithoutWaiting() async throws {
        let tracker = GatedTracker()
        let result = await PipelineRunner(tracker: tracker).run(
            textStats, input, options: RunOptions(capture: .realtime))
        // The gate was never opened: a REALTIME run returns without waiting for any flush.
        #expect(try result.outcome.get() == expectedOutput)
        #expect(!tracker.log.contains("flush"))
        #expect(shape(tracker.recorder.events).count == 10)
        #expect(tracker.recorder.events.allSatisfy { $0.capture == "REALTIME" })
    }

    @Test func offRecordsRunsStepsAndArtifactsButNoLogsOrMetadata() async throws {
        let (result, events) = await track(textStats, input, capture: .off)
        #expect(try result.outcome.get() == expectedOutput)
        #expect(
            shape(events) == [
                "run_started",
                "step_started tokenize#1", "step_completed tokenize#1",
                "step_started count#1", "step_completed count#1",
                "step_started summarize#1", "step_completed summarize#1",
                "run_completed",
            ])
        guard case .stepCompleted(_, _, _, let output?) = events[2].body else {
            Issue.record("OFF keeps artifacts")
            return
        }
        #expect(output.value == ["the", "quick", "brown", "fox"])
    }

    @Test(arguments: [
        CaptureConfiguration.memoryOnly,
        try CaptureConfiguration.parse(#"{"mode": "REALTIME", "persistence": "memory"}"#, source: .code),
    ])
    func memoryOnlyRecordsNothing(capture: CaptureConfiguration) async throws {
        let tracker = GatedTracker()
        let result = await PipelineRunner(tracker: tracker).run(textStats, input, options: RunOptions(capture: capture))
        #expect(try result.outcome.get() == expectedOutput)
        #expect(result.runID == nil)
        #expect(tracker.log.isEmpty)
    }

    /// A run its sample leaves out runs memory-only (no run id, no events, the label MEMORY); one it takes is tracked
    /// whole. Exactly the runs whose ids ``CaptureConfiguration/tracks(runID:)`` takes.
    @Test func aSampleRateTracksExactlyTheRunsItsHashTakes() async throws {
        var sampled = CaptureConfiguration.realtime
        sampled.sampleRate = 0.5
        let tracker = RecordingTracker()
        let runner = PipelineRunner(tracker: tracker)
        var taken: Set<String> = []
        for index in 0..<200 {
            let runID = "run-\(index)"
            let result = await runner.run(textStats, input, options: RunOptions(capture: sampled, runID: runID))
            #expect(try result.outcome.get() == expectedOutput)
            if sampled.tracks(runID: runID) {
                taken.insert(runID)
                #expect(result.runID == runID && result.capture.label == "REALTIME")
            } else {
                #expect(result.runID == nil && result.capture.label == "MEMORY")
            }
        }
        #expect((50...150).contains(taken.count), "\(taken.count)")
        #expect(Set(tracker.events.map(\.runID)) == taken)
        for runID in taken { #expect(tracker.events(ofRun: runID).last?.type == .runCompleted) }
    }

    /// `runs: errors`: a run that completes hands nothing to the tracker, waits for nothing and names no run; one that
    /// fails hands over every event, and in BATCH its result waits for them.
    @Test(arguments: ["BATCH", "REALTIME"])
    func errorsOnlyKeepsExactlyTheFailedRuns(mode: String) async throws {
        let capture = try CaptureConfiguration.parse(#"{"mode": "\#(mode)", "runs": "errors"}"#, source: .code)
        let tracker = GatedTracker()
        tracker.release()
        let runner = PipelineRunner(tracker: tracker)
        let ok = await runner.run(failingOnEmpty, Document(text: "a b"), options: RunOptions(capture: capture))
        #expect(try ok.outcome.get() == Stats(tokens: 2, first: "a", last: "b"))
        #expect(ok.runID == nil && ok.capture.label == mode)
        #expect(tracker.log.isEmpty)

        let failed = await runner.run(
            failingOnEmpty, Document(text: ""), options: RunOptions(capture: capture, runID: "failed-run"))
        #expect(failed.runID == "failed-run")
        guard case .failure(let error) = failed.outcome else {
            Issue.record("an empty document fails")
            return
        }
        #expect(error.code == "step_failed" && error.step == "check")
        let events = tracker.recorder.events
        #expect(
            shape(events) == [
                "run_started", "step_started tokenize#1", "log tokenize#1", "step_completed tokenize#1",
                "step_started check#1", "step_failed check#1", "run_failed",
            ])
        #expect(events.map(\.seq) == Array(0..<events.count))
        #expect(events.allSatisfy { $0.runID == "failed-run" && $0.capture == mode })
        // BATCH waited for the failed run's events (and for no other run); REALTIME waits for none.
        #expect(tracker.log.filter { $0 == "flush" }.count == (mode == "BATCH" ? 1 : 0))
    }

    @Test func aFailedErrorsOnlyBatchRunReturnsOnlyAfterItsLineageIsDurable() async throws {
        let capture = try CaptureConfiguration.parse("{mode: BATCH, runs: errors}", source: .code)
        let tracker = GatedTracker()
        let running = Task {
            await PipelineRunner(tracker: tracker).run(
                failingOnEmpty, Document(text: ""), options: RunOptions(capture: capture))
        }
        while tracker.waitingFlushes == 0 { await Task.yield() }
        #expect(tracker.log.suffix(2) == ["run_failed", "flush"])
        tracker.release()
        let result = await running.value
        guard case .failure(let error) = result.outcome else {
            Issue.record("an empty document fails")
            return
        }
        #expect(error.code == "step_failed" && result.runID != nil)
    }

    /// Steps never wait for their events where only failed runs are kept: those events wait for the run's end.
    @Test func errorsOnlyIgnoresFlushOnStepEnd() async throws {
        let capture = try CaptureConfiguration.parse(
            "{mode: REALTIME, runs: errors, flush_on_step_end: true}", source: .code)
        let tracker = GatedTracker()
        let result = await PipelineRunner(tracker: tracker).run(
            failingOnEmpty, Document(text: ""), options: RunOptions(capture: capture))
        #expect(result.runID != nil)
        #expect(!tracker.log.contains("flush") && tracker.log.last == "run_failed")
    }

    /// A run holds at most ``CaptureConfiguration/errorsOnlyEventLimit`` events: past it, the oldest but
    /// `run_started` go, and a failed run's lineage says how many, numbered from 0 without gaps and ending with the
    /// step that failed.
    @Test func anErrorsOnlyRunHoldsABoundedNumberOfEvents() async throws {
        let limit = CaptureConfiguration.errorsOnlyEventLimit
        let increment = Step("increment") { (value: Int) in value + 1 }
        let fail = Step("fail") { (_: Int) -> Int in throw Rejected() }
        let calls = 3 * limit
        let pipeline = Pipeline("long") { (start: Int) in
            var value = start
            for _ in 0..<calls { value = try await increment(value) }
            return try await fail(value)
        }
        let capture = try CaptureConfiguration.parse("{mode: REALTIME, runs: errors}", source: .code)
        let (_, events) = await track(pipeline, 0, capture: capture)
        #expect(events.count <= limit)
        #expect(events.map(\.seq) == Array(0..<events.count))
        #expect(events.first?.type == .runStarted)
        guard case .log(nil, .warning, let message) = events[1].body else {
            Issue.record("no warning after run_started: \(shape(Array(events.prefix(3))))")
            return
        }
        // Every emitted event is either kept or counted as dropped (the warning is the one added).
        let emitted = 1 + 2 * calls + 2 + 1
        let dropped = emitted - (events.count - 1)
        #expect(message.contains("dropped \(dropped) earlier events") && message.contains("at most \(limit)"))
        #expect(
            shape(Array(events.suffix(4))) == [
                "step_completed increment#\(calls)", "step_started fail#1", "step_failed fail#1", "run_failed",
            ])
    }

    @Test func memoryOnlyStepsSeeNoRunContext() async throws {
        let probe = Step("probe") { (_: Int) in RunContext.current == nil }
        let pipeline = Pipeline("probe") { (value: Int) in try await probe(value) }
        let memory = await PipelineRunner(tracker: RecordingTracker()).run(
            pipeline, 1, options: RunOptions(capture: .memoryOnly))
        let tracked = await PipelineRunner(tracker: RecordingTracker()).run(
            pipeline, 1, options: RunOptions(capture: .realtime))
        #expect(try memory.outcome.get() == true)
        #expect(try tracked.outcome.get() == false)
        #expect(try await pipeline.run(1) == true)
    }

    @Test func batchReturnsOnlyAfterTheTrackerFlushed() async throws {
        let tracker = GatedTracker()
        let running = Task {
            await PipelineRunner(tracker: tracker).run(textStats, input, options: RunOptions(capture: .batch))
        }
        // The run's events are all recorded, then it waits in flush.
        while tracker.waitingFlushes == 0 { await Task.yield() }
        #expect(tracker.log.last == "flush")
        #expect(tracker.log.dropLast().last == "run_completed")
        tracker.release()
        let result = await running.value
        #expect(try result.outcome.get() == expectedOutput)
    }

    @Test func batchFailsTheRunWhenItsLineageIsNotDurable() async throws {
        let tracker = GatedTracker(failing: TrackingError("broker down"))
        let result = await PipelineRunner(tracker: tracker).run(textStats, input, options: RunOptions(capture: .batch))
        guard case .failure(let error) = result.outcome else {
            Issue.record("a BATCH run whose lineage failed must not succeed")
            return
        }
        #expect(error.code == "internal")
        #expect(error.message.contains("broker down"))
    }

    @Test func flushOnStepEndWaitsAfterEveryStep() async throws {
        let tracker = GatedTracker()
        tracker.release()
        let result = await PipelineRunner(tracker: tracker).run(
            textStats, input, options: RunOptions(capture: .realtime(flushOnStepEnd: true)))
        #expect(try result.outcome.get() == expectedOutput)
        #expect(
            tracker.log == [
                "run_started",
                "step_started", "log", "step_completed", "flush",
                "step_started", "metadata", "step_completed", "flush",
                "step_started", "step_completed", "flush",
                "run_completed",
            ])
    }

    @Test func flushOnStepEndFailsTheRunAtTheStepWhoseLineageIsNotDurable() async throws {
        let tracker = GatedTracker(failing: TrackingError("broker down"))
        let result = await PipelineRunner(tracker: tracker).run(
            textStats, input, options: RunOptions(capture: .realtime(flushOnStepEnd: true)))
        guard case .failure(let error) = result.outcome else {
            Issue.record("a run whose step lineage failed must not succeed")
            return
        }
        #expect(error.code == "internal" && error.step == "tokenize")
        #expect(
            error.message.contains("lineage of step 'tokenize' is not durable") && error.message.contains("broker down")
        )
        // The run stops at that step: the later steps never start.
        #expect(!tracker.log.contains("metadata"))
    }

    @Test func aCancelledRunFailsWithTheCodeCancelled() async throws {
        let slow = Step("slow") { (value: Int) in
            try await Task.sleep(for: .seconds(60))
            return value
        }
        let pipeline = Pipeline("slow") { (value: Int) in try await slow(value) }
        let running = Task { await PipelineRunner(tracker: RecordingTracker()).run(pipeline, 1, options: RunOptions()) }
        try await Task.sleep(for: .milliseconds(50))
        running.cancel()
        let result = await running.value
        guard case .failure(let error) = result.outcome else {
            Issue.record("a cancelled run must not succeed")
            return
        }
        #expect(error.code == "cancelled", "\(error)")
    }

    @Test func logsKnobFiltersByLevel() async throws {
        let chatty = Step("chatty") { (value: Int) in
            for level in LogLevel.allCases { RunContext.current?.log("at \(level)", level: level) }
            return value
        }
        let pipeline = Pipeline("chatty") { (value: Int) in try await chatty(value) }
        func levels(_ logs: String) async throws -> [LogLevel] {
            let capture = try CaptureConfiguration.parse(#"{"mode": "BATCH", "logs": "\#(logs)"}"#, source: .code)
            let (_, events) = await track(pipeline, 1, capture: capture)
            return events.compactMap { event in
                if case .log(let stepRun, let level, let message) = event.body {
                    #expect(stepRun == "chatty#1")
                    #expect(message == "at \(level)")
                    return level
                }
                return nil
            }
        }
        #expect(try await levels("all") == [.debug, .info, .warning, .error])
        #expect(try await levels("errors") == [.warning, .error])
        #expect(try await levels("off") == [])
    }

    @Test func stepLogsAlsoGoToTheRunnersLoggerWithTheRunsIdsAtItsLevel() async throws {
        let collected = CollectingLogHandler.Lines()
        var logger = Logger(label: "test.steps") { _ in CollectingLogHandler(lines: collected) }
        logger.logLevel = .info
        let chatty = Step("chatty") { (value: Int) in
            for level in LogLevel.allCases { RunContext.current?.log("at \(level)", level: level) }
            return value
        }
        let pipeline = Pipeline("chatty") { (value: Int) in try await chatty(value) }
        // The lineage keeps nothing (`logs: off`); the logger still gets what its level lets through.
        let capture = try CaptureConfiguration.parse(#"{"mode": "BATCH", "logs": "off"}"#, source: .code)
        let result = await PipelineRunner(tracker: RecordingTracker(), logger: logger).run(
            pipeline, 1, options: RunOptions(capture: capture, requestID: "req-1"))
        let lines = collected.withLock { $0 }
        #expect(lines.map(\.level) == [.info, .warning, .error])
        #expect(lines.map(\.message) == ["at info", "at warning", "at error"])
        for line in lines {
            #expect(line.metadata["pipeline"] == "chatty" && line.metadata["step_run"] == "chatty#1")
            #expect(line.metadata["request_id"] == "req-1" && line.metadata["run_id"] == .string(result.runID ?? "?"))
        }
    }

    @Test func eachAttemptOfATrackedStepIsTimedByPipelineStepAndStatus() async throws {
        let metrics = TestMetrics()
        let attempts = Mutex(0)
        let flaky = Step("flaky", retry: .attempts(2)) { (value: Int) in
            let attempt = attempts.withLock { count in
                count += 1
                return count
            }
            if attempt == 1 { throw Refusal() }
            return value
        }
        let pipeline = Pipeline("timed") { (value: Int) in try await flaky(value) }
        let runner = PipelineRunner(tracker: RecordingTracker(), metricsFactory: metrics)
        let capture = try CaptureConfiguration.parse("REALTIME", source: .code)
        #expect(try await runner.run(pipeline, 4, options: RunOptions(capture: capture)).outcome.get() == 4)
        let completed = try metrics.expectTimer(
            "sluice_step_duration_seconds", [("pipeline", "timed"), ("step", "flaky"), ("status", "completed")])
        let failed = try metrics.expectTimer(
            "sluice_step_duration_seconds", [("pipeline", "timed"), ("step", "flaky"), ("status", "failed")])
        #expect(completed.values.count == 1 && failed.values.count == 1)
        // Memory-only runs are not timed per step.
        _ = await runner.run(pipeline, 5, options: RunOptions(capture: .memoryOnly))
        #expect(completed.values.count == 1)
    }

    @Test func metadataGoesToTheStepRunOrTheRunAndFollowsItsKnob() async throws {
        let annotate = Step("annotate") { (value: Int) in
            RunContext.current?.addMetadata(["step": "yes"])
            RunContext.current?.addRunMetadata(["model": "v3"])
            return value
        }
        let pipeline = Pipeline("annotated") { (value: Int) in
            RunContext.current?.addMetadata(["body": true])
            return try await annotate(value)
        }
        let (_, events) = await track(pipeline, 1, capture: .realtime)
        let metadata = events.compactMap { event -> String? in
            guard case .metadata(let stepRun, let values) = event.body else { return nil }
            return "\(stepRun ?? "run") \(values.keys.sorted())"
        }
        #expect(metadata == ["run [\"body\"]", "annotate#1 [\"step\"]", "run [\"model\"]"])

        var quiet = CaptureConfiguration.realtime
        quiet.metadata = false
        let (_, silent) = await track(pipeline, 1, capture: quiet)
        #expect(!silent.contains { $0.type == .metadata })
    }

    @Test func artifactsOffKeepsRunsAndStepsWithoutValues() async throws {
        let capture = try CaptureConfiguration.parse(#"{"artifacts": false}"#, source: .code)
        #expect(capture.mode == .custom)
        let (_, events) = await track(textStats, input, capture: capture)
        #expect(events.count == 10)
        for event in events {
            switch event.body {
            case .runStarted(_, let input, _, _, _, _): #expect(input == nil)
            case .stepStarted(_, _, let inputs): #expect(inputs.isEmpty)
            case .stepCompleted(_, _, _, let output), .runCompleted(_, let output): #expect(output == nil)
            default: break
            }
        }
    }

    @Test func largeValuesTravelByHashAndSize() async throws {
        let big = Document(text: String(repeating: "word ", count: 2000))
        var capture = CaptureConfiguration.batch
        capture.inlineLimit = 64
        let (_, events) = await track(textStats, big, capture: capture)
        guard case .runStarted(_, let runInput?, _, _, _, _) = events[0].body,
            case .stepCompleted(_, _, _, let tokens?) = events[3].body,
            case .stepStarted(_, _, let countInputs) = events[4].body
        else {
            Issue.record("unexpected events \(shape(events))")
            return
        }
        #expect(runInput.value == nil)
        #expect(runInput.size == #"{"text":"\#(big.text)"}"#.utf8.count)
        #expect(runInput.sha256 == ContentHash.sha256(Array(#"{"text":"\#(big.text)"}"#.utf8)))
        #expect(tokens.value == nil)
        #expect(tokens.size > 64)
        // The consumer's input names its producer and does not repeat the value.
        #expect(countInputs.first?.producedBy == "tokenize#1/out")
        #expect(countInputs.first?.sha256 == tokens.sha256)
        #expect(countInputs.first?.value == nil)
    }

    @Test func traceparentRequestIDAndAttemptAreRecorded() async throws {
        let tracker = RecordingTracker()
        let options = RunOptions(
            capture: .realtime, runID: "run-7", requestID: "req-7", attempt: 2,
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        let result = await PipelineRunner(tracker: tracker).run(textStats, input, options: options)
        #expect(result.runID == "run-7")
        let events = tracker.events
        #expect(events.allSatisfy { $0.runID == "run-7" && $0.requestID == "req-7" && $0.attempt == 2 })
        #expect(events.first?.eventID == "run-7/2/0")
        guard case .runStarted(_, _, let traceparent, _, _, _) = events[0].body else {
            Issue.record("expected .runStarted, got \(String(describing: events[0].body))")
            return
        }
        #expect(traceparent == options.traceparent)
    }
}

private struct Refusal: Error {}
