import Foundation
import Yams

/// A capture value that is not understood, naming the value and where it came from. Never a silent default.
public struct CaptureConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Where a pipeline's capture configuration came from, strongest first.
public enum CaptureSource: String, Sendable, Hashable {
    /// `sluice worker --capture`: overrides every other source.
    case commandLine = "--capture"
    case runConfig = "run-config YAML"
    case code = "the pipeline's definition"
    case captureModeVariable = "SLUICE_CAPTURE_MODE"
    case servingDefaultVariable = "SLUICE_SERVING_CAPTURE_DEFAULT"
    case fallback = "the default (BATCH)"
}

/// The capture configuration a pipeline runs with and the source it came from.
public struct ResolvedCapture: Sendable, Hashable {
    public var configuration: CaptureConfiguration
    public var source: CaptureSource

    /// Resolves a pipeline's capture: the strongest source that sets it wins, whole.
    ///
    /// Order: `commandLine`, `runConfig`, `code`, `SLUICE_CAPTURE_MODE`, `SLUICE_SERVING_CAPTURE_DEFAULT`, then BATCH.
    /// An environment variable that is set but empty counts as unset.
    /// - Throws: ``CaptureConfigurationError`` naming the first value (of any source given) that is not understood.
    public static func resolve(
        commandLine: String? = nil, runConfig: RunConfiguration? = nil, code: CaptureConfiguration? = nil,
        environment: [String: String]
    ) throws -> ResolvedCapture {
        // Every text source is parsed, so a bad value is an error even when a stronger source wins.
        let fromCommandLine = try commandLine.map { try CaptureConfiguration.parse($0, source: .commandLine) }
        let fromMode = try environment[CaptureSource.captureModeVariable.rawValue].flatMap(nonEmpty).map {
            try CaptureConfiguration.parse($0, source: .captureModeVariable)
        }
        let fromServingDefault = try environment[CaptureSource.servingDefaultVariable.rawValue].flatMap(nonEmpty).map {
            try CaptureConfiguration.parse($0, source: .servingDefaultVariable)
        }
        let candidates: [(CaptureConfiguration?, CaptureSource)] = [
            (fromCommandLine, .commandLine), (runConfig?.capture, .runConfig), (code, .code),
            (fromMode, .captureModeVariable), (fromServingDefault, .servingDefaultVariable),
        ]
        for case (let configuration?, let source) in candidates {
            return ResolvedCapture(configuration: configuration, source: source)
        }
        return ResolvedCapture(configuration: .batch, source: .fallback)
    }

    private static func nonEmpty(_ text: String) -> String? {
        text.allSatisfy(\.isWhitespace) ? nil : text
    }
}

/// The run-config YAML: settings of a pipeline kept outside its code. Today it holds `capture` (a mode name or a
/// mapping of knobs).
public struct RunConfiguration: Sendable, Hashable {
    public var capture: CaptureConfiguration?

    public init(capture: CaptureConfiguration? = nil) {
        self.capture = capture
    }

    /// Parses a run-config YAML document.
    /// - Throws: ``CaptureConfigurationError`` for YAML that does not parse, a top-level key other than `capture`, or
    ///   a capture value that is not understood.
    public init(yaml: String) throws {
        let document: JSONValue
        do {
            document = try JSONValue(yamlText: yaml)
        } catch let error as CaptureConfigurationError {
            throw error
        } catch {
            throw CaptureConfigurationError(message: "run-config YAML does not parse: \(error)")
        }
        switch document {
        case .null:
            capture = nil
        case .object(let members):
            for key in members.keys.sorted() where key != "capture" {
                throw CaptureConfigurationError(
                    message: "run-config YAML: unknown key '\(key)' (known: capture)")
            }
            capture = try members["capture"].map { try CaptureConfiguration.parse($0, source: .runConfig) }
        default:
            throw CaptureConfigurationError(message: "run-config YAML must be a mapping with the key capture")
        }
    }
}

// MARK: - Parsing

extension CaptureConfiguration {
    /// Parses a capture value given as text: a mode name (`REALTIME`) or a YAML or JSON mapping
    /// (`{"mode": "REALTIME", "runs": "off"}`).
    /// - Throws: ``CaptureConfigurationError`` naming the value and `source`.
    public static func parse(_ text: String, source: CaptureSource) throws -> CaptureConfiguration {
        let value: JSONValue
        do {
            value = try JSONValue(yamlText: text)
        } catch {
            throw CaptureConfigurationError(
                message: "capture '\(text)' from \(source.rawValue) does not parse: \(error)")
        }
        return try parse(value, source: source)
    }

    /// The name that stands for memory-only (`REALTIME` with `runs: off`); it is also the label of its runs.
    private static let memoryOnlyName = "MEMORY"

    /// Parses a capture value: a mode name (or `MEMORY` for memory-only), or a mapping of knobs over its mode's
    /// defaults (CUSTOM when the mapping names no mode).
    /// - Throws: ``CaptureConfigurationError`` naming the offending key or value and `source`.
    public static func parse(_ value: JSONValue, source: CaptureSource) throws -> CaptureConfiguration {
        let from = source.rawValue
        switch value {
        case .string(let name) where name.uppercased() == memoryOnlyName:
            return .memoryOnly
        case .string(let name):
            return CaptureConfiguration(mode: try mode(name, from))
        case .object(let members):
            for key in members.keys.sorted() where !knobNames.contains(key) {
                throw CaptureConfigurationError(
                    message: "capture key '\(key)' from \(from) is not one of \(knobNames.joined(separator: ", "))")
            }
            var configuration = CaptureConfiguration(mode: try members["mode"].map { try mode($0, from) } ?? .custom)
            if let runs = members["runs"] {
                switch runs {
                case .string(let text) where text.lowercased() == CaptureConfiguration.Runs.errors.rawValue:
                    configuration.runs = .errors
                default:
                    do {
                        configuration.runs = try flag(runs, "runs", from) ? .on : .off
                    } catch {
                        throw CaptureConfigurationError(
                            message: "capture runs \(runs.display) from \(from) is not one of on, off, errors "
                                + "(or true, false, yes, no)")
                    }
                }
            }
            if let persistence = members["persistence"] {
                configuration.persistence = try choice(persistence, "persistence", from)
            }
            if let wait = members["wait_for_tracking"] {
                configuration.waitForTracking = try flag(wait, "wait_for_tracking", from)
            }
            if let flush = members["flush_on_step_end"] {
                configuration.flushOnStepEnd = try flag(flush, "flush_on_step_end", from)
            }
            if let artifacts = members["artifacts"] { configuration.artifacts = try flag(artifacts, "artifacts", from) }
            if let metadata = members["metadata"] { configuration.metadata = try flag(metadata, "metadata", from) }
            if let logs = members["logs"] {
                switch logs {
                case .bool(let on): configuration.logs = on ? .all : .off
                default: configuration.logs = try choice(logs, "logs", from)
                }
            }
            if let caching = members["caching"] { configuration.caching = try flag(caching, "caching", from) }
            if let limit = members["inline_limit"] {
                guard case .int(let bytes) = limit, bytes >= 0, bytes <= Int64(Int32.max) else {
                    throw CaptureConfigurationError(
                        message: "capture inline_limit \(limit.display) from \(from) is not a byte count >= 0")
                }
                configuration.inlineLimit = Int(bytes)
            }
            if let rate = members["sample_rate"] {
                let fraction: Double? =
                    switch rate {
                    case .double(let number): number
                    case .int(let number): Double(number)
                    default: nil
                    }
                guard let fraction, (0...1).contains(fraction) else {
                    throw CaptureConfigurationError(
                        message: "capture sample_rate \(rate.display) from \(from) is not a number from 0 to 1")
                }
                configuration.sampleRate = fraction
            }
            return configuration
        default:
            throw CaptureConfigurationError(
                message: "capture \(value.display) from \(from) is neither a mode name nor a mapping")
        }
    }

    private static func mode(_ value: JSONValue, _ from: String) throws -> Mode {
        guard case .string(let name) = value else {
            throw CaptureConfigurationError(message: "capture mode \(value.display) from \(from) is not a name")
        }
        return try mode(name, from)
    }

    private static func mode(_ name: String, _ from: String) throws -> Mode {
        guard let mode = Mode(rawValue: name.uppercased()) else {
            throw CaptureConfigurationError(
                message: "capture mode '\(name)' from \(from) is not one of "
                    + Mode.allCases.map(\.rawValue).joined(separator: ", ")
                    + " (or \(memoryOnlyName) on its own for memory-only)")
        }
        return mode
    }

    /// A yes/no knob: a JSON boolean, or the text true/false/on/off/yes/no in any case.
    private static func flag(_ value: JSONValue, _ key: String, _ from: String) throws -> Bool {
        switch value {
        case .bool(let flag): return flag
        case .string(let text) where ["true", "on", "yes"].contains(text.lowercased()): return true
        case .string(let text) where ["false", "off", "no"].contains(text.lowercased()): return false
        default:
            throw CaptureConfigurationError(
                message: "capture \(key) \(value.display) from \(from) is not one of true, false, on, off, yes, no")
        }
    }

    private static func choice<Choice: RawRepresentable & CaseIterable>(
        _ value: JSONValue, _ key: String, _ from: String
    ) throws -> Choice where Choice.RawValue == String {
        guard case .string(let text) = value, let choice = Choice(rawValue: text.lowercased()) else {
            throw CaptureConfigurationError(
                message: "capture \(key) \(value.display) from \(from) is not one of "
                    + Choice.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return choice
    }
}

// MARK: - YAML values

extension JSONValue {
    /// Loads YAML (JSON is YAML too) without YAML 1.1's implicit booleans and timestamps, so that `capture: OFF`
    /// is the mode OFF and not `false`; yes/no knobs accept the words themselves (see `flag`).
    init(yamlText: String) throws {
        let resolver = Resolver.default.removing(.bool).removing(.timestamp)
        try self.init(yaml: Yams.load(yaml: yamlText, resolver))
    }

    /// The value Yams loaded (strings, numbers, booleans, sequences, mappings, null).
    /// - Throws: ``CaptureConfigurationError`` for a mapping key that is not text, or a value of another kind.
    init(yaml: Any?) throws {
        switch yaml {
        case nil, is NSNull: self = .null
        case let text as String: self = .string(text)
        case let flag as Bool: self = .bool(flag)
        case let number as Int: self = .int(Int64(number))
        case let number as Double: self = .double(number)
        case let elements as [Any]: self = .array(try elements.map { try JSONValue(yaml: $0) })
        case let members as [AnyHashable: Any]:
            var object: [String: JSONValue] = [:]
            for (key, member) in members {
                guard let name = key.base as? String else {
                    throw CaptureConfigurationError(message: "YAML mapping key \(key) is not text")
                }
                object[name] = try JSONValue(yaml: member)
            }
            self = .object(object)
        default:
            throw CaptureConfigurationError(message: "YAML value \(yaml!) is not text, a number, a flag or a map")
        }
    }

    /// The value as it would be written in JSON, for error messages.
    var display: String {
        var writer = JSONWriter()
        writer.value(self)
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}
