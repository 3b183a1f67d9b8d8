import Pipelines
import Testing

// The README's tour, as written there: if this stops compiling or passing, the README is wrong.
private struct Review: Codable, Sendable { var text: String }
private struct Verdict: Codable, Sendable {
    var label: String
    var score: Double
}

@Suite("The README's tour")
struct ReadmeExampleTests {
    @Test func theTourRunsAsWritten() async throws {
        let tokenize = Step("tokenize") { (review: Review) in review.text.split(separator: " ").map(String.init) }
        let score = Step("score", version: 2, cache: true, retry: .attempts(3)) { (tokens: [String]) in
            RunContext.current?.log("scoring \(tokens.count) tokens")
            return Double(tokens.filter { $0 == "good" }.count) / Double(max(tokens.count, 1))
        }
        let label = Step("label") { (score: Double) in
            Verdict(label: score > 0.2 ? "positive" : "negative", score: score)
        }

        let sentiment = Pipeline("sentiment", capture: .realtime) { (review: Review) in
            let tokens = try await tokenize(review)
            return try await label(score(tokens))
        }

        let verdict = try await sentiment.run(Review(text: "a good day"))
        #expect(verdict.label == "positive")

        let tracker = RecordingTracker()
        let result = await PipelineRunner(tracker: tracker).run(sentiment, Review(text: "a good day"))
        #expect(try result.outcome.get().label == "positive")
        #expect(result.capture == .realtime)
        #expect(tracker.events.first?.type == .runStarted)
        #expect(tracker.events.contains { $0.type == .log })
    }
}
