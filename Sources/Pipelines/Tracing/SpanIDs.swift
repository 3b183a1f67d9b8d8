import Tracing

/// The W3C ids of a span, as the lineage records them: 32 and 16 lowercase hexadecimal digits.
public struct SpanIDs: Sendable, Hashable {
    public var traceID: String
    public var spanID: String

    public init(traceID: String, spanID: String) {
        self.traceID = traceID
        self.spanID = spanID
    }

    /// The ids in a `traceparent` header value a tracer wrote (`00-<trace id>-<span id>-<flags>`), or `nil` when it
    /// is not of that form.
    public init?(traceparent: String) {
        let parts = traceparent.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[1].utf8.count == 32, parts[2].utf8.count == 16 else { return nil }
        self.init(traceID: String(parts[1]), spanID: String(parts[2]))
    }

    /// The ids of the span `context` carries, read from the `traceparent` that `tracer` propagates for it; `nil`
    /// when the context carries no span or the tracer does not propagate W3C trace context.
    public init?(of context: ServiceContext, tracer: any Tracer) {
        guard let traceparent = W3CTraceparent.of(context, tracer: tracer) else { return nil }
        self.init(traceparent: traceparent)
    }
}

/// The W3C `traceparent` header that a tracer writes for a context: what the worker echoes on a response.
public enum W3CTraceparent {
    public static let header = "traceparent"

    /// The `traceparent` value `tracer` injects for `context`, or `nil` when it injects none.
    public static func of(_ context: ServiceContext, tracer: any Tracer) -> String? {
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: DictionaryInjector())
        return carrier[header]
    }

    private struct DictionaryInjector: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
            carrier[key] = value
        }
    }
}
