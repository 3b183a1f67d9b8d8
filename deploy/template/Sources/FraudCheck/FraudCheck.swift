import Foundation
import Pipelines

/// Scores a card payment: validate it, turn it into features, score them with a logistic model, decide.
enum FraudCheck {
    struct Payment: Codable, Sendable {
        var amount: Double
        var currency: String
        var country: String
        var cardPresent: Bool
        /// Hour of day, 0-23, in the merchant's time zone.
        var hour: Int

        enum CodingKeys: String, CodingKey {
            case amount, currency, country, hour
            case cardPresent = "card_present"
        }
    }

    struct Verdict: Codable, Sendable {
        var score: Double
        /// `approve`, `review` or `decline`.
        var decision: String
    }

    /// A payment that cannot be scored: the response carries `invalid_input` and this message.
    struct InvalidPayment: CodedError, CustomStringConvertible {
        var description: String
        var code: String { "invalid_input" }
    }

    /// The model: weights of the features below, and the score above which a payment is reviewed or declined.
    static let weights = [-3.2, 0.9, 1.4, 1.1, 0.8]
    static let reviewAbove = 0.5
    static let declineAbove = 0.85
    static let homeCountries: Set<String> = ["DE", "FR", "NL"]

    static let validate = Step("validate") { (payment: Payment) in
        guard payment.amount > 0, payment.amount.isFinite else {
            throw InvalidPayment(description: "amount must be a positive number, not \(payment.amount)")
        }
        guard (0...23).contains(payment.hour) else {
            throw InvalidPayment(description: "hour must be 0-23, not \(payment.hour)")
        }
        guard payment.currency.count == 3 else {
            throw InvalidPayment(description: "currency must be an ISO 4217 code, not '\(payment.currency)'")
        }
        return payment
    }

    /// Bias, log-amount, card not present, abroad, night time.
    static let features = Step("features", version: 1) { (payment: Payment) in
        [
            1, log10(payment.amount + 1) - 2, payment.cardPresent ? 0 : 1,
            homeCountries.contains(payment.country.uppercased()) ? 0 : 1, (1...5).contains(payment.hour) ? 1 : 0,
        ]
    }

    static let score = Step("score", version: 1) { (features: [Double]) in
        let z = zip(weights, features).reduce(0) { $0 + $1.0 * $1.1 }
        let probability = 1 / (1 + exp(-z))
        RunContext.current?.addMetadata(["z": .double(z)])
        return (probability * 1000).rounded() / 1000
    }

    static let decide = Step("decide") { (score: Double) in
        Verdict(
            score: score, decision: score > declineAbove ? "decline" : score > reviewAbove ? "review" : "approve")
    }

    static let pipeline = Pipeline("fraud-check") { (payment: Payment) in
        let valid = try await validate(payment)
        return try await decide(score(features(valid)))
    }
}
