import CoreMetrics
import Foundation
import Pipelines

/// Real inference: handwritten digits (8×8 images, pixels 0…16) classified by a multinomial logistic regression
/// trained with scikit-learn (`Examples/digits/train.py`; the weights are `Resources/digits-model.json`, embedded in
/// the binary). Steps: `validate → normalize → predict → explain`, where `explain` takes the normalized image and the
/// prediction (fan-in).
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
            guard classes.count == weights.count, classes.count == biases.count, weights.allSatisfy({ $0.count == 64 })
            else { throw ModelFileError(description: "the model file's shapes do not match 64 pixels") }
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

    public static let predict = Step("predict", version: 1) { (pixels: [Double]) in
        let model = Model.bundled
        let scores = zip(model.weights, model.biases).map { row, bias in
            zip(row, pixels).reduce(bias) { $0 + $1.0 * $1.1 }
        }
        let top = scores.max() ?? 0
        let exponentials = scores.map { exp($0 - top) }
        let total = exponentials.reduce(0, +)
        let probabilities = exponentials.map { $0 / total }
        let best = probabilities.indices.max { probabilities[$0] < probabilities[$1] } ?? 0
        RunContext.current?.addMetadata(["model_accuracy": .double(model.accuracy)])
        // A step's own metric, through swift-metrics: `sluice worker` exports it beside its own on GET /metrics.
        predictions[model.classes[best]]?.increment()
        return Prediction(digit: model.classes[best], probability: probabilities[best], probabilities: probabilities)
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
        return try await explain(pixels, predict(pixels))
    }
}
