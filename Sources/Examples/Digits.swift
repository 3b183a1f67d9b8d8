import CoreMetrics
import Foundation
import Pipelines

/// Real inference: handwritten digits (8×8 images, pixels 0…16) classified by a multinomial logistic regression
/// trained with scikit-learn (`Examples/digits/train.py`; the weights are `Resources/digits-model.json`, embedded in
/// the binary). Steps: `validate → normalize → predict → explain`, where `explain` takes the normalized image and the
/// prediction (fan-in), and `predict` is batched: concurrent runs share one matrix-matrix product.
public enum Digits {
    /// An image: 64 pixel intensities, row by row, each 0…16.
    public struct Image: Codable, Sendable, Hashable {
        public var pixels: [Double]

        public init(pixels: [Double]) {
            self.pixels = pixels
        }
    }

    public struct Prediction: Codable, Sendable, Hashable {
        public var digit: Int
        public var probability: Double
        public var probabilities: [Double]
    }

    /// One pixel's share of the predicted class's score.
    public struct Contribution: Codable, Sendable, Hashable {
        public var pixel: Int
        public var weight: Double
    }

    public struct Answer: Codable, Sendable, Hashable {
        public var digit: Int
        public var probability: Double
        public var probabilities: [Double]
        /// The five pixels that pushed hardest towards the answer.
        public var evidence: [Contribution]
    }

    /// An image that is not 64 values in 0…16: the request's fault, so `invalid_input`.
    public struct InvalidImage: CodedError, CustomStringConvertible {
        public let description: String
        public var code: String { "invalid_input" }
    }

    /// A model file that does not have the shape `train.py` writes.
    struct ModelFileError: Error, CustomStringConvertible {
        let description: String
    }

    /// The trained weights.
    public struct Model: Sendable {
        public let classes: [Int]
        public let weights: [[Double]]
        public let biases: [Double]
        /// Accuracy on the 20% of the data set held out from training.
        public let accuracy: Double
        /// `weights` as one row-major matrix, classes × pixels.
        private let matrix: [Double]

        /// The model committed with the examples.
        public static let bundled: Model = {
            do {
                return try Model(json: PackageResources.digits_model_json)
            } catch {
                preconditionFailure("the bundled digits model does not parse: \(error)")
            }
        }()

        /// Reads the model file that `Examples/digits/train.py` writes.
        init(json: [UInt8]) throws {
            let tree = try JSONValue(parsing: json)
            func number(_ value: JSONValue) throws -> Double {
                switch value {
                case .double(let number): return number
                case .int(let number): return Double(number)
                default: throw ModelFileError(description: "the model file has \(value) where a number belongs")
                }
            }
            func numbers(_ value: JSONValue?) throws -> [Double] {
                guard case .array(let elements)? = value else {
                    throw ModelFileError(description: "the model file lacks an array")
                }
                return try elements.map(number)
            }
            guard case .array(let rows)? = tree["weights"], let accuracy = tree["accuracy"] else {
                throw ModelFileError(description: "the model file lacks weights or accuracy")
            }
            classes = try numbers(tree["classes"]).map { Int($0) }
            weights = try rows.map { try numbers($0) }
            biases = try numbers(tree["biases"])
            self.accuracy = try number(accuracy)
            matrix = weights.flatMap { $0 }
            guard classes.count == weights.count, classes.count == biases.count, weights.allSatisfy({ $0.count == 64 })
            else { throw ModelFileError(description: "the model file's shapes do not match 64 pixels") }
        }

        /// The predictions for a batch of normalized images (64 values in 0…1 each): one matrix-matrix product of the
        /// images and the weights, plus the biases, then a softmax per image.
        /// - Throws: ``InvalidImage`` when an image does not have 64 values.
        public func predict(_ images: [[Double]]) throws -> [Prediction] {
            let pixels = 64
            if let bad = images.first(where: { $0.count != pixels }) {
                throw InvalidImage(description: "an image has 64 pixels, this one \(bad.count)")
            }
            // The images as one row-major matrix, images × pixels, beside the weights' classes × pixels.
            let batch = images.flatMap { $0 }
            var scores = [Double](repeating: 0, count: images.count * classes.count)
            batch.withUnsafeBufferPointer { batch in
                matrix.withUnsafeBufferPointer { matrix in
                    for image in images.indices {
                        for row in classes.indices {
                            // Summed in pixel order from the bias, as scikit-learn's probabilities were checked.
                            var score = biases[row]
                            for pixel in 0..<pixels {
                                score += matrix[row * pixels + pixel] * batch[image * pixels + pixel]
                            }
                            scores[image * classes.count + row] = score
                        }
                    }
                }
            }
            return images.indices.map { image in
                let row = scores[(image * classes.count)..<((image + 1) * classes.count)]
                let top = row.max() ?? 0
                let exponentials = row.map { exp($0 - top) }
                let total = exponentials.reduce(0, +)
                let probabilities = exponentials.map { $0 / total }
                let best = probabilities.indices.max { probabilities[$0] < probabilities[$1] } ?? 0
                return Prediction(digit: classes[best], probability: probabilities[best], probabilities: probabilities)
            }
        }
    }

    public static let validate = Step("validate") { (image: Image) in
        guard image.pixels.count == 64 else {
            throw InvalidImage(description: "an image has 64 pixels, this one \(image.pixels.count)")
        }
        if let bad = image.pixels.firstIndex(where: { !($0 >= 0 && $0 <= 16) }) {
            throw InvalidImage(description: "pixel \(bad) is \(image.pixels[bad]), outside 0...16")
        }
        return image
    }

    /// Scales pixels to 0…1, as the model was trained.
    public static let normalize = Step("normalize") { (image: Image) in image.pixels.map { $0 / 16 } }

    /// `digits_predictions_total{digit}`: predictions per digit, made when first used (after the process bootstrapped
    /// swift-metrics).
    private static let predictions: [Int: Counter] = Dictionary(
        uniqueKeysWithValues: Model.bundled.classes.map {
            ($0, Counter(label: "digits_predictions_total", dimensions: [("digit", "\($0)")]))
        })

    /// How `predict` gathers the images of concurrent runs: up to 64 in one product, the first waiting at most 1 ms.
    public static let batching = BatchPolicy(maxSize: 64, maxWait: .milliseconds(1))

    /// The model on a batch of images, the predictions of concurrent runs gathered into one matrix-matrix product.
    public static let predict = Step("predict", version: 1, batch: batching) { (images: [[Double]]) in
        let batch = try Model.bundled.predict(images)
        // A step's own metric, through swift-metrics: `sluice worker` exports it beside its own on GET /metrics.
        for prediction in batch { predictions[prediction.digit]?.increment() }
        return batch
    }

    /// The same model on one image at a time: what `digits-unbatched` calls, to compare with batching.
    public static let predictOne = Step("predict", version: 1) { (pixels: [Double]) in
        let prediction = try Model.bundled.predict([pixels])[0]
        predictions[prediction.digit]?.increment()
        return prediction
    }

    public static let explain = Step("explain") { (pixels: [Double], prediction: Prediction) in
        let model = Model.bundled
        let row = model.weights[model.classes.firstIndex(of: prediction.digit) ?? 0]
        let evidence = zip(row, pixels).enumerated().map {
            Contribution(pixel: $0.offset, weight: $0.element.0 * $0.element.1)
        }
        .sorted { $0.weight > $1.weight }.prefix(5)
        return Answer(
            digit: prediction.digit, probability: prediction.probability, probabilities: prediction.probabilities,
            evidence: Array(evidence))
    }

    public static let pipeline = Pipeline("digits") { (image: Image) in
        let pixels = try await normalize(validate(image))
        RunContext.current?.addRunMetadata(["model_accuracy": .double(Model.bundled.accuracy)])
        return try await explain(pixels, predict(pixels))
    }

    /// `digits` with `predict` called on one image at a time: the baseline of the batching benchmark.
    public static let unbatched = Pipeline("digits-unbatched") { (image: Image) in
        let pixels = try await normalize(validate(image))
        RunContext.current?.addRunMetadata(["model_accuracy": .double(Model.bundled.accuracy)])
        return try await explain(pixels, predictOne(pixels))
    }
}
