import ArgumentParser
import Foundation
import Logging
import Pipelines

/// `--log-level` and `--log-format`, for the commands that run for long (worker, materialize, broker): swift-log is
/// bootstrapped once from them, so that every `Logger` of the process (Sluice's, librdkafka's through Sluice, a step's
/// own) writes to standard error at that level and in that format.
struct LogOptions: ParsableArguments {
    enum Format: String, CaseIterable, ExpressibleByArgument {
        /// swift-log's line: `<time> <level> <label> : <metadata> <message>`.
        case text
        /// One JSON object per line (``JSONLogHandler``).
        case json
    }

    @Option(help: "trace, debug, info, notice, warning, error or critical (env SLUICE_LOG_LEVEL; default info).")
    var logLevel: Logger.Level?

    @Option(help: "text or json: one JSON object per line (env SLUICE_LOG_FORMAT; default text).")
    var logFormat: Format?

    /// Bootstraps swift-log: the flag, else the environment variable, else the default.
    /// - Throws: a `ValidationError` naming an environment variable's bad value.
    func bootstrap() throws {
        let environment = ProcessInfo.processInfo.environment
        let level = try logLevel ?? Self.parse(Logger.Level.self, environment, "SLUICE_LOG_LEVEL") ?? .info
        let format = try logFormat ?? Self.parse(Format.self, environment, "SLUICE_LOG_FORMAT") ?? .text
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                switch format {
                case .text: StreamLogHandler.standardError(label: label)
                case .json: JSONLogHandler(label: label)
                }
            handler.logLevel = level
            return handler
        }
    }

    private static func parse<Value: RawRepresentable<String> & CaseIterable>(
        _ type: Value.Type, _ environment: [String: String], _ name: String
    ) throws -> Value? {
        guard let text = environment[name] else { return nil }
        guard let value = Value(rawValue: text.lowercased()) else {
            throw ValidationError(
                "\(name)='\(text)' is not one of \(Value.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// A swift-log handler that writes one JSON object per line to standard error:
/// `{"ts": "<RFC 3339 UTC, microseconds>", "level", "logger": <label>, "message", <metadata members>...}`.
/// Metadata members come after the fixed ones, at the top level (`request_id`, `run_id`, `pipeline`, ...), so that a
/// log pipeline filters on them directly; a metadata key equal to a fixed one is written under `metadata.<key>`.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    private static let fixedKeys: Set<String> = ["ts", "level", "logger", "message"]

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        if let error = event.error { merged["error"] = .string("\(error)") }
        var out = JSONWriter(capacity: 256)
        out.object { out in
            out.field("ts", Timestamps.rfc3339(micros: Timestamps.wallMicros()))
            out.field("level", event.level.rawValue)
            out.field("logger", label)
            out.field("message", event.message.description)
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                out.key(named: Self.fixedKeys.contains(key) ? "metadata.\(key)" : key)
                Self.write(value, into: &out)
            }
        }
        var line = out.bytes
        line.append(UInt8(ascii: "\n"))
        line.withUnsafeBytes { bytes in FileHandle.standardError.write(Data(bytes)) }
    }

    static func write(_ value: Logger.MetadataValue, into out: inout JSONWriter) {
        switch value {
        case .string(let text): out.string(text)
        case .stringConvertible(let convertible): out.string(convertible.description)
        case .array(let values): out.array { list in for value in values { write(value, into: &list) } }
        case .dictionary(let members):
            out.object { out in
                for (key, value) in members.sorted(by: { $0.key < $1.key }) {
                    out.key(named: key)
                    write(value, into: &out)
                }
            }
        }
    }
}
