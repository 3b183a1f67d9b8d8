import ArgumentParser
import Foundation
import Pipelines

/// `--capture` and `--config`: how a command picks a pipeline's capture configuration (docs/capture.md).
struct CaptureOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "Capture mode or mapping (BATCH, REALTIME, OFF, CUSTOM, or YAML/JSON knobs); overrides every other source.")
    var capture: String?

    @Option(name: .long, help: "Run-config YAML file (its 'capture' key).")
    var config: String?

    /// Resolves the capture of `pipeline` from these options, its code and the environment.
    /// - Throws: a `ValidationError` naming the bad value or file.
    func resolve(for pipeline: AnyPipeline) throws -> ResolvedCapture {
        do {
            let runConfig = try config.map { path in
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw ValidationError("cannot read the run-config file '\(path)'")
                }
                return try RunConfiguration(yaml: text)
            }
            return try ResolvedCapture.resolve(
                commandLine: capture, runConfig: runConfig, code: pipeline.capture,
                environment: ProcessInfo.processInfo.environment)
        } catch let error as CaptureConfigurationError {
            guard let config else { throw ValidationError(error.message) }
            throw ValidationError(
                error.message.replacingOccurrences(of: "run-config YAML", with: "run-config YAML '\(config)'"))
        }
    }
}
