import Foundation
import Testing

/// Traces of `sluice worker` over OTLP/HTTP (swift-otel), received by a small OTLP receiver in the test.
@Suite("Traces over OTLP, end to end")
struct TracingTests {
    @Test func aRequestsSpansJoinItsTraceAndTheLineageRecordsThem() async throws {
        let receiver = try await OTLPReceiver.start()
        defer { receiver.stop() }
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(
            ["--capture", "BATCH"],
            environment: [
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "sluice-tracing-test",
            ])
        let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
        let parent = "00f067aa0ba902b7"
        let (status, responses) = try await cluster.call([
            ["id": "traced", "value": ["text": "a b a"], "headers": ["traceparent": "00-\(traceID)-\(parent)-01"]],
            ["id": "malformed", "value": ["text": "c"], "headers": ["traceparent": "00-not-hex-01"]],
        ])
        #expect(status == 0)

        // A span per request, and one per step run of each (tokenize, count, summarize).
        let spans = await receiver.waitForSpans(8)
        try #require(spans.count == 8, "\(spans)")
        #expect(spans.allSatisfy { $0.serviceName == "sluice-tracing-test" })
        let request = try #require(spans.first { $0.traceID == traceID && $0.parentSpanID == parent }, "\(spans)")
        #expect(request.name == "text-stats")
        #expect(request.kind == 5, "SPAN_KIND_CONSUMER")
        #expect(request.attributes["messaging.message.id"] == "traced")
        #expect(request.attributes["messaging.destination.name"] == cluster.requests)
        let steps = spans.filter { $0.parentSpanID == request.spanID }
        #expect(steps.map(\.name).sorted() == ["count", "summarize", "tokenize"])
        #expect(steps.allSatisfy { $0.traceID == traceID })

        // The malformed traceparent is ignored: its request starts a trace of its own.
        let untraced = try #require(spans.first { $0.attributes["messaging.message.id"] == "malformed" })
        #expect(untraced.parentSpanID.isEmpty && untraced.traceID != traceID)
        #expect(spans.filter { $0.parentSpanID == untraced.spanID }.count == 3)

        // The response carries the request's span on; the malformed header is not echoed, the new trace is.
        let byID = Dictionary(uniqueKeysWithValues: responses.map { ($0["id"] as? String ?? "", $0) })
        let tracedHeaders = byID["traced"]?["headers"] as? [String: String]
        #expect(tracedHeaders?["traceparent"] == "00-\(traceID)-\(request.spanID)-01")
        let malformedHeaders = byID["malformed"]?["headers"] as? [String: String]
        #expect(malformedHeaders?["traceparent"] == "00-\(untraced.traceID)-\(untraced.spanID)-01")

        // The lineage records the spans: the run's on run_started, each step run's on its events.
        let events = try await cluster.lineageEvents()
        let tracedRun = events.filter { $0["request_id"] as? String == "traced" }
        let started = try #require(tracedRun.first { $0["type"] as? String == "run_started" })
        #expect(started["trace"] as? [String: String] == ["trace_id": traceID, "span_id": request.spanID])
        #expect(started["traceparent"] as? String == "00-\(traceID)-\(parent)-01")
        #expect(started["traceparent_error"] == nil)
        let stepSpans = Set(
            tracedRun.filter { $0["type"] as? String == "step_started" }.compactMap { $0["span_id"] as? String })
        #expect(stepSpans == Set(steps.map(\.spanID)))
        let malformedStart = try #require(
            events.first { $0["request_id"] as? String == "malformed" && $0["type"] as? String == "run_started" })
        #expect(malformedStart["traceparent"] as? String == "00-not-hex-01")
        #expect((malformedStart["traceparent_error"] as? String)?.hasPrefix("ignored: not W3C trace context") == true)
        #expect((malformedStart["trace"] as? [String: String])?["span_id"] == untraced.spanID)

        let metrics = try #require(try await worker.metrics())
        #expect(hasSample(metrics, #"sluice_traceparent_invalid_total{pipeline="text-stats"} 1"#), "\(metrics)")
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    @Test func withTheSDKDisabledTheWorkerTracesNothingAndEchoesTheTraceparent() async throws {
        let receiver = try await OTLPReceiver.start()
        defer { receiver.stop() }
        let cluster = try await ServingCluster.start()
        // An endpoint, the receiver's, but OTEL_SDK_DISABLED: no tracer, nothing exported (a tracer would export the
        // request's spans at the latest when the worker stops, before it exits).
        let worker = try await cluster.startWorker(
            [],
            environment: [
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SDK_DISABLED": "true",
            ])
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let (status, responses) = try await cluster.call([
            ["id": "plain", "value": ["text": "a"], "headers": ["traceparent": traceparent]]
        ])
        #expect(status == 0)
        #expect((responses.first?["headers"] as? [String: String])?["traceparent"] == traceparent)
        let started = try #require(try await cluster.lineageEvents().first { $0["type"] as? String == "run_started" })
        #expect(started["trace"] == nil)
        #expect(started["traceparent"] as? String == traceparent)
        #expect(await worker.stop() == 0)
        #expect(!worker.process.standardError.contains("traces over OTLP"))
        #expect(receiver.spans.isEmpty)
        await cluster.stop()
    }
}
