import Examples
import Foundation
import Pipelines
import Testing

@Suite("The example pipelines")
struct ExamplesTests {
    struct Sample: Decodable {
        var pixels: [Double]
        var label: Int
        var probabilities: [Double]
    }

    static let samples: [Sample] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Examples/digits/samples.json")
        return (try? JSONDecoder().decode([Sample].self, from: Data(contentsOf: url))) ?? []
    }()

    @Test func digitsReproducesScikitLearnsProbabilities() async throws {
        try #require(Self.samples.count == 20)
        var correct = 0
        for sample in Self.samples {
            let answer = try await Digits.pipeline.run(Digits.Image(pixels: sample.pixels))
            for (ours, theirs) in zip(answer.probabilities, sample.probabilities) { #expect(abs(ours - theirs) < 1e-9) }
            #expect(answer.probability == answer.probabilities.max())
            #expect(answer.evidence.count == 5)
            if answer.digit == sample.label { correct += 1 }
        }
        #expect(correct >= 18, "\(correct) of 20")
        #expect(Digits.Model.bundled.accuracy > 0.9)
    }

    /// Concurrent runs share `predict`'s batches and each gets its own image's answer: the unbatched pipeline's, with
    /// the batch's size in its step run's metadata.
    @Test func batchedDigitsAnswersEachRunAsUnbatchedDigitsDoes() async throws {
        try #require(Self.samples.count == 20)
        let tracker = RecordingTracker()
        let runner = PipelineRunner(tracker: tracker)
        let answers = await withTaskGroup(of: (Int, Result<Digits.Answer, ErrorDetail>).self) { group in
            for (index, sample) in Self.samples.enumerated() {
                group.addTask {
                    let result = await runner.run(
                        Digits.pipeline, Digits.Image(pixels: sample.pixels),
                        options: RunOptions(capture: .realtime, runID: "d\(index)"))
                    return (index, result.outcome)
                }
            }
            var answers: [Int: Result<Digits.Answer, ErrorDetail>] = [:]
            for await (index, outcome) in group { answers[index] = outcome }
            return answers
        }
        var batchSizes: [Int] = []
        for (index, sample) in Self.samples.enumerated() {
            let unbatched = try await Digits.unbatched.run(Digits.Image(pixels: sample.pixels))
            #expect(try answers[index]?.get() == unbatched)
            for event in tracker.events(ofRun: "d\(index)") {
                if case .metadata("predict#1", let values) = event.body, case .int(let size)? = values["batch_size"] {
                    batchSizes.append(Int(size))
                }
            }
        }
        #expect(batchSizes.count == 20 && batchSizes.allSatisfy { (1...20).contains($0) }, "\(batchSizes)")
    }

    @Test func digitsRejectsImagesThatAreNotImages() async throws {
        let tracker = RecordingTracker()
        let runner = PipelineRunner(tracker: tracker)
        for (pixels, words) in [([1.0, 2.0], "64 pixels"), (Array(repeating: 17.0, count: 64), "outside 0...16")] {
            let result = await runner.run(
                Digits.pipeline, Digits.Image(pixels: pixels), options: RunOptions(capture: .batch))
            guard case .failure(let error) = result.outcome else {
                Issue.record("accepted \(pixels.count) pixels")
                continue
            }
            #expect(error.code == "invalid_input" && error.step == "validate" && error.message.contains(words))
        }
    }

    @Test func digitsRecordsAFanInDAG() async throws {
        let tracker = RecordingTracker()
        let result = await PipelineRunner(tracker: tracker).run(
            Digits.pipeline, Digits.Image(pixels: Self.samples[0].pixels), options: RunOptions(capture: .batch))
        _ = try result.outcome.get()
        var edges: Set<String> = []
        for event in tracker.events {
            if case .stepStarted(let step, _, let inputs) = event.body {
                for input in inputs { edges.insert("\(input.producedBy ?? "?") -> \(step.id)") }
            }
        }
        #expect(
            edges == [
                "input -> validate#1", "validate#1/out -> normalize#1", "normalize#1/out -> predict#1",
                "normalize#1/out -> explain#1", "predict#1/out -> explain#1",
            ])
    }

    @Test func textStatsSplitsOnWhitespace() async throws {
        let summary = try await TextStats.pipeline.run(TextStats.Request(text: " the\tquick\nbrown  fox "))
        #expect(summary == TextStats.Summary(tokens: 4, first: "the", last: "fox"))
        #expect(
            try await TextStats.pipeline.run(TextStats.Request(text: ""))
                == TextStats.Summary(tokens: 0, first: nil, last: nil))
        #expect(
            try await TextStats.tokenize(TextStats.Request(text: "héllo\r\nwörld\u{0B}日本\u{0C}x")) == [
                "héllo", "wörld", "日本", "x",
            ])
        #expect(try await TextStats.tokenize(TextStats.Request(text: "one")) == ["one"])
    }
}
