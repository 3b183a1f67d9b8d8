import ArgumentParser
import Examples
import Pipelines
import Synchronization

/// The pipelines this `sluice` executable serves, by name: the examples, or what a user's executable registered
/// through ``SluiceCommand/start(pipelines:arguments:)``.
enum PipelineRegistry {
    private static let registered = Mutex<[AnyPipeline]>(ExamplePipelines.all)

    static var pipelines: [AnyPipeline] { registered.withLock { $0 } }

    static func register(_ pipelines: [AnyPipeline]) {
        registered.withLock { $0 = pipelines }
    }

    /// The pipeline called `name`.
    /// - Throws: a `ValidationError` naming it and the pipelines there are.
    static func pipeline(named name: String) throws -> AnyPipeline {
        let pipelines = pipelines
        guard let pipeline = pipelines.first(where: { $0.name == name }) else {
            let known = pipelines.map(\.name).joined(separator: ", ")
            throw ValidationError("no pipeline named '\(name)' (this executable has: \(known))")
        }
        return pipeline
    }
}
