import InMemoryTracing
import Pipelines
import Testing
import Tracing

/// A traced runner's spans: one per step run of a tracked run, under the span current when the step is called.
@Suite("Step spans")
struct StepSpanTests {
    static let double = Step("double") { (value: Int) in value * 2 }
    static let inner = Step("inner") { (value: Int) in value + 1 }
    /// Calls a step itself: its span is the parent of `inner`'s.
    static let outer = Step("outer") { (value: Int) in try await inner(value) }
    static let refuse = Step("refuse") { (_: Int) -> Int in throw Refused() }
    struct Refused: Error {}

    static let pipeline = Pipeline("spans") { (value: Int) in
        let doubled = try await double(value)
        return try await outer(doubled)
    }

    @Test func eachStepRunIsAChildOfTheSpanItIsCalledIn() async throws {
        let tracer = InMemoryTracer()
        let runner = PipelineRunner(tracker: RecordingTracker(), tracer: tracer)
        let request = tracer.startSpan("request")
        let result = await ServiceContext.withValue(request.context) {
            await runner.run(Self.pipeline, 3, options: RunOptions(capture: .realtime))
        }
        request.end()
        #expect(try result.outcome.get() == 7)
        let spans = Dictionary(uniqueKeysWithValues: tracer.finishedSpans.map { ($0.operationName, $0) })
        #expect(Set(spans.keys) == ["request", "double", "outer", "inner"])
        #expect(spans["double"]?.parentSpanID == request.spanID)
        #expect(spans["outer"]?.parentSpanID == request.spanID)
        #expect(spans["inner"]?.parentSpanID == spans["outer"]?.spanID)
        #expect(spans.values.allSatisfy { $0.traceID == request.traceID })
        #expect(spans["inner"]?.attributes["sluice.step_run"]?.toSpanAttribute() == "inner#1".toSpanAttribute())
        #expect(spans["double"]?.attributes["sluice.run_id"]?.toSpanAttribute() == result.runID?.toSpanAttribute())
    }

    @Test func aFailedStepRunsSpanSaysSo() async throws {
        let tracer = InMemoryTracer()
        let pipeline = Pipeline("refusing") { (value: Int) in try await Self.refuse(value) }
        let result = await PipelineRunner(tracker: RecordingTracker(), tracer: tracer).run(
            pipeline, 1, options: RunOptions(capture: .batch))
        #expect(throws: ErrorDetail.self) { try result.outcome.get() }
        let span = try #require(tracer.finishedSpans.first)
        #expect(span.operationName == "refuse")
        #expect(span.status?.code == .error)
        #expect(span.errors.count == 1)
    }

    @Test func memoryOnlyRunsAndUntracedRunnersStartNoSpans() async throws {
        let tracer = InMemoryTracer()
        let memory = await PipelineRunner(tracker: RecordingTracker(), tracer: tracer).run(
            Self.pipeline, 3, options: RunOptions(capture: .memoryOnly))
        #expect(try memory.outcome.get() == 7)
        #expect(tracer.finishedSpans.isEmpty)
        let tracker = RecordingTracker()
        let untraced = await PipelineRunner(tracker: tracker).run(
            Self.pipeline, 3, options: RunOptions(capture: .batch))
        #expect(try untraced.outcome.get() == 7)
        // Nothing about spans in the lineage either.
        for event in tracker.events {
            switch event.body {
            case .runStarted(_, _, _, _, let span, _): #expect(span == nil)
            case .stepStarted(let step, _, _), .stepCompleted(let step, _, _, _): #expect(step.spanID == nil)
            default: break
            }
        }
    }
}
