/// A pipeline with its types erased: JSON in, JSON out. What a registry of pipelines holds, so that the command line
/// and the worker can run a pipeline picked by name.
public struct AnyPipeline: Sendable {
    public let name: String
    /// The capture configuration the pipeline sets in code, if any.
    public let capture: CaptureConfiguration?
    /// The Swift names of the input and output types, for help and errors.
    public let inputType: String
    public let outputType: String
    /// The JSON Schema of the input (``InputSchema``): what callers may send. Found when asked, not when the pipeline
    /// is registered: the probe runs the input type's `init(from:)`.
    public var inputSchema: JSONValue { schemaOfInput() }
    @usableFromInline
    let schemaOfInput: @Sendable () -> JSONValue
    @usableFromInline
    let runJSON: @Sendable (_ input: [UInt8], PipelineRunner, RunOptions) async -> RunResult<[UInt8]>

    /// Inlinable, so that decoding, running and encoding are compiled for the pipeline's own types where the pipeline
    /// is declared (not through generic metadata at run time).
    @inlinable
    public init<Input, Output>(_ pipeline: Pipeline<Input, Output>) {
        name = pipeline.name
        capture = pipeline.capture
        inputType = String(describing: Input.self)
        outputType = String(describing: Output.self)
        schemaOfInput = { InputSchema.of(Input.self) }
        runJSON = { bytes, runner, options in
            let input: Input
            do {
                input = try JSONValueDecoder.decode(Input.self, from: bytes)
            } catch {
                return RunResult(
                    runID: nil, capture: options.capture ?? pipeline.capture ?? .batch,
                    outcome: .failure(ErrorDetail(code: "invalid_input", message: Self.describe(error, Input.self))),
                    durationMicros: 0)
            }
            let result = await runner.run(pipeline, input, options: options)
            return result.mapOutput { output in
                do {
                    return .success(try CanonicalJSON.encode(output))
                } catch {
                    return .failure(ErrorDetail(code: "internal", message: "the output cannot be encoded: \(error)"))
                }
            }
        }
    }

    /// Decodes `input` as the pipeline's input type and runs it; the output is its canonical JSON.
    ///
    /// Input that is not JSON, or not of the input type, is not run: the result's error is `invalid_input`, naming
    /// the path of the offending field. An output that cannot be written as JSON fails as `internal`.
    public func run(
        json input: [UInt8], runner: PipelineRunner, options: RunOptions = RunOptions()
    ) async
        -> RunResult<[UInt8]>
    {
        await runJSON(input, runner, options)
    }

    /// A decoding error in one line: where in the input and what was wrong.
    @usableFromInline
    static func describe(_ error: any Error, _ type: Any.Type) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.isEmpty
                ? "the input"
                : "'" + codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") + "'"
        }
        if let error = error as? JSONParseError { return "the input is not valid JSON (\(error))" }
        guard let error = error as? DecodingError else { return "the input is not \(type): \(error)" }
        switch error {
        case .typeMismatch(let expected, let context):
            return "\(path(context.codingPath)) is not of type \(expected)"
        case .valueNotFound(let expected, let context):
            return "\(path(context.codingPath)) is null, expected \(expected)"
        case .keyNotFound(let key, let context):
            return "\(path(context.codingPath + [key])) is missing"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty
                ? "the input is not valid JSON" : "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "the input is not \(type): \(error)"
        }
    }
}

extension RunResult {
    /// The same result with the output transformed; a transform that fails turns the outcome into that failure.
    @inlinable
    public func mapOutput<Other>(_ transform: (Output) -> Result<Other, ErrorDetail>) -> RunResult<Other> {
        RunResult<Other>(
            runID: runID, capture: capture, outcome: outcome.flatMap(transform), durationMicros: durationMicros)
    }
}
