import Logging
import OTel
import ServiceLifecycle
import Tracing

/// The process's traces: swift-distributed-tracing bootstrapped once with swift-otel's tracer, which exports spans
/// over OTLP/HTTP, configured the standard way (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`,
/// `OTEL_TRACES_SAMPLER`, ...: docs/operations.md, "Traces"). Off unless the environment asks for it.
enum TracingExport {
    /// Whether `environment` asks for traces: an OTLP endpoint (shared or for traces) or a traces exporter other than
    /// `none`, and the SDK not disabled.
    static func isConfigured(_ environment: [String: String]) -> Bool {
        if environment["OTEL_SDK_DISABLED"]?.lowercased() == "true" { return false }
        if let exporter = environment["OTEL_TRACES_EXPORTER"] { return exporter.lowercased() != "none" }
        return environment["OTEL_EXPORTER_OTLP_ENDPOINT"] != nil
            || environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] != nil
    }

    /// When the environment asks for traces: bootstraps the tracer and returns it with the service that exports its
    /// spans (run it before the services that trace, so that it stops after them and exports their last spans).
    /// - Parameter serviceName: `service.name` unless `OTEL_SERVICE_NAME` sets it.
    /// - Throws: an error naming the setting that swift-otel refuses.
    static func bootstrap(
        serviceName: String, environment: [String: String], logger: Logger
    ) throws -> (tracer: any Tracer, service: any Service)? {
        guard isConfigured(environment) else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        configuration.diagnosticLogger = .custom(logger)
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        let (tracer, service) = try OTel.makeTracingBackend(configuration: configuration)
        InstrumentationSystem.bootstrap(tracer)
        logger.info(
            "traces over OTLP (\(environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? environment["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "the default endpoint"))"
        )
        return (tracer, service)
    }
}
