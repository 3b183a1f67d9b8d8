import Pipelines

/// The benchmark pipeline of docs/benchmarks.md (it serves the referee's requests): tokenize `text`, count the tokens,
/// build `{tokens, first, last}`.
public enum TextStats {
    public struct Request: Codable, Sendable, Hashable {
        public var text: String

        public init(text: String) {
            self.text = text
        }
    }

    public struct Summary: Codable, Sendable, Hashable {
        public var tokens: Int
        public var first: String?
        public var last: String?

        public init(tokens: Int, first: String?, last: String?) {
            self.tokens = tokens
            self.first = first
            self.last = last
        }
    }

    /// Splits on ASCII whitespace (space, tab, line feed, vertical tab, form feed, carriage return), as the
    /// referee's Python worker's `str.split()` does for ASCII text. Scanning the UTF-8 bytes in place avoids a
    /// Unicode property look-up per character and the string index checks of `split`.
    public static let tokenize = Step("tokenize") { (request: Request) in
        var text = request.text
        return text.withUTF8 { bytes in
            // Counted first, so that the array is allocated once rather than grown.
            var tokens: [String] = []
            tokens.reserveCapacity(tokenRanges(bytes) { _ in })
            tokenRanges(bytes) { range in
                tokens.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self))
            }
            return tokens
        }
    }

    /// Calls `body` with the range of each token of `bytes`, in order; returns how many there were.
    @discardableResult
    private static func tokenRanges(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (Range<Int>) -> Void) -> Int {
        var count = 0
        var start = 0
        for index in 0...bytes.count {
            guard index == bytes.count || bytes[index] == 0x20 || (0x09...0x0D).contains(bytes[index]) else {
                continue
            }
            if index > start {
                body(start..<index)
                count += 1
            }
            start = index + 1
        }
        return count
    }

    /// The number of tokens, also attached to the step run as metadata.
    public static let count = Step("count") { (tokens: [String]) in
        RunContext.current?.addMetadata(["tokens": .int(Int64(tokens.count))])
        return tokens.count
    }

    public static let summarize = Step("summarize") { (tokens: [String], count: Int) in
        Summary(tokens: count, first: tokens.first, last: tokens.last)
    }

    /// The pipeline; its capture comes from outside (the default is BATCH).
    public static let pipeline = Pipeline("text-stats") { (request: Request) in
        let tokens = try await tokenize(request)
        return try await summarize(tokens, count(tokens))
    }
}

/// The example pipelines, by name: what `sluice` serves when no other pipelines are registered.
public enum ExamplePipelines {
    public static let all: [AnyPipeline] = [
        AnyPipeline(TextStats.pipeline), AnyPipeline(Digits.pipeline), AnyPipeline(Digits.unbatched),
    ]
}
